"""Augmentation recipes: they change audio, keep its shape, are seeded, touch training only."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.signal import welch

import emovox.augment as augment
from emovox.audio import load_audio
from emovox.augment import (
    CHANNEL_RECIPES,
    augment_table,
    augmented_training_features,
    available_recipes,
    make_augmenter,
    parse_recipe,
)
from emovox.errors import ConfigError
from emovox.features import get_extractor

SR = 16_000


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    from conftest import tone_signal

    return tone_signal(duration=0.5, sample_rate=SR)


@pytest.fixture
def corpus(tmp_path, write_tone):
    """Six short files: train (4, two classes) and test (2)."""
    files = {}
    for i, (split, label) in enumerate([("train", "angry"), ("train", "neutral"),
                                        ("train", "angry"), ("train", "neutral"),
                                        ("test", "angry"), ("test", "neutral")]):
        path = write_tone(tmp_path / split / f"{i}.wav", duration=0.5,
                          frequency=120.0 + 20 * i, seed=i)
        files.setdefault(split, []).append((str(path), label))
    return {split: ([p for p, _ in rows], [lab for _, lab in rows])
            for split, rows in files.items()}


@pytest.fixture
def load_spy(monkeypatch):
    """Record every path augment.py reads."""
    calls: list[str] = []

    def spy(path, *args, **kwargs):
        calls.append(str(path))
        return load_audio(path, *args, **kwargs)

    monkeypatch.setattr(augment, "load_audio", spy)
    return calls


def test_recipes_are_named():
    assert available_recipes() == ["channel", "codec", "eq", "gain", "mask", "noise",
                                   "pitch", "resample", "reverb", "shift", "snr", "speed",
                                   "stretch", "telephone", "vtlp"]
    assert parse_recipe("noise+shift") == ("noise", "shift")
    assert parse_recipe(["pitch", "noise"]) == ("pitch", "noise")
    assert parse_recipe(["Pitch + noise", "gain"]) == ("pitch", "noise", "gain")
    assert parse_recipe("reverb+telephone") == ("reverb", "telephone")
    with pytest.raises(ConfigError, match="unknown augmentation"):
        parse_recipe("echo")
    with pytest.raises(ConfigError, match="empty"):
        parse_recipe([])


@pytest.mark.parametrize("recipe", ["noise", "shift", "pitch", "gain", "noise+shift",
                                    ["pitch", "noise"]])
def test_augmentation_changes_audio_but_keeps_length(signal, recipe):
    out = make_augmenter(recipe, seed=3)(signal, SR)
    assert out.dtype == np.float32
    assert out.shape == signal.shape
    assert not np.allclose(out, signal)
    assert np.all(np.isfinite(out))


def test_gain_is_the_dynamic_change_of_1_5_to_3_times(signal):
    for seed in range(5):
        out = make_augmenter("gain", seed=seed)(signal, SR)
        ratio = np.abs(out).max() / np.abs(signal).max()
        assert 1.5 - 1e-4 <= ratio <= 3.0 + 1e-4


def test_stretch_changes_the_length(signal):
    out = make_augmenter("stretch", seed=0)(signal, SR)
    assert out.ndim == 1 and out.size != signal.size
    assert 0.75 * signal.size <= out.size <= 1.3 * signal.size


@pytest.mark.parametrize("seed", range(3))
def test_speed_moves_pitch_and_length_together(seed):
    """A voice played f times as fast: a 500 Hz tone is at f x 500 Hz, 1/f as long."""
    rate = 16_000
    t = np.arange(2 * rate) / rate
    x = (0.3 * np.sin(2 * np.pi * 500.0 * t)).astype(np.float32)
    augmenter = make_augmenter("speed", seed=seed)
    out = augmenter(x, rate)
    factor = x.size / out.size
    assert 0.9 - 1e-3 <= factor <= 1.1 + 1e-3 and abs(factor - 1) > 1e-4
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak = np.fft.rfftfreq(out.size, 1 / rate)[np.argmax(spectrum)]
    assert abs(peak - 500.0 * factor) < 2.0


def test_seeds_reproduce_and_global_random_state_is_untouched(signal):
    random.seed(123)
    np.random.seed(123)
    expected_python, expected_numpy = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    a = make_augmenter("pitch+noise+shift", seed=7)(signal, SR)
    b = make_augmenter("pitch+noise+shift", seed=7)(signal, SR)
    c = make_augmenter("pitch+noise+shift", seed=8)(signal, SR)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert random.random() == expected_python
    assert np.random.random() == expected_numpy


def test_probability_zero_leaves_audio_unchanged(signal):
    assert np.array_equal(make_augmenter("noise+gain", p=0.0)(signal, SR), signal)


def test_parameter_overrides(signal):
    loud = make_augmenter("noise", seed=1, params={"noise": {"min_amplitude": 0.2,
                                                             "max_amplitude": 0.2}})
    assert np.std(loud(signal, SR) - signal) == pytest.approx(0.2, rel=0.1)
    with pytest.raises(ConfigError, match="not in the recipe"):
        make_augmenter("noise", params={"pitch": {"min_semitones": 1}})


def test_augment_table_copies_and_rates(corpus, load_spy):
    paths, labels = corpus["train"]
    rows = list(augment_table(paths, labels, "noise", copies=3, seed=0))
    assert len(rows) == 3 * len(paths)
    assert [p for p, _, _ in rows] == [p for p in paths for _ in range(3)]
    assert [lab for _, lab, _ in rows] == [lab for lab in labels for _ in range(3)]
    for path, _, out in rows:
        assert out.shape == load_audio(path, SR).shape  # same length at the same rate
    copies = [out for p, _, out in rows if p == paths[0]]
    assert not np.array_equal(copies[0], copies[1])  # copies differ from each other
    assert load_spy == paths  # each file read once


def test_augment_table_resamples_to_the_requested_rate(corpus):
    paths, labels = corpus["train"]
    _, _, out = next(augment_table(paths[:1], labels[:1], "shift", sample_rate=8000))
    assert out.shape == load_audio(paths[0], 8000).shape


def test_augment_table_only_classes(corpus, load_spy):
    paths, labels = corpus["train"]
    rows = list(augment_table(paths, labels, "gain", copies=2, only_classes=["angry"]))
    assert len(rows) == 2 * labels.count("angry")
    assert {lab for _, lab, _ in rows} == {"angry"}
    assert load_spy == [p for p, lab in zip(paths, labels, strict=True) if lab == "angry"]


def test_augment_table_is_seeded_per_file(corpus):
    paths, labels = corpus["train"]
    full = {(p, i % 2): out for i, (p, _, out) in
            enumerate(augment_table(paths, labels, "pitch+noise", copies=2, seed=5))}
    alone = list(augment_table(paths[2:3], labels[2:3], "pitch+noise", copies=2, seed=5))
    assert np.array_equal(alone[0][2], full[(paths[2], 0)])
    assert np.array_equal(alone[1][2], full[(paths[2], 1)])
    other = list(augment_table(paths[2:3], labels[2:3], "pitch+noise", copies=1, seed=6))
    assert not np.array_equal(other[0][2], full[(paths[2], 0)])


def test_augmented_training_features_read_training_files_only(corpus, load_spy):
    extractor = get_extractor("mfcc_stats", n_mfcc=13)
    train_paths, train_labels = corpus["train"]
    test_paths, _ = corpus["test"]
    X_aug, y_aug, source = augmented_training_features(
        extractor, train_paths, train_labels, "noise+shift", copies=2,
        only_classes=["neutral"], seed=0)
    assert set(load_spy) <= set(train_paths)
    assert not set(load_spy) & set(test_paths)
    neutral = [i for i, lab in enumerate(train_labels) if lab == "neutral"]
    assert X_aug.shape == (2 * len(neutral), *extractor.output_shape)
    assert X_aug.dtype == np.float32
    assert list(y_aug) == ["neutral"] * len(X_aug)
    assert sorted(set(source.tolist())) == neutral
    clean = extractor.extract_file(train_paths[neutral[0]])
    assert not np.allclose(X_aug[0], clean)
    again = augmented_training_features(extractor, train_paths, train_labels, "noise+shift",
                                        copies=2, only_classes=["neutral"], seed=0)
    assert np.array_equal(again.features, X_aug)


def test_augmented_training_features_empty_selection(corpus):
    paths, labels = corpus["train"]
    out = augmented_training_features("mfcc_stats", paths, labels, "noise",
                                      only_classes=["surprised"])
    assert out.features.shape == (0, *get_extractor("mfcc_stats").output_shape)
    assert len(out.labels) == 0 and len(out.source) == 0


# ---------------------------------------------------------------------------
# Every recipe, and the channel-degradation recipes (issue 6).

#: Recipes that change the length on purpose (documented in the module docstring).
LENGTH_CHANGING = {"stretch", "speed"}
RATES = [16_000, 22_050]


def speechlike(sample_rate: int, duration: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonic tone plus white noise, so every band up to Nyquist has some energy."""
    from conftest import tone_signal

    tone = tone_signal(duration=duration, sample_rate=sample_rate, seed=seed)
    noise = 0.02 * np.random.default_rng(seed + 100).standard_normal(tone.size)
    return (tone + noise).astype(np.float32)


def white_noise(sample_rate: int, duration: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(duration * sample_rate))
            ).astype(np.float32)


def band_power(signal: np.ndarray, sample_rate: int, low: float, high: float) -> float:
    """Mean power spectral density between ``low`` and ``high`` Hz (Welch)."""
    freqs, psd = welch(signal, fs=sample_rate, nperseg=1024)
    band = (freqs >= low) & (freqs <= high)
    return float(np.mean(psd[band]))


def db(ratio: float) -> float:
    return 10 * np.log10(ratio)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_keeps_shape_and_is_seeded(name, rate):
    x = speechlike(rate)
    augmenter = make_augmenter(name, seed=11)
    out = augmenter(x, rate)
    assert out.dtype == np.float32
    assert out.ndim == 1 and np.all(np.isfinite(out))
    if name not in LENGTH_CHANGING:
        assert out.shape == x.shape
        # not a no-op: at least 1 % of the input's RMS changed
        assert np.sqrt(np.mean((out - x) ** 2)) > 0.01 * np.sqrt(np.mean(x**2))
    assert np.array_equal(make_augmenter(name, seed=11)(x, rate), out)
    # Different seeds: parameters are redrawn. (codec and resample draw from a few
    # discrete bitrates / chains, so two seeds may coincide; four must not all.)
    outputs = {make_augmenter(name, seed=seed)(x, rate).tobytes() for seed in range(4)}
    assert len(outputs) >= 3


@pytest.mark.parametrize("name", [n for n in available_recipes()
                                  if n not in ("pitch", "speed")])
def test_every_recipe_keeps_the_sample_rate(name):
    """A 1 kHz tone is still at 1 kHz: the output is at the rate it came in at."""
    rate = 16_000
    t = np.arange(rate) / rate
    x = (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    out = make_augmenter(name, seed=2)(x, rate)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * rate / out.size
    assert peak_hz == pytest.approx(1000.0, abs=5.0)


def test_channel_recipes_use_only_the_augmenter_rngs():
    x = speechlike(SR)
    for name in (*CHANNEL_RECIPES, "channel"):
        random.seed(5)
        np.random.seed(5)
        a = make_augmenter(name, seed=3)(x, SR)
        assert random.random() == random.Random(5).random()  # global states untouched
        assert np.random.random() == np.random.RandomState(5).random_sample()
        random.seed(99)
        np.random.seed(99)  # other global states do not change the output
        assert np.array_equal(make_augmenter(name, seed=3)(x, SR), a), name


@pytest.mark.parametrize("name", [*CHANNEL_RECIPES, "channel"])
def test_channel_recipes_handle_short_clips_odd_rates_and_loud_input(name):
    short = speechlike(SR, duration=0.05)  # under the 100 ms the MP3 encoder needs
    assert make_augmenter(name, seed=1)(short, SR).shape == short.shape
    odd = speechlike(10_000, duration=0.3)  # not an MP3 rate
    out = make_augmenter(name, seed=1)(odd, 10_000)
    assert out.shape == odd.shape and np.all(np.isfinite(out))
    t = np.arange(SR // 2) / SR
    loud = (3.0 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    out = make_augmenter(name, seed=1)(loud, SR)
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 1.5  # not clipped to ±1


@pytest.mark.parametrize("rate", RATES)
def test_telephone_removes_everything_above_4_khz(rate):
    x = white_noise(rate)
    for seed in range(3):
        out = make_augmenter("telephone", seed=seed)(x, rate)
        in_band = db(band_power(out, rate, 500, 3000) / band_power(x, rate, 500, 3000))
        above = db(band_power(out, rate, 4100, rate / 2) / band_power(x, rate, 4100, rate / 2))
        below = db(band_power(out, rate, 20, 100) / band_power(x, rate, 20, 100))
        assert abs(in_band) < 3.0  # the speech band passes
        assert above < in_band - 20.0  # the 8 kHz line removes everything above 4 kHz
        assert below < in_band - 10.0  # and the high-pass the low rumble


def test_snr_adds_noise_at_the_configured_snr():
    x = speechlike(SR, duration=8.0)
    power = np.mean(x.astype(np.float64) ** 2)

    def measured(augmenter) -> float:
        noise = augmenter(x, SR).astype(np.float64) - x
        return db(power / np.mean(noise**2))

    default = [measured(make_augmenter("snr", seed=seed)) for seed in range(6)]
    assert all(5.0 - 1.0 <= snr <= 30.0 + 1.0 for snr in default)
    assert max(default) - min(default) > 3.0  # drawn per call, not fixed
    chosen = [measured(make_augmenter("snr", seed=seed,
                                      params={"snr": {"min_snr_db": 10, "max_snr_db": 15}}))
              for seed in range(4)]
    assert all(9.0 <= snr <= 16.0 for snr in chosen)
    fixed = make_augmenter("snr", seed=0, params={"snr": {"min_snr_db": 20, "max_snr_db": 20}})
    assert measured(fixed) == pytest.approx(20.0, abs=1.0)


@pytest.mark.parametrize("rate", RATES)
def test_resample_chain_removes_the_top_band(rate):
    x = white_noise(rate)
    for seed in range(3):
        out = make_augmenter("resample", seed=seed)(x, rate)
        in_band = db(band_power(out, rate, 100, 3500) / band_power(x, rate, 100, 3500))
        above = db(band_power(out, rate, 6100, rate / 2) / band_power(x, rate, 6100, rate / 2))
        assert abs(in_band) < 1.0  # resampling alone keeps what the lowest rate carries
        assert above < -30.0


def test_resample_chain_passes_through_rates_below_the_input():
    augmenter = make_augmenter("resample", seed=0, params={"resample": {"max_steps": 3}})
    transform = augmenter.transform.transforms[0]
    seen = set()
    for seed in range(8):
        augmenter.reseed(seed)
        augmenter(white_noise(SR, duration=0.2), SR)
        chain = transform.parameters["chain"]
        assert 1 <= len(chain) <= 3 and len(set(chain)) == len(chain)
        seen.update(chain)
    assert seen == {8000, 11025, 12000}
    # nothing below the input rate: unchanged
    x = white_noise(8000, duration=0.2)
    assert np.array_equal(make_augmenter("resample")(x, 8000), x)


def click(rate: int, at: float = 0.1, duration: float = 1.0) -> np.ndarray:
    x = np.zeros(round(duration * rate), dtype=np.float32)
    x[round(at * rate)] = 0.9
    return x


def energy(signal: np.ndarray, rate: int, start: float, stop: float) -> float:
    return float(np.sum(signal[round(start * rate):round(stop * rate)].astype(np.float64) ** 2))


@pytest.mark.parametrize("rate", RATES)
def test_reverb_adds_a_decaying_tail(rate):
    x = click(rate)
    for seed in range(3):
        out = make_augmenter("reverb", seed=seed)(x, rate)
        direct_in, direct_out = energy(x, rate, 0.1, 0.102), energy(out, rate, 0.1, 0.102)
        tail_in, tail_out = energy(x, rate, 0.15, 0.4), energy(out, rate, 0.15, 0.4)
        assert tail_in == 0.0
        assert tail_out > 1e-3 * direct_out  # within 30 dB of the click; the dry click has none
        assert energy(out, rate, 0.0, 0.1) < 1e-12 * direct_out  # causal (FFT round-off only)
        assert np.abs(out).max() == pytest.approx(0.9, rel=1e-5)  # peak-matched
        assert direct_in > 0


@pytest.mark.parametrize("rt60", [0.3, 0.6])
def test_reverb_decays_by_60_db_in_rt60(rt60):
    params = {"reverb": {"min_rt60": rt60, "max_rt60": rt60, "min_wet": 0.5, "max_wet": 0.5}}
    out = make_augmenter("reverb", seed=4, params=params)(click(SR), SR).astype(np.float64)
    # Schroeder backward integration gives a smooth energy decay curve.
    decay = np.cumsum((out[round(0.1 * SR):] ** 2)[::-1])[::-1]
    early, late = decay[round(0.03 * SR)], decay[round(0.18 * SR)]
    assert db(early / late) == pytest.approx(60.0 * 0.15 / rt60, abs=3.0)


def test_channel_mix_applies_one_or_two_channel_recipes():
    augmenter = make_augmenter("channel", seed=0)
    mix = augmenter.transform.transforms[0]
    counts = set()
    for _ in range(12):
        augmenter(speechlike(SR, duration=0.3), SR)
        counts.add(len(mix.transform_indexes))
    assert counts == {1, 2}
    only = make_augmenter("channel", seed=0, params={"channel": {
        "recipes": ["telephone", "resample"], "min_transforms": 2, "max_transforms": 2}})
    x = white_noise(SR)
    out = only(x, SR)
    assert db(band_power(out, SR, 4100, 8000) / band_power(x, SR, 4100, 8000)) < -40.0


@pytest.mark.parametrize("name, params", [
    ("telephone", {"max_high_cutoff": 4500.0}),
    ("telephone", {"min_low_cutoff": 400.0}),
    ("reverb", {"min_rt60": 0.9}),
    ("reverb", {"max_wet": 1.5}),
    ("resample", {"rates": ()}),
    ("resample", {"min_steps": 0}),
    ("snr", {"min_snr_db": 40.0}),
    ("codec", {"max_bitrate": 500}),
    ("channel", {"recipes": ["channel"]}),
    ("channel", {"recipes": ["telephone"], "max_transforms": 2}),
    ("channel", {"params": {"pitch": {}}}),
])
def test_channel_recipe_parameters_are_checked(name, params):
    with pytest.raises(ConfigError, match=name):
        make_augmenter(name, params={name: params})


# ---------------------------------------------------------------------------
# Vocal tract length perturbation (issue 13).

def median_f0(x: np.ndarray, rate: int) -> float:
    """Median pyin f0 of the voiced frames, Hz."""
    import librosa

    f0, voiced, _ = librosa.pyin(x, fmin=60.0, fmax=400.0, sr=rate, frame_length=1024)
    return float(np.nanmedian(f0[voiced]))


def centroid(x: np.ndarray, rate: int) -> float:
    """Power-weighted mean frequency of the whole signal, Hz."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float(np.sum(np.fft.rfftfreq(x.size, 1 / rate) * power) / np.sum(power))


@pytest.mark.parametrize("f0", [130.0, 220.0])
def test_vtlp_moves_the_formants_and_keeps_the_pitch(f0):
    """A synthetic voice warped by 0.9 / 1.1: same f0 (within 2 %), centroid down / up."""
    from emovox.synth import synth_voice

    rate = 16_000
    x = synth_voice(duration=2.0, sample_rate=rate, f0=f0, seed=1)
    pitch, middle = median_f0(x, rate), centroid(x, rate)
    for alpha in (0.9, 1.1):
        params = {"vtlp": {"min_alpha": alpha, "max_alpha": alpha}}
        out = make_augmenter("vtlp", seed=0, params=params)(x, rate)
        assert out.shape == x.shape and out.dtype == np.float32
        assert np.abs(out).max() <= 1.0
        assert median_f0(out, rate) == pytest.approx(pitch, rel=0.02)
        moved = centroid(out, rate) / middle
        assert (moved < 0.97) if alpha < 1 else (moved > 1.03)


@pytest.mark.parametrize("rate", RATES)
def test_vtlp_is_seeded_and_keeps_length_and_rate(rate):
    from emovox.synth import synth_voice

    x = synth_voice(duration=0.7, sample_rate=rate, seed=2)
    outputs = []
    for seed in (4, 4, 5):
        augmenter = make_augmenter("vtlp", seed=seed)
        outputs.append(augmenter(x, rate))
        alpha = augmenter.transform.transforms[0].parameters["alpha"]
        assert 0.9 <= alpha <= 1.1
    assert all(out.shape == x.shape for out in outputs)
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])
    assert make_augmenter("vtlp", seed=0)(x[:100], rate).shape == (100,)  # under one frame
    with pytest.raises(ConfigError, match="vtlp"):
        make_augmenter("vtlp", params={"vtlp": {"boundary": 1.0}})


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_warp_is_piecewise_linear_and_keeps_the_band_edges(alpha):
    transform = make_augmenter("vtlp").transform.transforms[0]
    nyquist = 8000.0
    freqs = np.linspace(0.0, nyquist, 801)
    warped = transform.warp(freqs, alpha, nyquist)
    assert warped[0] == 0.0 and warped[-1] == pytest.approx(nyquist)
    assert np.all(np.diff(warped) > 0)
    knee = 0.6 * nyquist * min(alpha, 1.0) / alpha
    below = freqs <= knee
    assert np.allclose(warped[below], alpha * freqs[below])
    assert np.allclose(np.diff(warped[~below], 2), 0.0, atol=1e-9)  # a straight line above
    assert transform.warp(np.array([knee]), alpha, nyquist)[0] == pytest.approx(alpha * knee)


# ---------------------------------------------------------------------------
# SpecAugment-style masking in the waveform (issue 13).

@pytest.mark.parametrize("rate", RATES)
def test_mask_is_seeded_and_keeps_length_and_dtype(rate):
    x = white_noise(rate, duration=2.0)
    a = make_augmenter("mask", seed=4)(x, rate)
    b = make_augmenter("mask", seed=4)(x, rate)
    c = make_augmenter("mask", seed=5)(x, rate)
    assert a.dtype == np.float32 and a.shape == x.shape and np.all(np.isfinite(a))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert make_augmenter("mask", seed=0)(x[:40], rate).shape == (40,)
    off = {"mask": {"p_time": 0.0, "p_freq": 0.0}}
    assert np.array_equal(make_augmenter("mask", seed=4, params=off)(x, rate), x)
    with pytest.raises(ConfigError, match="mask"):
        make_augmenter("mask", params={"mask": {"n_time_masks": 8, "max_time_part": 0.2}})


@pytest.mark.parametrize("seed", range(4))
def test_mask_removes_a_band_and_silences_short_spans(seed):
    """White noise through the recipe's defaults: the drawn band loses > 20 dB, an octave
    away nothing changes, and each drawn span (<= 7.5 %, <= 15 % in all) is silent."""
    x = white_noise(SR, duration=3.0, seed=seed)
    augmenter = make_augmenter("mask", seed=seed)
    out = augmenter(x, SR)
    band, *spans = augmenter.transform.transforms[0].transforms
    assert band.parameters["should_apply"] and all(s.parameters["should_apply"] for s in spans)
    centre, width = band.parameters["center_freq"], band.parameters["bandwidth"]
    assert 150.0 <= centre <= 4000.0 and 0.2 * centre <= width <= 0.5 * centre
    # Power spectra of the parts no span touched (the spans would lower every band).
    kept = np.ones(x.size, dtype=bool)
    for span in spans:
        kept[span.parameters["t0"]:span.parameters["t0"] + span.parameters["t"]] = False
    inner = (centre - 0.3 * width, centre + 0.3 * width)
    assert db(band_power(out[kept], SR, *inner) / band_power(x[kept], SR, *inner)) < -20
    far = (2.0 * (centre + width), 2.5 * (centre + width)) if centre < 2000 else (
        0.25 * centre, 0.4 * centre)
    assert abs(db(band_power(out[kept], SR, *far) / band_power(x[kept], SR, *far))) < 1.0
    # The spans: silent inside (past the 5 ms fades), short, and the rest not silent.
    assert len(spans) == 2
    silenced, fade = 0, round(0.005 * SR)
    for span in spans:
        t0, t = span.parameters["t0"], span.parameters["t"]
        assert t <= 0.075 * x.size
        edge = min(fade, t // 2)
        assert np.all(out[t0 + edge:t0 + t - edge] == 0.0)
        silenced += t
    assert 0 < silenced <= 0.15 * x.size
    frames = out[: x.size // 320 * 320].reshape(-1, 320)  # 20 ms frames
    assert np.mean(np.all(frames == 0.0, axis=1)) <= 0.15
    assert np.count_nonzero(out[~kept] == 0.0) >= np.count_nonzero(~kept) - 4 * fade
    assert np.count_nonzero(out[kept] == 0.0) < 0.001 * x.size
