"""The registered networks: shapes, parameter counts, and that each one can learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.errors import ConfigError
from emovox.models.registry import available_networks, count_parameters, make_network

# (name, documented input shape, parameter ballpark (low, high) with 8 classes)
DOCUMENTED = [
    ("cnn1d_mfcc216", (216,), (340_000, 370_000)),
    ("cnn1d_deep", (216,), (1_200_000, 1_350_000)),
    ("cnn2d_mfcc", (216, 25), (54_000, 58_000)),
    ("lstm", (94, 40), (90_000, 105_000)),
    ("cnn_small_b", (40,), (4_000, 5_000)),
    ("cnn_small_c", (40,), (6_000, 7_000)),
    ("cnn_small_d", (40,), (85_000, 91_000)),
    ("mlp", (180,), (50_000, 60_000)),
]

# (name, small input shape, optimisation steps) for the learning test
LEARNING = [
    ("cnn1d_mfcc216", (48,), 8),
    ("cnn1d_deep", (24,), 8),
    ("cnn2d_mfcc", (32, 16), 12),
    ("lstm", (20, 8), 20),
    ("cnn_small_b", (40,), 20),
    ("cnn_small_c", (40,), 20),
    ("cnn_small_d", (40,), 20),
    ("mlp", (40,), 20),
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: much faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_class_sequences(shape: tuple[int, ...], n: int = 32, seed: int = 0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 oscillates faster and sits higher than class 0, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(shape[0]) / shape[0]
    freq = np.where(y == 1, 6.0, 2.0)[:, None]
    x = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (n, 1))) + 0.5 * y[:, None]
    if len(shape) == 2:
        x = x[:, :, None] * np.ones(shape[1])
    x = x + 0.3 * rng.standard_normal((n, *shape))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_registry_lists_every_network():
    # Heads over encoder frames (emovox.models.heads) register themselves too.
    assert set(available_networks()) >= {name for name, _, _ in DOCUMENTED}


@pytest.mark.parametrize(("name", "shape", "ballpark"), DOCUMENTED)
def test_forward_shape_and_parameter_count(name, shape, ballpark):
    net = make_network(name, n_classes=8, input_shape=shape)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(3, *shape))
    assert out.shape == (3, 8)
    assert torch.isfinite(out).all()
    low, high = ballpark
    assert low <= count_parameters(net) <= high


def test_exact_parameter_counts_of_the_published_sizes():
    counts = {name: count_parameters(make_network(name, 8, shape))
              for name, shape, _ in DOCUMENTED}
    assert counts["cnn2d_mfcc"] == 55_656  # ~56k on 25 MFCCs x 216 frames
    assert counts["cnn_small_b"] == 4_584
    assert counts["cnn_small_c"] == 6_632
    assert counts["cnn_small_d"] == 87_944


def test_vector_inputs_accept_a_trailing_channel_axis():
    net = make_network("cnn1d_mfcc216", 4, (216,)).eval()
    x = torch.randn(2, 216)
    with torch.no_grad():
        # Same values, not the same bits: the two layouts may take different CPU kernels
        # (differences of ~3e-8 seen on another CPU), so compare with float32 tolerances.
        torch.testing.assert_close(net(x), net(x.unsqueeze(-1)))


def test_dense_size_follows_input_shape():
    short = make_network("cnn1d_deep", 5, (40,))  # 40 -> 5 -> 1 after the two pools
    long = make_network("cnn1d_deep", 5, (216,))  # 216 -> 27 -> 4
    assert short.head.in_features == 64 * 1
    assert long.head.in_features == 64 * 4
    assert make_network("cnn1d_deep", 5, (3,))(torch.randn(2, 3)).shape == (2, 5)


def test_wrong_input_shape_is_a_clear_error():
    net = make_network("cnn_small_b", 4, (40,))
    with pytest.raises(ValueError, match="input_shape"):
        net(torch.randn(2, 39))


def test_bad_names_and_hyperparameters_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown network"):
        make_network("transformer", 4, (40,))
    with pytest.raises(ConfigError, match="no_such_param"):
        make_network("mlp", 4, (40,), no_such_param=3)
    with pytest.raises(ConfigError, match="too small"):
        make_network("cnn2d_mfcc", 4, (10, 10))
    with pytest.raises(ConfigError, match="n_classes"):
        make_network("mlp", 1, (40,))


def test_hyperparameters_are_keyword_arguments():
    net = make_network("cnn_small_b", 3, (40,), channels=(8, 8), hidden=16, dropout=0.5)
    assert net(torch.randn(2, 40)).shape == (2, 3)
    mlp = make_network("mlp", 3, (10, 4), hidden_sizes=[16, 8], batch_norm=True)
    assert mlp(torch.randn(5, 10, 4)).shape == (5, 3)


@pytest.mark.parametrize(("name", "shape", "steps"), LEARNING)
def test_training_loss_falls_on_a_learnable_problem(name, shape, steps):
    torch.manual_seed(0)
    net = make_network(name, 2, shape)
    x, y = two_class_sequences(shape)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.6 * losses[0], losses
