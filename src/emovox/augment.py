"""Audio augmentation recipes of the published SER experiments, through audiomentations.

A *recipe* names one transform or a combination applied in order:

========== ======================================================================
name       transform (parameters drawn per call)
========== ======================================================================
noise      ``AddGaussianNoise``, amplitude 0.001–0.015
shift      ``Shift``, ±0.25 s with rollover (the signal is rotated, like np.roll)
pitch      ``PitchShift``, ±2 semitones
gain       ``Gain`` of +3.52 to +9.54 dB, i.e. the "dynamic change" ×1.5 to ×3
           (not clipped: peaks may exceed 1, as in the original recipe)
stretch    ``TimeStretch``, rate 0.8–1.25, **length changes** (rate 1.25 gives a
           signal 1/1.25 as long)
speed      :class:`SpeedPerturb`: played 0.9–1.1 times as fast (resampled, soxr),
           so pitch, formants and tempo move together, as in another, longer or
           shorter, vocal tract (Ko et al., Interspeech 2015); **length changes**
vtlp       :class:`VocalTractLengthPerturb`: the spectral envelope's frequency axis
           warped by 0.9–1.1 (Jaitly and Hinton's piecewise-linear warp), so the
           formants move as in another vocal tract while pitch and tempo stay
mask       :class:`SpecAugmentMask`: SpecAugment-style masking in the waveform
           (Park et al. 2019): two spans of 0-7.5 % of the duration silenced
           (``TimeMask``) and one band of 0.2-0.5 times its centre, centred at
           150-4000 Hz, removed (``BandStopFilter``)
telephone  :class:`TelephoneChannel`: down to 8 kHz, band-pass (high-pass 250–350 Hz,
           low-pass 3200–3600 Hz, ``HighPassFilter``/``LowPassFilter``), 8-bit
           μ-law (G.711-like) and back up to the input rate
eq         ``SevenBandParametricEQ``, each band ±8 dB (microphone / room colour)
codec      :class:`Mp3Codec`: ``Mp3Compression`` (fast-mp3-augment, i.e. LAME) at
           16–64 kbps; rates MP3 lacks and clips under 100 ms are handled
reverb     :class:`SyntheticReverb`: convolution with a synthetic room response
           (direct path + exponentially decaying noise, RT60 0.2–0.8 s, wet
           0.2–0.6), peak-matched to the input
snr        ``AddGaussianSNR``, white noise at 5–30 dB SNR (set e.g.
           ``params={"snr": {"min_snr_db": 10, "max_snr_db": 10}}``)
resample   :class:`ResampleChain`: through one or two of 8000, 11025, 12000 Hz
           (those below the input rate) and back, with soxr
channel    :class:`ChannelMix`: one or two of reverb, eq, snr, codec, telephone,
           resample per call (``SomeOf``), applied in that signal-chain order
========== ======================================================================

Combinations are written ``"noise+shift"`` or as a list ``["pitch", "noise"]``.
Every transform keeps the sample rate, and all but ``stretch`` and ``speed`` keep the length
(channel transforms that resample or encode pad or crop back to the input length).
(Sequence extractors crop or pad to a fixed number of frames, so stretched audio
still gives features of the usual shape.)

**Only training data is augmented.** :func:`augmented_training_features` takes the
training paths of a fold and returns extra rows to add to *that fold's training
set*; nothing here takes a test split, and the features of test files always come
from the unmodified audio.

Reproducibility: audiomentations draws from Python's ``random`` and NumPy's global
generator. An :class:`Augmenter` keeps its own states of both and swaps them in only
while it runs, so its output depends only on its seed and the global generators are
left as they were. The channel transforms defined here draw from the same two
generators (the reverb's noise from a seed it draws from ``random``). Each augmented
copy in :func:`augment_table` is seeded from ``(seed, path, copy)``, so a file's copies
are the same whatever else is in the list.
(The swap is not thread-safe: use one augmenter per thread or process.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soxr
from audiomentations import (
    AddGaussianNoise,
    AddGaussianSNR,
    BandStopFilter,
    Compose,
    Gain,
    HighPassFilter,
    LowPassFilter,
    Mp3Compression,
    PitchShift,
    SevenBandParametricEQ,
    Shift,
    SomeOf,
    TimeMask,
    TimeStretch,
)
from audiomentations.core.transforms_interface import BaseWaveformTransform
from numpy.typing import NDArray
from scipy.signal import fftconvolve
from tqdm.auto import tqdm

from emovox.audio import DEFAULT_SAMPLE_RATE, load_audio
from emovox.errors import AudioError, ConfigError
from emovox.features import FeatureExtractor, get_extractor
from emovox.features.cache import FeatureCache, file_key, resolve_cache_dir

__all__ = [
    "CHANNEL_RECIPES",
    "RECIPES",
    "AugmentedFeatures",
    "Augmenter",
    "ChannelMix",
    "Mp3Codec",
    "ResampleChain",
    "SpecAugmentMask",
    "SpeedPerturb",
    "SyntheticReverb",
    "TelephoneChannel",
    "VocalTractLengthPerturb",
    "augment_table",
    "augmented_training_features",
    "available_recipes",
    "make_augmenter",
    "parse_recipe",
]


def _fit_length(samples: NDArray[np.floating], length: int) -> NDArray[np.float32]:
    """Crop or zero-pad to exactly ``length`` samples (resamplers may be off by one)."""
    out = np.zeros(length, dtype=np.float32)
    keep = min(length, samples.shape[-1])
    out[:keep] = samples[:keep]
    return out


def _resample(samples: NDArray[np.float32], from_rate: int, to_rate: int,
              quality: str = "HQ") -> NDArray[np.float32]:
    if from_rate == to_rate or samples.size == 0:
        return samples
    # soxr.resample compensates its filter delay, so the chain keeps the timing.
    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality=quality),
                      dtype=np.float32)


def _mu_law_8bit(samples: NDArray[np.float32], mu: float = 255.0) -> NDArray[np.float32]:
    """Compand, quantise to 8 bits (255 levels, zero exact) and expand, as G.711 μ-law."""
    # A telephone does not normalise: quiet speech gets coarser steps. Only scale
    # down peaks above full scale, so the codec never clips (peaks are restored).
    scale = max(float(np.max(np.abs(samples))) if samples.size else 0.0, 1.0)
    x = samples.astype(np.float64) / scale
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round(companded * 127.0) / 127.0
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu
    return (expanded * scale).astype(np.float32)


def _check_range(name: str, low: float, high: float, minimum: float = 0.0) -> None:
    if not minimum <= low <= high:
        raise ValueError(f"need {minimum:g} <= min_{name} <= max_{name}, got {low}, {high}")


class TelephoneChannel(BaseWaveformTransform):
    """A narrowband telephone line: 8 kHz, about 300–3400 Hz, 8-bit μ-law.

    The signal is resampled to ``telephone_rate`` (soxr, whose anti-aliasing filter
    removes everything above half that rate), band-limited by audiomentations'
    ``HighPassFilter`` and ``LowPassFilter`` with cutoffs drawn per call, optionally
    μ-law companded to 8 bits, and resampled back. Input at or below
    ``telephone_rate`` is filtered at its own rate. The output has the input's rate
    and exact length.

    Parameters
    ----------
    min_low_cutoff, max_low_cutoff : float
        Range of the high-pass cutoff, Hz.
    min_high_cutoff, max_high_cutoff : float
        Range of the low-pass cutoff, Hz (below ``telephone_rate / 2``).
    min_rolloff, max_rolloff : int
        Filter slopes, dB/octave (multiples of 6).
    telephone_rate : int
        Rate of the line, Hz.
    mu_law : bool
        Quantise to 8-bit μ-law (G.711) on the line.
    p : float
        Probability of applying the transform.
    """

    supports_multichannel = False

    def __init__(self, min_low_cutoff: float = 250.0, max_low_cutoff: float = 350.0,
                 min_high_cutoff: float = 3200.0, max_high_cutoff: float = 3600.0,
                 min_rolloff: int = 12, max_rolloff: int = 24, telephone_rate: int = 8000,
                 mu_law: bool = True, p: float = 0.5) -> None:
        super().__init__(p)
        _check_range("low_cutoff", min_low_cutoff, max_low_cutoff, minimum=1e-3)
        _check_range("high_cutoff", min_high_cutoff, max_high_cutoff)
        if not (max_low_cutoff < min_high_cutoff and max_high_cutoff < telephone_rate / 2):
            raise ValueError(f"need max_low_cutoff < min_high_cutoff and max_high_cutoff < "
                             f"telephone_rate / 2 = {telephone_rate / 2:g}")
        self.min_low_cutoff, self.max_low_cutoff = min_low_cutoff, max_low_cutoff
        self.min_high_cutoff, self.max_high_cutoff = min_high_cutoff, max_high_cutoff
        self.min_rolloff, self.max_rolloff = min_rolloff, max_rolloff
        self.telephone_rate = int(telephone_rate)
        self.mu_law = bool(mu_law)
        # Sub-transforms as in SevenBandParametricEQ: frozen, randomised by this one.
        self.high_pass = HighPassFilter(min_cutoff_freq=min_low_cutoff,
                                        max_cutoff_freq=max_low_cutoff, min_rolloff=min_rolloff,
                                        max_rolloff=max_rolloff, p=1.0)
        self.low_pass = LowPassFilter(min_cutoff_freq=min_high_cutoff,
                                      max_cutoff_freq=max_high_cutoff, min_rolloff=min_rolloff,
                                      max_rolloff=max_rolloff, p=1.0)
        self.high_pass.freeze_parameters()
        self.low_pass.freeze_parameters()

    def randomize_parameters(self, samples: NDArray[np.float32], sample_rate: int) -> None:
        """Draw the filters' cutoffs and slopes (from ``random`` and ``np.random``)."""
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            line_rate = min(self.telephone_rate, sample_rate)
            self.high_pass.randomize_parameters(samples, line_rate)
            self.low_pass.randomize_parameters(samples, line_rate)
            self.parameters["low_cutoff"] = self.high_pass.parameters["cutoff_freq"]
            self.parameters["high_cutoff"] = self.low_pass.parameters["cutoff_freq"]

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Send ``samples`` down the line and back; same rate and length."""
        line_rate = min(self.telephone_rate, sample_rate)
        line = _resample(samples, sample_rate, line_rate)
        line = self.low_pass(self.high_pass(line, line_rate), line_rate)
        if self.mu_law:
            line = _mu_law_8bit(line)
        return _fit_length(_resample(line, line_rate, sample_rate), samples.shape[-1])


class Mp3Codec(Mp3Compression):
    """MP3 encode–decode round trip (LAME via fast-mp3-augment) keeping rate and length.

    audiomentations' ``Mp3Compression`` with the fast-mp3-augment backend (output
    aligned with the input), made safe for any input: a rate MP3 does not support is
    resampled to the next MP3 rate and back, a clip shorter than the 100 ms the
    encoder needs is zero-padded and cropped back, and peaks above 1 are scaled down
    for the encoder and restored.

    Parameters
    ----------
    min_bitrate, max_bitrate : int
        Range of bitrates, kbps (one of ``Mp3Compression.SUPPORTED_BITRATES`` is
        drawn per call).
    quality : int
        LAME quality, 0 (best) to 9 (fastest).
    p : float
        Probability of applying the transform.
    """

    MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
    MIN_SECONDS = 0.1  # fast-mp3-augment raises TooShortAudio below this

    def __init__(self, min_bitrate: int = 16, max_bitrate: int = 64, quality: int = 7,
                 p: float = 0.5) -> None:
        if importlib.util.find_spec("fast_mp3_augment") is None:
            raise ImportError("the codec augmentation needs fast-mp3-augment "
                              "(pip install 'fast-mp3-augment>=0.2,<0.3')")
        super().__init__(min_bitrate=min_bitrate, max_bitrate=max_bitrate,
                         backend="fast-mp3-augment", preserve_delay=False, quality=quality,
                         p=p)

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Encode and decode ``samples``; same rate and length."""
        codec_rate = sample_rate if sample_rate in self.MP3_RATES else next(
            (rate for rate in self.MP3_RATES if rate >= sample_rate), self.MP3_RATES[-1])
        coded = _resample(samples, sample_rate, codec_rate)
        used = coded.size
        coded = _fit_length(coded, max(used, math.ceil(1.05 * self.MIN_SECONDS * codec_rate)))
        peak = float(np.max(np.abs(coded))) if coded.size else 0.0
        scale = peak if peak > 1.0 else 1.0
        decoded = super().apply(coded / np.float32(scale), codec_rate)
        decoded = np.asarray(decoded, dtype=np.float32)[:used] * np.float32(scale)
        return _fit_length(_resample(decoded, codec_rate, sample_rate), samples.shape[-1])


class SyntheticReverb(BaseWaveformTransform):
    """Reverberation by convolution with a synthetic room impulse response.

    The response is a direct-path impulse plus a tail of Gaussian noise whose
    amplitude decays by 60 dB in RT60 seconds (the tail has unit energy); the dry
    and wet parts are mixed as ``(1 - wet) * direct + wet * tail``. The output is cut
    to the input's length (the tail after the end is dropped) and scaled to the
    input's peak, so reverberation does not change the level.

    The RT60, the wet share and a seed for the tail's noise are drawn per call from
    ``random``, so the transform is as reproducible as the audiomentations ones and
    a frozen transform reuses the same room.

    Parameters
    ----------
    min_rt60, max_rt60 : float
        Range of the reverberation time, seconds.
    min_wet, max_wet : float
        Range of the reverberant share of the response, in [0, 1].
    p : float
        Probability of applying the transform.
    """

    supports_multichannel = False

    def __init__(self, min_rt60: float = 0.2, max_rt60: float = 0.8, min_wet: float = 0.2,
                 max_wet: float = 0.6, p: float = 0.5) -> None:
        super().__init__(p)
        _check_range("rt60", min_rt60, max_rt60, minimum=1e-3)
        _check_range("wet", min_wet, max_wet)
        if max_wet > 1.0:
            raise ValueError(f"max_wet must be <= 1, got {max_wet}")
        self.min_rt60, self.max_rt60 = min_rt60, max_rt60
        self.min_wet, self.max_wet = min_wet, max_wet

    def randomize_parameters(self, samples: NDArray[np.float32], sample_rate: int) -> None:
        """Draw RT60, wet share and the tail's seed (from ``random``)."""
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["rt60"] = random.uniform(self.min_rt60, self.max_rt60)
            self.parameters["wet"] = random.uniform(self.min_wet, self.max_wet)
            self.parameters["noise_seed"] = random.getrandbits(63)

    def impulse_response(self, sample_rate: int) -> NDArray[np.float64]:
        """The room response of the current parameters at ``sample_rate``.

        Parameters
        ----------
        sample_rate : int

        Returns
        -------
        np.ndarray, shape (round(rt60 * sample_rate),), float64
        """
        rt60, wet = self.parameters["rt60"], self.parameters["wet"]
        length = max(2, round(rt60 * sample_rate))
        t = np.arange(length) / sample_rate
        rng = np.random.default_rng(self.parameters["noise_seed"])
        tail = rng.standard_normal(length) * np.exp(-math.log(1000.0) * t / rt60)
        tail[0] = 0.0  # the direct path is the first sample alone
        tail /= np.sqrt(np.sum(tail**2))
        response = wet * tail
        response[0] = 1.0 - wet
        return response

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Reverberate ``samples``; same rate and length, same peak."""
        dry = samples.astype(np.float64)
        wet = fftconvolve(dry, self.impulse_response(sample_rate))[: dry.size]
        peak_in, peak_out = np.max(np.abs(dry)), np.max(np.abs(wet))
        if peak_out > 0:
            wet *= peak_in / peak_out
        return wet.astype(np.float32)


class ResampleChain(BaseWaveformTransform):
    """Resample through one or more lower rates and back (soxr), as transcoding does.

    Per call, ``min_steps`` to ``max_steps`` distinct rates are drawn from those of
    ``rates`` below the input rate and visited in the drawn order, then the signal
    is resampled back to the input rate and cropped or padded to its length. The
    lowest rate visited limits the bandwidth to half of it. When no rate is below
    the input rate, the signal is returned unchanged.

    Parameters
    ----------
    rates : sequence of int
        Intermediate rates, Hz.
    min_steps, max_steps : int
        Number of intermediate rates per call.
    quality : str
        soxr quality (``"HQ"``, ``"VHQ"``, ``"MQ"``, ``"LQ"``).
    p : float
        Probability of applying the transform.
    """

    supports_multichannel = False

    def __init__(self, rates: Sequence[int] = (8000, 11025, 12000), min_steps: int = 1,
                 max_steps: int = 2, quality: str = "HQ", p: float = 0.5) -> None:
        super().__init__(p)
        self.rates = tuple(int(rate) for rate in rates)
        if not self.rates or min(self.rates) <= 0:
            raise ValueError(f"rates must be positive sample rates, got {rates!r}")
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        self.min_steps, self.max_steps = int(min_steps), int(max_steps)
        self.quality = quality

    def randomize_parameters(self, samples: NDArray[np.float32], sample_rate: int) -> None:
        """Draw the chain of rates (from ``random``)."""
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            lower = sorted({rate for rate in self.rates if rate < sample_rate})
            steps = random.randint(min(self.min_steps, len(lower)),
                                   min(self.max_steps, len(lower)))
            self.parameters["chain"] = random.sample(lower, steps)

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Resample along the chain and back; same rate and length."""
        current, out = sample_rate, samples
        for rate in self.parameters["chain"]:
            out, current = _resample(out, current, rate, self.quality), rate
        return _fit_length(_resample(out, current, sample_rate, self.quality),
                           samples.shape[-1])


#: Recipes :class:`ChannelMix` picks from by default, in the order it applies them
#: (room, microphone, noise, then the transmission).
CHANNEL_RECIPES: tuple[str, ...] = ("reverb", "eq", "snr", "codec", "telephone", "resample")


class ChannelMix(SomeOf):
    """A random channel per call: ``min_transforms`` to ``max_transforms`` channel recipes.

    audiomentations' ``SomeOf`` over the named recipes (with their default parameters
    unless overridden); the chosen ones are applied in the order of ``recipes``.

    Parameters
    ----------
    recipes : sequence of str
        Names from :data:`RECIPES` (not ``channel``), in the order of application.
    min_transforms, max_transforms : int
        How many of them are applied per call.
    params : mapping, optional
        ``{name: {parameter: value}}`` overriding a recipe's defaults.
    p : float
        Probability of applying the mix.
    """

    def __init__(self, recipes: Sequence[str] = CHANNEL_RECIPES, min_transforms: int = 1,
                 max_transforms: int = 2,
                 params: Mapping[str, Mapping[str, Any]] | None = None, p: float = 1.0) -> None:
        names = tuple(recipes)
        unknown = [name for name in names if name not in RECIPES or name == "channel"]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"recipes must be distinct names from {available_recipes()} "
                             f"other than 'channel', got {list(names)}")
        if not 1 <= min_transforms <= max_transforms <= len(names):
            raise ValueError(f"need 1 <= min_transforms <= max_transforms <= {len(names)}, "
                             f"got {min_transforms}, {max_transforms}")
        params = dict(params or {})
        stray = sorted(set(params) - set(names))
        if stray:
            raise ValueError(f"parameters for {stray}, which are not in {list(names)}")
        children = []
        for name in names:
            cls, defaults = RECIPES[name]
            children.append(cls(**{**defaults, **params.get(name, {})}, p=1.0))
        super().__init__((int(min_transforms), int(max_transforms)), children, p=p)
        self.recipes = names
        self.min_transforms, self.max_transforms = int(min_transforms), int(max_transforms)
        self.params = params


#: Transform class and default parameters of each named recipe.
class SpeedPerturb(BaseWaveformTransform):
    """Speed perturbation: the recording played ``factor`` times as fast.

    The samples are taken as recorded at ``sample_rate * factor`` and resampled to
    ``sample_rate`` (soxr), so duration shrinks by ``factor`` while pitch and every
    formant rise by it: a new voice for the model, not only a new tempo (Ko et al.,
    "Audio augmentation for speech recognition", Interspeech 2015).

    Parameters
    ----------
    min_factor, max_factor : float
        Range of the speed factor, drawn uniformly per call.
    p : float
        Probability of applying the transform.
    """

    supports_multichannel = False

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1,
                 p: float = 0.5) -> None:
        super().__init__(p)
        if not 0 < min_factor <= max_factor:
            raise ValueError(f"need 0 < min_factor <= max_factor, got {min_factor}, "
                             f"{max_factor}")
        self.min_factor, self.max_factor = float(min_factor), float(max_factor)

    def randomize_parameters(self, samples: NDArray[np.float32], sample_rate: int) -> None:
        """Draw the speed factor (from ``random``)."""
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["factor"] = random.uniform(self.min_factor, self.max_factor)

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Resample as if recorded at ``factor`` times the rate; length changes."""
        factor = self.parameters["factor"]
        out = soxr.resample(samples, sample_rate * factor, sample_rate, quality="HQ")
        return np.asarray(out, dtype=np.float32)


class VocalTractLengthPerturb(BaseWaveformTransform):
    """Vocal tract length perturbation: the formants moved by ``alpha``, pitch and tempo kept.

    The frequency axis of the spectral envelope is warped with Jaitly and Hinton's
    piecewise-linear warp ("Vocal Tract Length Perturbation (VTLP) improves speech
    recognition", ICML 2013 workshop): ``f -> alpha * f`` up to a knee below
    ``boundary`` times the Nyquist frequency, then the straight line that maps the
    Nyquist frequency to itself. Per STFT frame (``n_fft`` 512 and hop 128 at 16 kHz,
    the same durations at other rates) the envelope is the cepstrally smoothed log
    magnitude (quefrencies up to ``lifter_ms``), the warped envelope is interpolated
    linearly along frequency, and the frame is multiplied by their ratio, so the
    harmonics (the pitch) and the phase stay where they were and only the formants
    move. (Warping the whole magnitude would move the harmonics too: a 130 Hz voice
    comes out 5-6 % off, as speed perturbation does on purpose.) The inverse STFT
    (librosa) gives the input's length and rate. Nothing is clipped: an output whose
    peak exceeds 1 (or the input's peak, when that is higher) is scaled down to it.

    Parameters
    ----------
    min_alpha, max_alpha : float
        Range of the warp factor, drawn uniformly per call (above 1: formants up, a
        shorter vocal tract).
    boundary : float
        Where the warp's linear part ends, as a fraction of the Nyquist frequency
        (0.6: 4.8 kHz at 16 kHz, Jaitly and Hinton's value).
    lifter_ms : float
        Longest quefrency kept in the envelope, ms (below the period of a 500 Hz
        voice, so the envelope leaves the harmonics out).
    p : float
        Probability of applying the transform.
    """

    supports_multichannel = False
    N_FFT_16K, HOP_16K = 512, 128

    def __init__(self, min_alpha: float = 0.9, max_alpha: float = 1.1, boundary: float = 0.6,
                 lifter_ms: float = 1.5, p: float = 0.5) -> None:
        super().__init__(p)
        _check_range("alpha", min_alpha, max_alpha, minimum=1e-3)
        if not 0 < boundary < 1:
            raise ValueError(f"need 0 < boundary < 1, got {boundary}")
        if lifter_ms <= 0:
            raise ValueError(f"lifter_ms must be > 0, got {lifter_ms}")
        self.min_alpha, self.max_alpha = float(min_alpha), float(max_alpha)
        self.boundary, self.lifter_ms = float(boundary), float(lifter_ms)

    def randomize_parameters(self, samples: NDArray[np.float32], sample_rate: int) -> None:
        """Draw the warp factor (from ``random``)."""
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["alpha"] = random.uniform(self.min_alpha, self.max_alpha)

    def warp(self, freqs: NDArray[np.floating], alpha: float,
             nyquist: float) -> NDArray[np.float64]:
        """Where the warp sends each frequency (Jaitly and Hinton's piecewise-linear map).

        Parameters
        ----------
        freqs : np.ndarray
            Frequencies, Hz, in ``[0, nyquist]``.
        alpha : float
            Warp factor.
        nyquist : float
            Half the sample rate, Hz (mapped to itself, as is 0).

        Returns
        -------
        np.ndarray of float64, the shape of ``freqs``
            Monotonic in ``freqs``: ``alpha * f`` below the knee
            ``boundary * nyquist * min(alpha, 1) / alpha``, linear to ``nyquist`` above.
        """
        freqs = np.asarray(freqs, dtype=np.float64)
        edge = self.boundary * nyquist * min(alpha, 1.0)
        knee = edge / alpha
        above = nyquist - (nyquist - edge) / (nyquist - knee) * (nyquist - freqs)
        return np.where(freqs <= knee, alpha * freqs, above)

    def apply(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Move the spectral envelope by the drawn warp; same rate and length."""
        import librosa

        scale = sample_rate / 16_000
        n_fft = min(2 * round(self.N_FFT_16K * scale / 2), 2 * (samples.shape[-1] // 2))
        if n_fft < 8:
            return samples
        hop = max(1, min(round(self.HOP_16K * scale), n_fft // 4))
        spectrum = librosa.stft(samples, n_fft=n_fft, hop_length=hop)
        # Envelope: the log magnitude's cepstrum cut at lifter_ms, back to frequency.
        cepstrum = np.fft.irfft(np.log(np.abs(spectrum) + 1e-8), n=n_fft, axis=0)
        cut = max(1, min(round(self.lifter_ms * sample_rate / 1000), n_fft // 2 - 1))
        cepstrum[cut + 1:n_fft - cut] = 0.0
        envelope = np.fft.rfft(cepstrum, axis=0).real
        # The warped envelope at bin frequency g is the envelope at warp^-1(g).
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        source = np.interp(freqs, self.warp(freqs, self.parameters["alpha"], sample_rate / 2),
                           freqs) * n_fft / sample_rate
        low = np.clip(np.floor(source).astype(int), 0, len(freqs) - 2)
        weight = (source - low)[:, None]
        warped = (1 - weight) * envelope[low] + weight * envelope[low + 1]
        out = librosa.istft(spectrum * np.exp(warped - envelope), n_fft=n_fft, hop_length=hop,
                            length=samples.shape[-1])
        ceiling = max(1.0, float(np.max(np.abs(samples))))
        peak = float(np.max(np.abs(out)))
        if peak > ceiling:
            out *= ceiling / peak
        return out.astype(np.float32)


class SpecAugmentMask(Compose):
    """SpecAugment-style masking done on the waveform: time spans silenced, a band removed.

    SpecAugment (Park et al., Interspeech 2019) zeroes random runs of frames and of
    mel channels in the log-mel spectrogram. Here the same is done before the
    encoder's front end, with audiomentations, in the paper's order: one
    ``BandStopFilter`` band whose centre is drawn uniformly on the mel scale in
    ``[min_center_freq, max_center_freq]`` and whose width is a fraction of its
    centre (constant-Q, as mel channels are above 1 kHz), then ``n_time_masks``
    ``TimeMask`` spans, each drawn uniformly in ``[min_time_part, max_time_part]`` of
    the signal's duration and silenced with ``fade`` second fades (no clicks). Each
    mask is applied with its own fixed probability; the whole with ``p``. Length and
    rate are kept.

    The defaults scale the paper's LibriSpeech policies to utterances of about 3 s:
    two time masks (LD: mT = 2) of at most T = 100 frames, 1 s of a 12.3 s mean
    LibriSpeech utterance, i.e. 7.5 % of the duration each (at most 15 % in all);
    one frequency mask (LB: mF = 1) of 0.2-0.5 times its centre, about 5-13 of
    Whisper's 80 mel channels above 1 kHz (the paper draws 0-27); every mask applied
    to every copy, as in the paper.

    Parameters
    ----------
    n_time_masks : int
        Number of time spans silenced.
    min_time_part, max_time_part : float
        Range of each span, as a fraction of the duration.
    fade : float
        Fade in and out at each span's edges, seconds (0: hard edges).
    min_center_freq, max_center_freq : float
        Range of the removed band's centre, Hz.
    min_bandwidth_fraction, max_bandwidth_fraction : float
        Range of the band's width, as a fraction of its centre.
    min_rolloff, max_rolloff : int
        Slopes of the band-stop filter, dB/octave (multiples of 6).
    p_time, p_freq : float
        Probability of applying each time mask, and the band-stop.
    p : float
        Probability of applying the masking at all.
    """

    def __init__(self, n_time_masks: int = 2, min_time_part: float = 0.0,
                 max_time_part: float = 0.075, fade: float = 0.005,
                 min_center_freq: float = 150.0, max_center_freq: float = 4000.0,
                 min_bandwidth_fraction: float = 0.2, max_bandwidth_fraction: float = 0.5,
                 min_rolloff: int = 24, max_rolloff: int = 48, p_time: float = 1.0,
                 p_freq: float = 1.0, p: float = 1.0) -> None:
        if isinstance(n_time_masks, bool) or not isinstance(n_time_masks, int) \
                or n_time_masks < 0:
            raise ValueError(f"n_time_masks must be an int >= 0, got {n_time_masks!r}")
        _check_range("time_part", min_time_part, max_time_part)
        if max_time_part * n_time_masks > 1.0:
            raise ValueError(f"{n_time_masks} time masks of up to {max_time_part:g} of the "
                             "duration could silence all of it")
        _check_range("center_freq", min_center_freq, max_center_freq, minimum=1e-3)
        _check_range("bandwidth_fraction", min_bandwidth_fraction, max_bandwidth_fraction,
                     minimum=1e-3)
        if max_bandwidth_fraction >= 2.0:
            raise ValueError("max_bandwidth_fraction must be < 2 (the band's lower edge "
                             f"above 0 Hz), got {max_bandwidth_fraction}")
        for name, value in (("p_time", p_time), ("p_freq", p_freq)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        # The paper's order: the frequency mask, then the time masks (so the silenced
        # spans stay exactly silent, not refilled by the filter's ringing).
        band = BandStopFilter(min_center_freq=min_center_freq, max_center_freq=max_center_freq,
                              min_bandwidth_fraction=min_bandwidth_fraction,
                              max_bandwidth_fraction=max_bandwidth_fraction,
                              min_rolloff=min_rolloff, max_rolloff=max_rolloff,
                              zero_phase=False, p=p_freq)
        spans = [TimeMask(min_band_part=min_time_part, max_band_part=max_time_part,
                          fade_duration=fade, mask_location="random", p=p_time)
                 for _ in range(n_time_masks)]
        super().__init__([band, *spans], p=p, shuffle=False)

    def __call__(self, samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Mask ``samples``; same rate, length and dtype."""
        out = super().__call__(samples=samples, sample_rate=sample_rate)
        return np.asarray(out, dtype=np.float32)


RECIPES: dict[str, tuple[type, dict[str, Any]]] = {
    "noise": (AddGaussianNoise, {"min_amplitude": 0.001, "max_amplitude": 0.015}),
    "shift": (Shift, {"min_shift": -0.25, "max_shift": 0.25, "shift_unit": "seconds",
                      "rollover": True}),
    "pitch": (PitchShift, {"min_semitones": -2.0, "max_semitones": 2.0}),
    "gain": (Gain, {"min_gain_db": 20 * math.log10(1.5), "max_gain_db": 20 * math.log10(3.0)}),
    "stretch": (TimeStretch, {"min_rate": 0.8, "max_rate": 1.25,
                              "leave_length_unchanged": False}),
    "speed": (SpeedPerturb, {}),
    "vtlp": (VocalTractLengthPerturb, {}),
    "mask": (SpecAugmentMask, {}),
    "telephone": (TelephoneChannel, {}),
    "eq": (SevenBandParametricEQ, {"min_gain_db": -8.0, "max_gain_db": 8.0}),
    "codec": (Mp3Codec, {"min_bitrate": 16, "max_bitrate": 64}),
    "reverb": (SyntheticReverb, {"min_rt60": 0.2, "max_rt60": 0.8}),
    "snr": (AddGaussianSNR, {"min_snr_db": 5.0, "max_snr_db": 30.0}),
    "resample": (ResampleChain, {"rates": (8000, 11025, 12000)}),
    "channel": (ChannelMix, {}),
}

Recipe = str | Sequence[str]


def available_recipes() -> list[str]:
    """Names of the single transforms a recipe combines, sorted."""
    return sorted(RECIPES)


def parse_recipe(recipe: Recipe) -> tuple[str, ...]:
    """Split a recipe into transform names, checking each.

    Parameters
    ----------
    recipe : str or sequence of str
        ``"noise"``, ``"noise+shift"`` or ``["pitch", "noise"]`` (list items may also
        contain ``+``).

    Returns
    -------
    tuple of str
        Transform names in the order they are applied.

    Raises
    ------
    ConfigError
        Empty recipe or unknown name.
    """
    parts = [recipe] if isinstance(recipe, str) else list(recipe)
    names = tuple(n.strip().lower() for part in parts for n in str(part).split("+") if n.strip())
    if not names:
        raise ConfigError(f"empty augmentation recipe {recipe!r}; "
                          f"use names from {available_recipes()}")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; known: "
                          f"{', '.join(available_recipes())} (combine with '+')")
    return names


def _seed_int(*parts: Any) -> int:
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _augmented_keys(path: str, identity: str, copies: int) -> list[str] | None:
    """Cache keys of a file's augmented copies: its identity, the augmentation's, the copy."""
    try:
        base = file_key(path)
    except OSError:
        return None  # load_audio names the missing file
    return [hashlib.sha256(f"{base}\0{identity}\0{copy}".encode()).hexdigest()[:32]
            for copy in range(copies)]


class Augmenter:
    """A seeded chain of audiomentations transforms: ``augmenter(signal, rate)``.

    Build it with :func:`make_augmenter`.

    Parameters
    ----------
    names : tuple of str
        Transform names (see :data:`RECIPES`), applied in order.
    p : float
        Probability that each transform is applied.
    seed : int
        Seed of the augmenter's private random state.
    params : mapping, optional
        ``{name: {parameter: value}}`` overriding a transform's defaults, e.g.
        ``{"pitch": {"min_semitones": -4, "max_semitones": 4}}``.
    """

    def __init__(self, names: Sequence[str], p: float = 1.0, seed: int = 0,
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.names = parse_recipe(list(names))
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"augmentation probability p must be in [0, 1], got {p}")
        self.p = float(p)
        params = dict(params or {})
        stray = sorted(set(params) - set(self.names))
        if stray:
            raise ConfigError(f"augmentation parameters for {stray}, which are not in the "
                              f"recipe {'+'.join(self.names)}")
        transforms = []
        for name in self.names:
            cls, defaults = RECIPES[name]
            try:
                transforms.append(cls(**{**defaults, **params.get(name, {})}, p=self.p))
            except (TypeError, ValueError, AssertionError) as error:
                raise ConfigError(f"augmentation {name!r}: {error}") from None
        self.transform = Compose(transforms, p=1.0, shuffle=False)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the private random state, as if built with ``seed``.

        Parameters
        ----------
        seed : int
        """
        python_rng = random.Random(seed)
        numpy_rng = np.random.RandomState(_seed_int("numpy", seed) % 2**32)
        self._python_state = python_rng.getstate()
        self._numpy_state = numpy_rng.get_state()

    def __call__(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        """Augment a mono signal.

        Parameters
        ----------
        signal : np.ndarray, shape (n,)
            Mono samples.
        sample_rate : int
            Rate of ``signal`` in Hz (kept).

        Returns
        -------
        np.ndarray, shape (n,) (other length for ``stretch``), float32
        """
        samples = np.ascontiguousarray(signal, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"expected a non-empty mono signal, got shape {samples.shape}")
        saved_python, saved_numpy = random.getstate(), np.random.get_state()
        random.setstate(self._python_state)
        np.random.set_state(self._numpy_state)
        try:
            out = self.transform(samples=samples, sample_rate=int(sample_rate))
        finally:
            self._python_state, self._numpy_state = random.getstate(), np.random.get_state()
            random.setstate(saved_python)
            np.random.set_state(saved_numpy)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Augmenter({'+'.join(self.names)!r}, p={self.p:g})"


def make_augmenter(names: Recipe, p: float = 1.0, seed: int = 0,
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> Augmenter:
    """Build a seeded augmenter from a recipe.

    Parameters
    ----------
    names : str or sequence of str
        ``"noise"``, ``"noise+shift"``, ``["pitch", "noise"]``...
    p : float
        Probability that each transform is applied (1: always).
    seed : int
        Seed; equal seeds give equal outputs for equal inputs.
    params : mapping, optional
        Per-transform parameter overrides, ``{"noise": {"max_amplitude": 0.03}}``.

    Returns
    -------
    Augmenter
        ``augmenter(signal, sample_rate) -> signal``.

    Examples
    --------
    >>> augment = make_augmenter("noise+shift", seed=1)
    >>> augment(np.ones(16000, dtype=np.float32) * 0.1, 16000).shape
    (16000,)
    """
    return Augmenter(parse_recipe(names), p=p, seed=seed, params=params)


def _selected_files(paths: Sequence[str | Path], labels: Sequence[Any], copies: int,
                    only_classes: Iterable[Any] | None) -> Iterator[tuple[int, str, Any]]:
    """``(position, path, label)`` of the files to augment (of the chosen classes)."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ConfigError(f"copies must be an int >= 0, got {copies!r}")
    paths, labels = list(paths), list(labels)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    wanted = None if only_classes is None else set(only_classes)
    for position, (path, label) in enumerate(zip(paths, labels, strict=True)):
        if copies and (wanted is None or label in wanted):
            yield position, str(path), label


def _augmented_copy(augmenter: Augmenter, seed: int, path: str, copy: int,
                    signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Copy number ``copy`` of a file's signal: a pure function of these arguments."""
    augmenter.reseed(_seed_int(seed, "+".join(augmenter.names), path, copy))
    return augmenter(signal, sample_rate)


def _augmented_items(
    paths: Sequence[str | Path],
    labels: Sequence[Any],
    recipe: Recipe,
    copies: int,
    only_classes: Iterable[Any] | None,
    seed: int,
    sample_rate: int,
    p: float,
    params: Mapping[str, Mapping[str, Any]] | None,
) -> Iterator[tuple[int, str, Any, np.ndarray]]:
    selected = _selected_files(paths, labels, copies, only_classes)
    augmenter = make_augmenter(recipe, p=p, seed=seed, params=params)
    for position, path, label in selected:
        signal = load_audio(path, sample_rate)
        for copy in range(copies):
            yield position, path, label, _augmented_copy(augmenter, seed, path, copy, signal,
                                                         sample_rate)


def augment_table(
    paths: Sequence[str | Path],
    labels: Sequence[Any],
    recipe: Recipe,
    copies: int = 1,
    only_classes: Iterable[Any] | None = None,
    seed: int = 0,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    p: float = 1.0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[tuple[str, Any, np.ndarray]]:
    """Yield ``copies`` augmented versions of each (selected) file.

    Files are read lazily, one at a time, with :func:`emovox.audio.load_audio`;
    files whose label is not in ``only_classes`` are not read at all.

    Parameters
    ----------
    paths : sequence of str or Path
        Audio files (training files only).
    labels : sequence
        Label of each file.
    recipe : str or sequence of str
        See :func:`parse_recipe`.
    copies : int
        Augmented versions per file.
    only_classes : iterable, optional
        Augment only files with these labels (e.g. the minority class of a
        2-class task, to rebalance it); default: all.
    seed : int
        Copy ``c`` of file ``path`` is seeded from ``(seed, recipe, path, c)``.
    sample_rate : int
        Rate the audio is read and augmented at.
    p : float
        Probability that each transform is applied.
    params : mapping, optional
        Per-transform parameter overrides (see :func:`make_augmenter`).

    Yields
    ------
    source_path : str
    label
    signal : np.ndarray, float32, at ``sample_rate``
    """
    for _, path, label, signal in _augmented_items(paths, labels, recipe, copies, only_classes,
                                                   seed, sample_rate, p, params):
        yield path, label, signal


class AugmentedFeatures(NamedTuple):
    """Extra training rows computed from augmented audio.

    Attributes
    ----------
    features : np.ndarray, shape (m, *extractor.output_shape), float32
    labels : np.ndarray, shape (m,)
        Label of each row (of its source file).
    source : np.ndarray of int, shape (m,)
        Position of each row's source file in ``train_paths`` (to look up its
        speaker, e.g. ``groups=train_speakers[source]``).
    """

    features: np.ndarray
    labels: np.ndarray
    source: np.ndarray


def augmented_training_features(
    extractor: FeatureExtractor | str | Mapping[str, Any],
    train_paths: Sequence[str | Path],
    train_labels: Sequence[Any],
    recipe: Recipe,
    copies: int = 1,
    only_classes: Iterable[Any] | None = None,
    seed: int = 0,
    p: float = 1.0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> AugmentedFeatures:
    """Features of augmented copies of a fold's **training** files, to add to its training set.

    Each training file (of the chosen classes) is read with
    :func:`emovox.audio.load_audio` at the extractor's rate, augmented ``copies``
    times, and its features computed with ``extractor.extract_signal`` (which applies
    the extractor's offset/duration window). Copies whose audio the extractor refuses
    (e.g. a stretch leaving too little audio after the offset) are skipped, with one
    warning giving the count.

    A copy is a pure function of (file, recipe, params, p, seed, copy number), so with
    ``cache_dir`` its features are cached like a file's: folds that share training
    files, and later runs, do not augment and extract them again.

    Parameters
    ----------
    extractor : FeatureExtractor, name or spec
        The fold's feature extractor.
    train_paths, train_labels : sequences
        The training files of the fold and their labels. Never pass test files.
    recipe, copies, only_classes, seed, p, params
        As in :func:`augment_table`.
    cache_dir : None, "default", str or Path
        Feature cache (see :func:`~emovox.features.cache.resolve_cache_dir`);
        ``None``: no cache.
    progress : bool
        Show a tqdm bar over the training files.

    Returns
    -------
    AugmentedFeatures
        ``(features, labels, source)``; empty arrays when nothing was augmented.

    Examples
    --------
    >>> X_aug, y_aug, source = augmented_training_features(  # doctest: +SKIP
    ...     "mfcc_stats", paths[train], y[train], "noise+shift", copies=2)
    >>> model.fit(np.concatenate([X[train], X_aug]), np.concatenate([y[train], y_aug]),
    ...           groups=np.concatenate([speakers[train], speakers[train][source]]),
    ...           augmented=np.r_[np.zeros(len(train), bool), np.ones(len(y_aug), bool)])
    """
    extractor = get_extractor(extractor)
    selected = list(_selected_files(train_paths, train_labels, copies, only_classes))
    augmenter = make_augmenter(recipe, p=p, seed=seed, params=params)
    recipe_name = "+".join(augmenter.names)
    identity = json.dumps({"recipe": recipe_name, "p": p, "seed": seed,
                           "params": params or {}}, sort_keys=True, default=str)
    root = resolve_cache_dir(cache_dir)
    cache = FeatureCache(root) if root is not None else None

    rows, labels, sources, failed = [], [], [], 0
    for position, path, label in tqdm(selected, desc=f"augment {recipe_name}", unit="file",
                                      leave=False, disable=not progress):
        keys = _augmented_keys(path, identity, copies) if cache is not None else None
        cached = ([cache.load(path, extractor, key) for key in keys]
                  if cache is not None and keys is not None else [None] * copies)
        signal = None if all(c is not None for c in cached) else load_audio(path,
                                                                           extractor.sample_rate)
        for copy in range(copies):
            features = cached[copy]
            if features is None:
                try:
                    features = extractor.extract_signal(
                        _augmented_copy(augmenter, seed, path, copy, signal,
                                        extractor.sample_rate), extractor.sample_rate)
                except AudioError:
                    failed += 1
                    continue
                if cache is not None and keys is not None:
                    cache.save(path, extractor, features, keys[copy])
            rows.append(features)
            labels.append(label)
            sources.append(position)
    if failed:
        warnings.warn(f"{failed} augmented signal(s) could not be featurised and were skipped",
                      UserWarning, stacklevel=2)
    shape = tuple(extractor.output_shape)
    features = (np.stack(rows).astype(np.float32, copy=False) if rows
                else np.zeros((0, *shape), dtype=np.float32))
    label_array = np.asarray(list(train_labels))
    label_values = (np.asarray(labels, dtype=label_array.dtype) if labels
                    else label_array[:0])
    return AugmentedFeatures(features, label_values, np.asarray(sources, dtype=int))
