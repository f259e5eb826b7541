"""Synthetic voice-like signals, for demos and tests (no recordings needed)."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# Formant frequencies (Hz) of a few vowels, roughly an adult male voice.
_VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240),
           "e": (530, 1840, 2480), "o": (570, 840, 2410)}


def _resonator(signal: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], signal)


def synth_voice(duration: float = 2.0, sample_rate: int = 16_000, f0: float = 130.0,
                f0_range: float = 0.25, vowels: str = "aeiou", loudness: float = 0.3,
                seed: int = 0) -> np.ndarray:
    """A voiced, speech-like signal: a jittered glottal pulse train through formants.

    Parameters
    ----------
    duration : float
        Seconds.
    f0 : float
        Mean fundamental frequency in Hz; ``f0_range`` is the relative swing of its
        slow intonation contour (higher values sound more aroused).
    vowels : str
        Vowel sequence (a, e, i, o, u), one per syllable.
    loudness : float
        Peak amplitude.

    Returns
    -------
    np.ndarray, shape (round(duration * sample_rate),), float32
    """
    rng = np.random.default_rng(seed)
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    contour = f0 * (1 + f0_range * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    contour *= 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n)
    phase = np.cumsum(contour / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal cycle
    source = lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    bounds = np.linspace(0, n, len(vowels) + 1).astype(int)
    for vowel, start, stop in zip(vowels, bounds[:-1], bounds[1:], strict=True):
        segment = source[start:stop]
        shaped = sum(_resonator(segment, f, 60 + 20 * k, sample_rate)
                     for k, f in enumerate(_VOWELS[vowel]))
        envelope = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.5  # syllable shape
        out[start:stop] = shaped * envelope
    out *= loudness / (np.max(np.abs(out)) + 1e-12)
    return out.astype(np.float32)
