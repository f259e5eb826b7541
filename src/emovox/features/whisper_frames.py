"""Frame-level Whisper tiny.en hidden states: the ``whisper_frames`` sequence extractor.

The hidden states come from :func:`emovox.features.encoders.whisper_hidden_states`
(the same PyTorch encoder and unpadded log-mel as ``whisper_encoder``; nothing is
downloaded), but instead of being pooled over time they are kept frame by frame
for a trainable pooling head such as ``attention_pool``
(:mod:`emovox.models.heads`).

Output layout
-------------
Shape ``(frames, n_layers * 384)`` with ``frames = ceil((round(duration * 16000) //
160) / 2)`` (50 frames per second: 200 for the default 4 s). Each frame is
layer-major: ``[state l_0 (384) | state l_1 (384) | ...]`` in the order of
``layers``, so ``x.reshape(frames, n_layers, 384)`` gives one row per state. A
recording shorter than ``offset + duration`` yields fewer encoder frames and the
remaining frames are **exactly zero** (padding at the end); a real frame is never
all zero (it always contains the positional embedding), so the heads find the
padding by testing for all-zero frames.

Values and disk size
--------------------
Values are rounded to the nearest float16 (clipped to +-65504 first; Whisper tiny's
hidden states stay in the hundreds), then returned as float32. The rounding is a
relative change of at most 2**-11 and makes the arrays *float16-safe*: storing them
as float16 loses nothing. The feature cache stores float32 ``.npy`` files, i.e.
``frames * n_layers * 384 * 4`` bytes per file: **921,600 bytes (~0.9 MB) per file
at the defaults** (200 frames, 3 layers), ~1.3 GB for RAVDESS speech (1440 files)
and ~6.9 GB for CREMA-D (7442 files); the same again in RAM when a data set is
loaded. Use fewer ``layers`` or a shorter ``duration`` for large corpora.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np

from emovox.audio import DEFAULT_SAMPLE_RATE
from emovox.errors import ConfigError
from emovox.features.base import SequenceExtractor, check_int, register_extractor
from emovox.features.whisper import (
    D_MODEL,
    MAX_SECONDS,
    _check_layers,
    encoder_hidden_states,
    layer_indices,
)

__all__ = ["FLOAT16_MAX", "WhisperFramesExtractor"]

#: Largest finite float16; values are clipped to +- this before rounding.
FLOAT16_MAX = float(np.finfo(np.float16).max)
#: Audio samples per mel frame (Whisper's hop) and mel frames per encoder frame.
_HOP = 160
_MEL_PER_FRAME = 2


@register_extractor
class WhisperFramesExtractor(SequenceExtractor):
    """Whisper tiny.en hidden states of chosen layers, frame by frame, fixed length.

    The ``duration``-second window starting at ``offset`` is encoded without padding
    (:func:`~emovox.features.encoders.whisper_hidden_states`); the selected states
    are concatenated per frame (layer-major), rounded to float16 precision and
    cropped or zero-padded at the end to :attr:`n_frames`. See the module docstring
    for the layout and the disk size (0.9 MB per file at the defaults).

    Parameters
    ----------
    layers : "last", "all" or list of int
        Hidden states used, indices in 0..4 (0 = input embeddings, 4 = final
        LayerNorm output), in the order given; ``"last"`` = [4], ``"all"`` =
        [0, 1, 2, 3, 4]. Default [1, 2, 3]: the middle blocks score best for
        emotion.
    threads : int
        PyTorch threads during an extraction (restored afterwards).
    sample_rate : int
        Must be 16000 (Whisper's rate).
    offset : float
        Seconds skipped at the start of each recording.
    duration : float
        Seconds analysed (at most 30, the encoder's positional table); fixes the
        number of frames: 50 per second.

    Examples
    --------
    >>> WhisperFramesExtractor().output_shape
    (200, 1152)
    >>> WhisperFramesExtractor(layers=[2], duration=3.0).output_shape
    (150, 384)
    """

    name: ClassVar[str] = "whisper_frames"
    kind: ClassVar[Literal["functional", "sequence"]] = "sequence"
    hop_length: int = _HOP * _MEL_PER_FRAME

    def __init__(
        self,
        *,
        layers: str | Sequence[int] = (1, 2, 3),
        threads: int = 1,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float = 4.0,
    ) -> None:
        self.layers = _check_layers(self, layers)
        self.threads = check_int(self, "threads", threads, minimum=1)
        self._init_window(sample_rate, offset, duration, duration_required=True)
        if self.sample_rate != DEFAULT_SAMPLE_RATE:
            raise ConfigError(f"{self.name}: sample_rate must be {DEFAULT_SAMPLE_RATE} "
                              f"(Whisper's rate), got {self.sample_rate}")
        assert self.duration is not None
        if self.duration > MAX_SECONDS:
            raise ConfigError(f"{self.name}: duration must be <= {MAX_SECONDS:g} s (the "
                              f"encoder's positional table), got {self.duration:g}")

    @property
    def layer_indices(self) -> list[int]:
        """Indices (0..4) of the hidden states used, in output order."""
        return layer_indices(self.layers)

    @property
    def n_frames(self) -> int:
        """Encoder frames of a full window: ``ceil((samples // 160) / 2)``."""
        mel_frames = self._window_samples() // _HOP
        return -(-mel_frames // _MEL_PER_FRAME)

    @property
    def n_features(self) -> int:
        """Values per frame: ``len(layers) * 384``."""
        return len(self.layer_indices) * D_MODEL

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        assert self.duration is not None
        states = encoder_hidden_states(self, signal, max_seconds=self.duration,
                                       threads=self.threads)[self.layer_indices]
        frames = states.transpose(1, 0, 2).reshape(states.shape[1], -1)  # layer-major
        frames = np.clip(frames, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
        return self._fix_length(frames.astype(np.float32))
