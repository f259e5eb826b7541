"""librosa-based extractors: MFCC/chroma/mel functionals and MFCC/log-mel sequences.

All of them use one STFT (``n_fft`` samples, Hann window, centred frames padded with
zeros, librosa 0.11 defaults) per recording.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import librosa
import numpy as np

from emovox.audio import DEFAULT_SAMPLE_RATE
from emovox.errors import ConfigError
from emovox.features.base import (
    FeatureExtractor,
    SequenceExtractor,
    check_bool,
    check_float,
    check_int,
    register_extractor,
)

#: Number of mel bands librosa's ``mfcc`` uses by default; the classic 180-value
#: vector computes its MFCCs from these whatever its own ``n_mels`` is.
_LIBROSA_MFCC_MELS = 128


@contextmanager
def _quiet_librosa() -> Iterator[None]:
    """Silence librosa's per-call warning for clips shorter than ``n_fft``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        yield


def _magnitude(signal: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    return np.abs(librosa.stft(signal, n_fft=n_fft, hop_length=hop_length))


@functools.lru_cache(maxsize=32)
def _mel_basis(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """librosa's mel filter bank, built once per process and setting (it costs ~4 ms)."""
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    basis.setflags(write=False)
    return basis


def _mel_power(
    signal: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Mel power spectrogram (n_mels, frames), as ``librosa.feature.melspectrogram``."""
    power = _magnitude(signal, n_fft, hop_length) ** 2
    return _mel_basis(sample_rate, n_fft, n_mels, fmin, fmax) @ power


def _mfcc(mel_power: np.ndarray, n_mfcc: int) -> np.ndarray:
    """MFCCs (n_mfcc, frames) of a mel power spectrogram, as ``librosa.feature.mfcc``."""
    return librosa.feature.mfcc(S=librosa.power_to_db(mel_power), n_mfcc=n_mfcc)


@register_extractor
class MfccChromaMel(FeatureExtractor):
    """The classic 180-value vector: time-averaged MFCC + chroma + mel power.

    Reproduces the recipe of the published experiments::

        stft = abs(librosa.stft(y))
        mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40), axis=1)        # 40
        mean(librosa.feature.chroma_stft(S=stft, sr=sr), axis=1)          # 12 (C, C#, ..., B)
        mean(librosa.feature.melspectrogram(y=y, sr=sr), axis=1)          # 128

    computed from a single STFT (n_fft=2048, hop 512). Chroma is computed from the
    STFT *magnitude*, with librosa's per-file tuning estimate, as in the original.

    Parameters
    ----------
    n_mfcc : int
        MFCCs (from 128 mel bands, librosa's default), 1..128.
    n_chroma : int
        Chroma bins per octave.
    n_mels : int
        Mel power bands in the third block.
    sample_rate : int
        Analysis rate in Hz.
    offset : float
        Seconds skipped at the start of each recording.
    duration : float or None
        Seconds analysed; ``None``: to the end.
    """

    name: ClassVar[str] = "mfcc_chroma_mel"
    n_fft: ClassVar[int] = 2048
    hop_length: ClassVar[int] = 512

    def __init__(
        self,
        *,
        n_mfcc: int = 40,
        n_chroma: int = 12,
        n_mels: int = 128,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float | None = None,
    ) -> None:
        self.n_mfcc = check_int(self, "n_mfcc", n_mfcc, minimum=1, maximum=_LIBROSA_MFCC_MELS)
        self.n_chroma = check_int(self, "n_chroma", n_chroma, minimum=1)
        self.n_mels = check_int(self, "n_mels", n_mels, minimum=1)
        self._init_window(sample_rate, offset, duration)

    @property
    def output_shape(self) -> tuple[int]:
        return (self.n_mfcc + self.n_chroma + self.n_mels,)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        sr = self.sample_rate
        with _quiet_librosa():
            magnitude = _magnitude(signal, self.n_fft, self.hop_length)
            power = magnitude**2
            mel = _mel_basis(sr, self.n_fft, self.n_mels) @ power
            mfcc_mel = (
                mel
                if self.n_mels == _LIBROSA_MFCC_MELS
                else _mel_basis(sr, self.n_fft, _LIBROSA_MFCC_MELS) @ power
            )
            mfcc = _mfcc(mfcc_mel, self.n_mfcc)
            chroma = librosa.feature.chroma_stft(S=magnitude, sr=sr, n_chroma=self.n_chroma)
        return np.concatenate([mfcc.mean(axis=1), chroma.mean(axis=1), mel.mean(axis=1)])


@register_extractor
class MfccStats(FeatureExtractor):
    """Compact functional: statistics over time of MFCCs and their deltas.

    The MFCC matrix is stacked with its first ``deltas`` derivatives (librosa
    ``delta``, width 9, ``mode="nearest"`` so short clips work), giving
    ``n_mfcc * (deltas + 1)`` rows; the output is their mean, then their standard
    deviation (unless ``std=False``), then (``minmax=True``) their minimum and maximum.
    ``mfcc_stats(n_mfcc=40, deltas=0, std=False)`` is the 40-value MFCC mean vector of
    the published small CNNs.

    Parameters
    ----------
    n_mfcc : int
        MFCCs per frame, 1..n_mels.
    deltas : int
        0 (MFCCs only), 1 (+ deltas) or 2 (+ delta-deltas).
    std : bool
        Output the standard deviation after the mean.
    minmax : bool
        Also output the minimum and maximum.
    n_mels, n_fft, hop_length : int
        Mel bands and STFT size/hop in samples.
    sample_rate, offset, duration
        As in :class:`MfccChromaMel`.
    """

    name: ClassVar[str] = "mfcc_stats"

    def __init__(
        self,
        *,
        n_mfcc: int = 20,
        deltas: int = 1,
        std: bool = True,
        minmax: bool = False,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float | None = None,
    ) -> None:
        self.n_mels = check_int(self, "n_mels", n_mels, minimum=1)
        self.n_mfcc = check_int(self, "n_mfcc", n_mfcc, minimum=1, maximum=self.n_mels)
        self.deltas = check_int(self, "deltas", deltas, minimum=0, maximum=2)
        self.std = check_bool(self, "std", std)
        self.minmax = check_bool(self, "minmax", minmax)
        self.n_fft = check_int(self, "n_fft", n_fft, minimum=16)
        self.hop_length = check_int(self, "hop_length", hop_length, minimum=1)
        self._init_window(sample_rate, offset, duration)

    @property
    def output_shape(self) -> tuple[int]:
        n_stats = 1 + int(self.std) + (2 if self.minmax else 0)
        return (self.n_mfcc * (self.deltas + 1) * n_stats,)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        with _quiet_librosa():
            mel = _mel_power(signal, self.sample_rate, self.n_fft, self.hop_length, self.n_mels)
        mfcc = _mfcc(mel, self.n_mfcc)
        rows = [mfcc] + [
            librosa.feature.delta(mfcc, order=order, mode="nearest")
            for order in range(1, self.deltas + 1)
        ]
        stacked = np.concatenate(rows, axis=0)
        stats = [stacked.mean(axis=1)] + ([stacked.std(axis=1)] if self.std else [])
        if self.minmax:
            stats += [stacked.min(axis=1), stacked.max(axis=1)]
        return np.concatenate(stats)


class _SpectralSequence(SequenceExtractor):
    """Shared parameters of the frame-level librosa extractors."""

    def _init_stft(self, n_fft: int, hop_length: int) -> None:
        self.n_fft = check_int(self, "n_fft", n_fft, minimum=16)
        self.hop_length = check_int(self, "hop_length", hop_length, minimum=1)


@register_extractor
class MfccSequence(_SpectralSequence):
    """MFCC frames, shape (frames, n_mfcc), fixed length.

    ``duration`` seconds from ``offset`` are analysed; shorter recordings are padded
    with zero *frames* at the end, longer ones cropped. With the defaults
    (3 s at 16 kHz, hop 512) the output is (94, 40).

    Parameters
    ----------
    n_mfcc : int
        MFCCs per frame, 1..n_mels.
    n_mels, n_fft, hop_length : int
        Mel bands, STFT size and hop in samples.
    sample_rate : int
        Analysis rate in Hz.
    offset : float
        Seconds skipped at the start.
    duration : float
        Seconds analysed; sets the number of frames.
    """

    name: ClassVar[str] = "mfcc_sequence"

    def __init__(
        self,
        *,
        n_mfcc: int = 40,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float = 3.0,
    ) -> None:
        self.n_mels = check_int(self, "n_mels", n_mels, minimum=1)
        self.n_mfcc = check_int(self, "n_mfcc", n_mfcc, minimum=1, maximum=self.n_mels)
        self._init_stft(n_fft, hop_length)
        self._init_window(sample_rate, offset, duration, duration_required=True)

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        with _quiet_librosa():
            mel = _mel_power(signal, self.sample_rate, self.n_fft, self.hop_length, self.n_mels)
        return self._fix_length(_mfcc(mel, self.n_mfcc).T)


@register_extractor
class MfccFrameMean(MfccSequence):
    """Per-frame mean of the MFCCs, shape (frames,): the input of the published 1D CNN.

    The published experiment averaged 13 MFCCs in each frame of 2.5 s of audio taken
    0.5 s into each file, at 44.1 kHz with a 512-sample hop: 216 values. Those are the
    defaults here (the audio is resampled to ``sample_rate`` first).
    """

    name: ClassVar[str] = "mfcc_frame_mean"

    def __init__(
        self,
        *,
        n_mfcc: int = 13,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
        sample_rate: int = 44_100,
        offset: float = 0.5,
        duration: float = 2.5,
    ) -> None:
        super().__init__(n_mfcc=n_mfcc, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                         sample_rate=sample_rate, offset=offset, duration=duration)

    @property
    def output_shape(self) -> tuple[int]:
        return (self.n_frames,)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        frames = super()._compute(signal)
        # Padded frames stay 0 (the mean of zero frames), as in the original.
        return frames.mean(axis=1).astype(np.float32)


@register_extractor
class LogmelSequence(_SpectralSequence):
    """Log-mel frames in dB, shape (frames, n_mels), fixed length.

    ``10 * log10(max(mel power, 1e-10))`` with no reference or ``top_db``
    normalisation, so the level of the recording is kept (a louder copy gives larger
    values). Cropping/padding as in :class:`MfccSequence` (padded frames are 0).

    Parameters
    ----------
    n_mels, n_fft, hop_length : int
        Mel bands, STFT size and hop in samples.
    fmin, fmax : float
        Frequency range of the mel filters in Hz (``fmax=None``: sample_rate / 2).
    sample_rate, offset, duration
        As in :class:`MfccSequence`.
    """

    name: ClassVar[str] = "logmel_sequence"

    def __init__(
        self,
        *,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
        fmin: float = 0.0,
        fmax: float | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float = 3.0,
    ) -> None:
        self.n_mels = check_int(self, "n_mels", n_mels, minimum=1)
        self._init_stft(n_fft, hop_length)
        self._init_window(sample_rate, offset, duration, duration_required=True)
        self.fmin = check_float(self, "fmin", fmin, minimum=0.0)
        self.fmax = check_float(self, "fmax", fmax, minimum=0.0, strict=True, optional=True)
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        if top > self.sample_rate / 2 or self.fmin >= top:
            raise ConfigError(
                f"{self.name}: need 0 <= fmin < fmax <= sample_rate/2 "
                f"({self.sample_rate / 2:g} Hz), got fmin={self.fmin:g}, fmax={top:g}"
            )

    @property
    def n_features(self) -> int:
        return self.n_mels

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        with _quiet_librosa():
            mel = _mel_power(signal, self.sample_rate, self.n_fft, self.hop_length, self.n_mels,
                             self.fmin, self.fmax)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        return self._fix_length(logmel.T)
