"""PyTorch networks of the published SER experiments, registered by name.

Every network is an :class:`torch.nn.Module` built as
``make_network(name, n_classes=..., input_shape=..., **hyperparameters)``. It takes a
float tensor of shape ``(batch, *input_shape)`` and returns **logits** of shape
``(batch, n_classes)`` (no softmax: the trainer uses cross-entropy on logits and
:class:`~emovox.models.neural.NeuralClassifier` applies the softmax).

Input conventions (``input_shape`` never includes the batch):

* ``(frames, dims)``: a sequence, e.g. ``mfcc_sequence`` output. Conv1D networks use
  the ``dims`` as channels and convolve over frames; the LSTM reads one
  ``dims``-vector per step; the 2-D CNN treats it as a ``dims x frames`` image.
* ``(length,)``: a vector treated as a **1-channel sequence** of ``length`` values
  (the 40 mean MFCCs of the small CNNs, the 216 per-frame MFCC means of
  ``cnn1d_mfcc216``); ``(batch, length, 1)`` tensors are accepted too.

Layer sizes that depend on the input (the flattened size before a dense layer) are
computed from ``input_shape`` when the network is built, by running its
convolutional part once on zeros; nothing is hard-coded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from emovox.errors import ConfigError
from emovox.models.base import NETWORKS, Network

__all__ = [
    "MLP",
    "NETWORKS",
    "CNN1dDeep",
    "CNN1dMfcc216",
    "CNN2dMfcc",
    "LSTMClassifier",
    "Network",
    "SmallCNN",
]


def _flat_size(features: nn.Module, shape: tuple[int, ...]) -> int:
    """Values per example after ``features`` applied to zeros of ``(1, *shape)``."""
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros((1, *shape)))
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ConfigError(f"input_shape {shape} is too small for this network: nothing is "
                          "left after its pooling layers")
    return out.numel()


def _check_sizes(owner: str, name: str, values: Sequence[int], length: int | None = None
                 ) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if not values or min(values) < 1 or (length is not None and len(values) != length):
        what = f"{length} positive ints" if length else "positive ints"
        raise ConfigError(f"{owner}: {name} must be {what}, got {values}")
    return values


def _check_rate(owner: str, name: str, value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{owner}: {name} must be in [0, 1), got {value}")
    return float(value)


def _conv1d(c_in: int, c_out: int, kernel: int, batch_norm: bool = False) -> list[nn.Module]:
    """Conv1D with "same" padding (+ batch norm) + ReLU.

    Even kernels are padded like Keras (one more zero on the right), explicitly, which
    avoids the extra copy torch makes for ``padding="same"`` with even kernels.
    """
    if kernel % 2:
        layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel, padding="same")]
    else:
        layers = [nn.ConstantPad1d(((kernel - 1) // 2, kernel // 2), 0.0),
                  nn.Conv1d(c_in, c_out, kernel)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(c_out))
    layers.append(nn.ReLU())
    return layers


# ---------------------------------------------------------------------- 1-D CNNs
class CNN1dMfcc216(Network):
    """The Conv1D network of the "216 mean-MFCC frames" experiments.

    Conv1D 256-5, Conv1D 128-5, dropout, max-pool 8, Conv1D 128-5, Conv1D 128-5,
    flatten, dense (softmax applied outside). All convolutions use ``padding="same"``
    and ReLU; the pool uses ``ceil_mode`` so inputs shorter than 8 frames survive.

    Input: ``(batch, frames)`` or ``(batch, frames, 1)`` — in the original, the mean
    over 13 MFCCs of each of the 216 frames of 2.5 s of audio starting at 0.5 s (44.1
    kHz, hop 512); any ``(frames, channels)`` works.

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        ``(frames,)``, ``(frames, 1)`` or ``(frames, channels)``.
    channels : sequence of 4 ints
        Filters of the four convolutions.
    kernel_size : int
        Width of every convolution.
    pool : int
        Max-pool size.
    dropout : float
        Dropout rate before the pool.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *,
                 channels: Sequence[int] = (256, 128, 128, 128), kernel_size: int = 5,
                 pool: int = 8, dropout: float = 0.1) -> None:
        super().__init__(n_classes, input_shape)
        name = "cnn1d_mfcc216"
        c1, c2, c3, c4 = _check_sizes(name, "channels", channels, 4)
        (kernel_size, pool) = _check_sizes(name, "kernel_size/pool", (kernel_size, pool))
        c_in = 1 if len(self.input_shape) == 1 else self.input_shape[1]
        self.features = nn.Sequential(
            *_conv1d(c_in, c1, kernel_size), *_conv1d(c1, c2, kernel_size),
            nn.Dropout(_check_rate(name, "dropout", dropout)),
            nn.MaxPool1d(pool, ceil_mode=True),
            *_conv1d(c2, c3, kernel_size), *_conv1d(c3, c4, kernel_size),
            nn.Flatten(),
        )
        self.head = nn.Linear(_flat_size(self.features, (c_in, self.input_shape[0])), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, frames[, channels])`` inputs."""
        return self.head(self.features(self._channels_first(x)))


class CNN1dDeep(Network):
    """The deeper Conv1D network (Keras "Speech Emotion Analyzer" style).

    Conv1D 256-8 x2, dropout, max-pool 8, Conv1D 128-8 x4, dropout, max-pool 8,
    Conv1D 64-8 x2, flatten, dense. Each convolution of the first two stages is
    followed by batch norm (before its ReLU). Every convolution uses
    ``padding="same"`` (the length only changes at the pools) and the pools use
    ``ceil_mode``, so any input of at least one frame survives both pools of 8: a
    40-value vector becomes 5 then 1 position, 216 frames become 27 then 4.

    Input: ``(batch, length)`` (1 channel) or ``(batch, frames, channels)``.

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        ``(length,)`` or ``(frames, channels)``.
    channels : sequence of 3 ints
        Filters of the three stages (256, 128, 64).
    kernel_size : int
        Width of every convolution.
    pool : int
        Size of both max-pools.
    dropout : float
        Dropout rate of the first two stages.
    batch_norm : bool
        Batch norm after the convolutions of the first two stages.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *,
                 channels: Sequence[int] = (256, 128, 64), kernel_size: int = 8,
                 pool: int = 8, dropout: float = 0.25, batch_norm: bool = True) -> None:
        super().__init__(n_classes, input_shape)
        name = "cnn1d_deep"
        c1, c2, c3 = _check_sizes(name, "channels", channels, 3)
        (kernel_size, pool) = _check_sizes(name, "kernel_size/pool", (kernel_size, pool))
        rate = _check_rate(name, "dropout", dropout)
        c_in = 1 if len(self.input_shape) == 1 else self.input_shape[1]
        bn = bool(batch_norm)
        self.features = nn.Sequential(
            *_conv1d(c_in, c1, kernel_size, bn), *_conv1d(c1, c1, kernel_size, bn),
            nn.Dropout(rate), nn.MaxPool1d(pool, ceil_mode=True),
            *_conv1d(c1, c2, kernel_size, bn), *_conv1d(c2, c2, kernel_size, bn),
            *_conv1d(c2, c2, kernel_size, bn), *_conv1d(c2, c2, kernel_size, bn),
            nn.Dropout(rate), nn.MaxPool1d(pool, ceil_mode=True),
            *_conv1d(c2, c3, kernel_size), *_conv1d(c3, c3, kernel_size),
            nn.Flatten(),
        )
        self.head = nn.Linear(_flat_size(self.features, (c_in, self.input_shape[0])), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, length)`` or ``(batch, frames, ch)``."""
        return self.head(self.features(self._channels_first(x)))


class SmallCNN(Network):
    """A small Conv1D network over a feature vector treated as a 1-channel sequence.

    For each stage: Conv1D (``padding="same"``) + ReLU + max-pool (``ceil_mode``);
    then dropout, flatten, an optional hidden dense layer (ReLU) and the output
    layer. The registry names ``cnn_small_b``, ``cnn_small_c`` and ``cnn_small_d``
    are this class with different defaults (about 4.5k, 6.5k and 88k parameters on
    the 40 mean MFCCs with 8 classes).

    Input: ``(batch, 40)`` (40 mean MFCCs, 1 channel) or ``(batch, frames, channels)``.

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        ``(length,)`` or ``(frames, channels)``.
    channels, kernel_sizes, pools : sequences of ints, same length
        Filters, convolution widths and pool sizes of each stage.
    hidden : int
        Units of a hidden dense layer before the output; 0 for none.
    dropout : float
        Dropout rate before the dense layers.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *,
                 channels: Sequence[int] = (32, 32), kernel_sizes: Sequence[int] = (5, 3),
                 pools: Sequence[int] = (2, 4), hidden: int = 0, dropout: float = 0.2) -> None:
        super().__init__(n_classes, input_shape)
        name = type(self).__name__
        channels = _check_sizes(name, "channels", channels)
        kernel_sizes = _check_sizes(name, "kernel_sizes", kernel_sizes, len(channels))
        pools = _check_sizes(name, "pools", pools, len(channels))
        if int(hidden) < 0:
            raise ConfigError(f"{name}: hidden must be >= 0, got {hidden}")
        c_in = 1 if len(self.input_shape) == 1 else self.input_shape[1]
        layers: list[nn.Module] = []
        previous = c_in
        for c, k, p in zip(channels, kernel_sizes, pools, strict=True):
            layers += [*_conv1d(previous, c, k), nn.MaxPool1d(p, ceil_mode=True)]
            previous = c
        layers += [nn.Dropout(_check_rate(name, "dropout", dropout)), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, (c_in, self.input_shape[0]))
        head: list[nn.Module] = []
        if int(hidden):
            head += [nn.Linear(flat, int(hidden)), nn.ReLU()]
            flat = int(hidden)
        self.head = nn.Sequential(*head, nn.Linear(flat, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, length)`` or ``(batch, frames, ch)``."""
        return self.head(self.features(self._channels_first(x)))


# ---------------------------------------------------------------------- 2-D CNN
class CNN2dMfcc(Network):
    """A small 2-D CNN over the MFCC image (about 56k parameters on 25 x 216).

    Four blocks of Conv2D 32-3x3 (``padding="same"``) + ReLU + batch norm + max-pool
    2 (floor, as Keras) + dropout; flatten; dense 64 + ReLU, dropout, batch norm;
    output layer. Each pool halves both sides (rounding down), so both the number of
    frames and of coefficients must be at least ``2 ** blocks`` (16).

    Input: ``(batch, frames, n_mfcc)`` — e.g. ``mfcc_sequence`` output — which is
    transposed to a 1-channel ``n_mfcc x frames`` image.

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        ``(frames, n_mfcc)``.
    filters : int
        Filters of every convolution.
    blocks : int
        Number of convolution blocks.
    hidden : int
        Units of the dense layer.
    dropout : float
        Dropout rate of every block and after the dense layer.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *, filters: int = 32,
                 blocks: int = 4, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__(n_classes, input_shape)
        name = "cnn2d_mfcc"
        if len(self.input_shape) != 2:
            raise ConfigError(f"{name}: input_shape must be (frames, n_mfcc), "
                              f"got {self.input_shape}")
        filters, blocks, hidden = _check_sizes(name, "filters/blocks/hidden",
                                               (filters, blocks, hidden))
        rate = _check_rate(name, "dropout", dropout)
        frames, n_mfcc = self.input_shape
        if min(frames, n_mfcc) < 2**blocks:
            raise ConfigError(f"{name}: input_shape {self.input_shape} is too small for "
                              f"{blocks} pools of 2 (need both sides >= {2**blocks})")
        layers: list[nn.Module] = []
        previous = 1
        for _ in range(blocks):
            layers += [nn.Conv2d(previous, filters, 3, padding="same"), nn.ReLU(),
                       nn.BatchNorm2d(filters), nn.MaxPool2d(2), nn.Dropout(rate)]
            previous = filters
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, (1, n_mfcc, frames))
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(rate),
                                  nn.BatchNorm1d(hidden), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, frames, n_mfcc)`` inputs."""
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(self._shape_error(x))
        return self.head(self.features(x.transpose(1, 2).unsqueeze(1)))


# ---------------------------------------------------------------------- LSTM
class LSTMClassifier(Network):
    """LSTM over frames, then dense 64, dense 32, dropout and the output layer.

    The last hidden state of a (single-layer, unidirectional) LSTM feeds dense 64 +
    ReLU, dense 32 + ReLU, dropout and the output layer.

    Input: ``(batch, frames, dims)`` — e.g. 40-MFCC frames — or ``(batch, length)``,
    read as ``length`` steps of one value (the Keras recipe on the 40 mean MFCCs
    reshaped to ``(40, 1)``).

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        ``(frames, dims)`` or ``(length,)``.
    hidden_size : int
        LSTM units.
    dense : sequence of ints
        Sizes of the dense layers after the LSTM.
    dropout : float
        Dropout rate before the output layer.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *, hidden_size: int = 128,
                 dense: Sequence[int] = (64, 32), dropout: float = 0.4) -> None:
        super().__init__(n_classes, input_shape)
        name = "lstm"
        (hidden_size,) = _check_sizes(name, "hidden_size", (hidden_size,))
        dims = 1 if len(self.input_shape) == 1 else self.input_shape[1]
        self.lstm = nn.LSTM(dims, hidden_size, batch_first=True)
        layers: list[nn.Module] = []
        previous = hidden_size
        for size in _check_sizes(name, "dense", dense) if len(dense) else ():
            layers += [nn.Linear(previous, size), nn.ReLU()]
            previous = size
        layers += [nn.Dropout(_check_rate(name, "dropout", dropout)),
                   nn.Linear(previous, n_classes)]
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, frames, dims)`` or ``(batch, length)``."""
        x = self._channels_first(x).transpose(1, 2)  # checked, (B, L, C)
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


# ---------------------------------------------------------------------- MLP
class MLP(Network):
    """A multilayer perceptron on any fixed-length input (flattened).

    Input: ``(batch, dims)`` or ``(batch, frames, dims)`` (flattened to
    ``frames * dims`` values).

    Parameters
    ----------
    n_classes : int
    input_shape : tuple
        Any shape; only its number of values matters.
    hidden_sizes : sequence of ints
        Units of the hidden layers (ReLU); empty for a linear classifier.
    dropout : float
        Dropout rate after each hidden layer.
    batch_norm : bool
        Batch norm after each hidden layer (before the ReLU).
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int], *,
                 hidden_sizes: Sequence[int] = (300,), dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__(n_classes, input_shape)
        name = "mlp"
        sizes = _check_sizes(name, "hidden_sizes", hidden_sizes) if len(hidden_sizes) else ()
        rate = _check_rate(name, "dropout", dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        previous = math.prod(self.input_shape)
        for size in sizes:
            layers.append(nn.Linear(previous, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if rate:
                layers.append(nn.Dropout(rate))
            previous = size
        layers.append(nn.Linear(previous, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``(batch, *input_shape)`` inputs."""
        if math.prod(x.shape[1:]) != math.prod(self.input_shape):
            raise ValueError(self._shape_error(x))
        return self.layers(x)


# ---------------------------------------------------------------------- registry
NETWORKS.update({
    "cnn1d_mfcc216": CNN1dMfcc216,
    "cnn1d_deep": CNN1dDeep,
    "cnn2d_mfcc": CNN2dMfcc,
    "lstm": LSTMClassifier,
    "cnn_small_b": partial(SmallCNN, channels=(32, 32), kernel_sizes=(5, 3), pools=(2, 4)),
    "cnn_small_c": partial(SmallCNN, channels=(32, 32), kernel_sizes=(5, 5), pools=(2, 4)),
    "cnn_small_d": partial(SmallCNN, channels=(128, 128), kernel_sizes=(5, 5), pools=(2, 4)),
    "mlp": MLP,
})
