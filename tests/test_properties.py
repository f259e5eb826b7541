"""Property-based tests (hypothesis) of decoding, signal checks, resampling and features.

Every test draws a fixed sequence of examples (``derandomize=True``, no example
database), so a CI run is deterministic; ``max_examples`` stays small so the file runs
in seconds. Signals are synthesised from a few drawn parameters (kind, seed, level,
offset, length, channels, rate) rather than drawn sample by sample, which keeps
examples cheap while covering silence, offsets, clipping-level peaks and noise.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emovox.audio import (
    MIN_DURATION,
    SILENCE_RMS_DB,
    check_signal,
    is_silent,
    load_audio,
    resample,
)
from emovox.errors import AudioError
from emovox.features import FeatureExtractor, get_extractor

#: Deterministic, small and untimed (tests never assert wall-clock time).
PROPERTY = settings(max_examples=30, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
RATES = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000]
#: Every subtype soundfile writes to WAV, with its quantisation step (full scale 1).
SUBTYPES = {"PCM_U8": 2.0**-7, "PCM_16": 2.0**-15, "PCM_24": 2.0**-23,
            "PCM_32": 2.0**-31, "FLOAT": 2.0**-24, "DOUBLE": 2.0**-24}
KINDS = ["noise", "sine", "square", "constant", "spikes"]


@st.composite
def signals(draw: st.DrawFn, rates: list[int] = RATES, max_channels: int = 6,
            min_seconds: float = MIN_DURATION) -> tuple[np.ndarray, int]:
    """A ``(frames, channels)`` float64 signal in [-0.99, 0.99] and its rate."""
    rate = draw(st.sampled_from(rates))
    shortest = max(1, math.ceil(min_seconds * rate))
    frames = draw(st.integers(shortest, shortest + 4000))
    channels = draw(st.integers(1, max_channels))
    kind = draw(st.sampled_from(KINDS))
    level = draw(st.sampled_from([0.0, 1e-6, 1e-4, 3e-3, 0.1, 0.5, 0.99]))
    offset = draw(st.sampled_from([0.0, 0.001, -0.3, 0.5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(frames)[:, None] / rate
    if kind == "noise":
        x = rng.standard_normal((frames, channels))
    elif kind == "sine":
        x = np.sin(2 * np.pi * rng.uniform(20, rate / 2) * t + rng.uniform(0, 6, channels))
    elif kind == "square":
        x = np.sign(np.sin(2 * np.pi * rng.uniform(1, 500) * t + rng.uniform(0, 6, channels)))
    elif kind == "spikes":
        x = np.zeros((frames, channels))
        x[rng.integers(0, frames, 3)] = 1.0
    else:
        x = np.ones((frames, channels))
    x = offset + level * x / max(1e-12, float(np.max(np.abs(x))))
    return np.clip(x, -0.99, 0.99), rate


def arbitrary_arrays() -> st.SearchStrategy[np.ndarray]:
    """Arrays of any common dtype and 0-3 dimensions, NaN, inf and extremes included."""
    dtypes = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(),
                       hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes(),
                       hnp.complex_number_dtypes())
    return hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                max_side=40))


# ----------------------------------------------------------------------------- decoding


@PROPERTY
@given(drawn=signals(), subtype=st.sampled_from(list(SUBTYPES)))
def test_written_audio_reads_back_as_its_channel_mean(drawn: tuple[np.ndarray, int],
                                                      subtype: str) -> None:
    """Any valid array written with soundfile (any subtype, 1-6 channels) reads back as
    the mean of its channels within a quantisation step, or is refused as silent when
    quantisation may have left no sound."""
    data, rate = drawn
    step = max(SUBTYPES[subtype], 2.0**-23)  # load_audio returns float32
    expected = data.mean(axis=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drawn.wav"
        sf.write(path, data, rate, subtype=subtype)
        try:
            decoded = load_audio(path, sample_rate=rate)
        except AudioError as error:
            assert error.problem.startswith("silent"), str(error)
            # Quantisation moves a frame's RMS (DC removed) by at most half a step.
            limit = 10 ** (SILENCE_RMS_DB / 20) + step / 2
            assert is_silent(expected, rate, threshold_db=20 * math.log10(limit))
            return
    assert decoded.dtype == np.float32 and decoded.shape == expected.shape
    np.testing.assert_allclose(decoded, expected, atol=2 * step + 1e-6, rtol=0)


@PROPERTY
@given(signal=arbitrary_arrays(),
       sample_rate=st.integers(-10, 10**7),
       min_duration=st.sampled_from([0.0, 1e-3, MIN_DURATION]),
       max_duration=st.sampled_from([None, 1e-3, 1.0]))
def test_check_signal_raises_only_audio_errors(signal: np.ndarray, sample_rate: int,
                                               min_duration: float,
                                               max_duration: float | None) -> None:
    """Whatever the array, check_signal returns finite mono float32 or an AudioError."""
    try:
        out = check_signal(signal, sample_rate, "drawn", min_duration=min_duration,
                           max_duration=max_duration)
    except AudioError as error:
        assert str(error).startswith("drawn: ") and "\n" not in str(error)
        return
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags.c_contiguous
    assert out.size and np.all(np.isfinite(out))
    assert not is_silent(out, sample_rate)


@PROPERTY
@given(drawn=signals(max_channels=2, min_seconds=0.0))
def test_check_signal_accepts_exactly_the_sound(drawn: tuple[np.ndarray, int]) -> None:
    """Valid samples are refused only for being too short (or looking channels-first),
    or silent, and silence is what :func:`is_silent` says of the channel mean."""
    data, rate = drawn
    mono = data.mean(axis=1)
    try:
        out = check_signal(data, rate, "drawn")
    except AudioError as error:
        assert error.problem.startswith(("too short", "silent", "array shape")), str(error)
        if error.problem.startswith("silent"):
            assert is_silent(mono.astype(np.float32), rate)
        return
    np.testing.assert_allclose(out, mono, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- resampling


@PROPERTY
@given(signal=hnp.arrays(np.float32, st.integers(1, 5000),
                         elements=st.floats(-1, 1, width=32)),
       orig=st.one_of(st.sampled_from([*RATES, 96_000]), st.integers(1000, 200_000)),
       target=st.sampled_from([8_000, 16_000, 22_050, 48_000]))
def test_resample_length_and_finiteness(signal: np.ndarray, orig: int, target: int) -> None:
    """Resampling keeps the duration (within a sample) and never makes NaN or inf."""
    out = resample(signal, orig, target)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - signal.size * target / orig) <= 1
    assert np.all(np.isfinite(out))


# -------------------------------------------------------------------- feature extraction


@pytest.fixture(scope="module")
def extractors() -> dict[str, FeatureExtractor]:
    """Two cheap extractors: MFCC statistics (any length) and a fixed-length sequence."""
    return {"mfcc_stats": get_extractor({"name": "mfcc_stats"}),
            "mfcc_sequence": get_extractor({"name": "mfcc_sequence", "n_mfcc": 13,
                                            "duration": 0.5})}


@pytest.mark.parametrize("name", ["mfcc_stats", "mfcc_sequence"])
def test_features_are_finite_with_a_fixed_shape(extractors: dict[str, FeatureExtractor],
                                                name: str) -> None:
    extractor = extractors[name]

    @PROPERTY
    @given(drawn=signals())
    def check(drawn: tuple[np.ndarray, int]) -> None:
        data, rate = drawn
        try:
            mono = check_signal(data, rate)
        except AudioError:
            return  # silent: the extractor refuses it the same way (tested above)
        try:
            features = extractor.extract_signal(data, rate)
        except AudioError as error:
            # Faint sound only above the model's Nyquist frequency, or only after the
            # analysed window: what is analysed is silence, refused as such.
            assert error.problem.startswith("silent"), str(error)
            analysed = resample(mono, rate, extractor.sample_rate)
            if extractor.duration is not None:
                analysed = analysed[:round(extractor.duration * extractor.sample_rate)]
            assert is_silent(analysed, extractor.sample_rate)
            return
        assert features.dtype == np.float32 and features.shape == extractor.output_shape
        assert np.all(np.isfinite(features))

    check()
