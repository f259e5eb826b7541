"""Signal preprocessing before features: loudness normalisation and silence trimming.

Both answer a channel difference between corpora and users' recordings: one corpus
is recorded hotter than another, one has a second of room tone around each sentence.
They run on the whole recording, before an extractor picks its analysed window, and
are used through the ``preprocessed`` feature extractor
(:class:`emovox.features.compose.Preprocessed`), so the cache, the bundles and the
Recognizer apply them alike.
"""

from __future__ import annotations

import numpy as np

from emovox.errors import ConfigError

#: EBU R 128 programme loudness, in LUFS.
DEFAULT_LOUDNESS_LUFS = -23.0
#: ITU-R BS.1770 gating block; shorter recordings are measured in one block.
BLOCK_SECONDS = 0.4
#: Trimming never leaves less than this (seconds); otherwise the signal is kept whole.
MIN_TRIMMED_SECONDS = 0.25


def integrated_loudness(signal: np.ndarray, sample_rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness of a mono signal, in LUFS (pyloudnorm).

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono samples.
    sample_rate : int
        Rate in Hz.

    Returns
    -------
    float
        Loudness in LUFS; ``-inf`` when every block is gated out as silence.
    """
    import pyloudnorm

    block = min(BLOCK_SECONDS, signal.size / sample_rate)
    meter = pyloudnorm.Meter(sample_rate, block_size=block)
    return float(meter.integrated_loudness(np.asarray(signal, dtype=np.float64)))


def normalize_loudness(signal: np.ndarray, sample_rate: int,
                       target_lufs: float = DEFAULT_LOUDNESS_LUFS) -> np.ndarray:
    """Scale a recording to a target integrated loudness (ITU-R BS.1770).

    The gain is not limited: a quiet file scaled up may exceed ±1, which features
    computed in floating point do not mind (nothing is written to a file).

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono samples.
    sample_rate : int
        Rate in Hz.
    target_lufs : float
        Wanted loudness, e.g. -23 (EBU R 128).

    Returns
    -------
    np.ndarray, float32, shape (n,)
        The scaled signal; unchanged when its loudness cannot be measured (silence).
    """
    loudness = integrated_loudness(signal, sample_rate)
    if not np.isfinite(loudness):
        return np.asarray(signal, dtype=np.float32)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return (np.asarray(signal, dtype=np.float64) * gain).astype(np.float32)


def trim_silence(signal: np.ndarray, sample_rate: int, top_db: float = 30.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the peak (librosa).

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono samples.
    sample_rate : int
        Rate in Hz.
    top_db : float
        Threshold below the loudest frame, in dB.

    Returns
    -------
    np.ndarray, float32
        The trimmed signal, or the whole one if trimming would leave less than
        :data:`MIN_TRIMMED_SECONDS`.
    """
    import librosa

    trimmed, _ = librosa.effects.trim(np.asarray(signal, dtype=np.float32), top_db=top_db)
    if trimmed.size < MIN_TRIMMED_SECONDS * sample_rate:
        return np.asarray(signal, dtype=np.float32)
    return trimmed


def check_preprocessing(trim_top_db: float | None, loudness_lufs: float | None) -> None:
    """Refuse settings outside sensible ranges, naming the parameter.

    Raises
    ------
    ConfigError
        ``trim_top_db`` not in (0, 120] or ``loudness_lufs`` not in [-70, 0].
    """
    if trim_top_db is not None and not (_is_number(trim_top_db) and 0 < trim_top_db <= 120):
        raise ConfigError(f"preprocessed: trim_top_db must be a number of dB in (0, 120], "
                          f"got {trim_top_db!r}")
    if loudness_lufs is not None and not (_is_number(loudness_lufs)
                                          and -70 <= loudness_lufs <= 0):
        raise ConfigError(f"preprocessed: loudness_lufs must be a number of LUFS in "
                          f"[-70, 0], got {loudness_lufs!r}")


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and bool(np.isfinite(value)))


def preprocess(signal: np.ndarray, sample_rate: int, *, trim_top_db: float | None = None,
               loudness_lufs: float | None = None) -> np.ndarray:
    """Trim silence (if asked), then normalise loudness (if asked).

    Trimming first means the loudness is measured on the speech, not on room tone.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono samples.
    sample_rate : int
        Rate in Hz.
    trim_top_db : float or None
        See :func:`trim_silence`; ``None`` keeps the signal's length.
    loudness_lufs : float or None
        See :func:`normalize_loudness`; ``None`` keeps the level.

    Returns
    -------
    np.ndarray, float32
    """
    out = np.asarray(signal, dtype=np.float32)
    if trim_top_db is not None:
        out = trim_silence(out, sample_rate, trim_top_db)
    if loudness_lufs is not None:
        out = normalize_loudness(out, sample_rate, loudness_lufs)
    return out
