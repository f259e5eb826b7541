"""Loudness normalisation, silence trimming, and the extractors built from others."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emovox.augment import augmented_training_features
from emovox.errors import AudioError, ConfigError
from emovox.features import extract_many, get_extractor
from emovox.features.cache import FeatureCache
from emovox.preprocess import (
    integrated_loudness,
    normalize_loudness,
    preprocess,
    trim_silence,
)
from emovox.synth import synth_voice

SR = 16_000


def padded_voice(pad_seconds: float = 1.0, loudness: float = 0.3) -> tuple[np.ndarray, int]:
    """A 1.5 s voice with ``pad_seconds`` of faint noise before and after it."""
    voice = synth_voice(1.5, loudness=loudness, seed=3)
    rng = np.random.default_rng(0)
    pad = (1e-4 * rng.standard_normal(round(pad_seconds * SR))).astype(np.float32)
    return np.concatenate([pad, voice, pad]), voice.size


# ------------------------------------------------------------------ loudness
@pytest.mark.parametrize("gain", [0.02, 0.3, 1.0])
def test_loudness_reaches_the_target_whatever_the_level(gain: float) -> None:
    voice = synth_voice(2.0, loudness=gain, seed=1)
    out = normalize_loudness(voice, SR, -23.0)
    assert out.dtype == np.float32 and out.shape == voice.shape
    assert integrated_loudness(out, SR) == pytest.approx(-23.0, abs=0.05)
    # A pure gain: the waveform's shape is kept.
    assert np.allclose(out / np.abs(out).max(), voice / np.abs(voice).max(), atol=1e-5)


def test_loudness_of_a_clip_shorter_than_a_gating_block() -> None:
    short = synth_voice(0.3, loudness=0.05, seed=2)
    assert integrated_loudness(normalize_loudness(short, SR, -20.0), SR) == pytest.approx(
        -20.0, abs=0.05)


def test_silence_is_left_unchanged_by_loudness_normalisation() -> None:
    silence = np.zeros(SR, dtype=np.float32)
    assert integrated_loudness(silence, SR) == -np.inf
    assert np.array_equal(normalize_loudness(silence, SR), silence)


# ------------------------------------------------------------------ trimming
def test_trimming_cuts_the_quiet_margins_only() -> None:
    signal, voice_samples = padded_voice()
    trimmed = trim_silence(signal, SR, top_db=30)
    # librosa works in frames (512-sample hops): allow a few frames of margin.
    assert voice_samples - 2048 <= trimmed.size <= voice_samples + 4096
    assert trimmed.size < signal.size - SR


def test_trimming_never_leaves_a_sliver() -> None:
    click = np.zeros(SR, dtype=np.float32)
    click[8000:8010] = 0.5
    assert trim_silence(click, SR, top_db=20).size == SR


def test_preprocess_trims_before_measuring_loudness() -> None:
    signal, _ = padded_voice(2.0)
    out = preprocess(signal, SR, trim_top_db=30, loudness_lufs=-23)
    assert out.size < signal.size
    assert integrated_loudness(out, SR) == pytest.approx(-23.0, abs=0.05)
    assert np.array_equal(preprocess(signal, SR), signal)


@pytest.mark.parametrize("params", [{"trim_top_db": 0}, {"trim_top_db": -5},
                                    {"loudness_lufs": 3.0}, {"loudness_lufs": True},
                                    {"loudness_lufs": float("nan")}, {}])
def test_bad_preprocessing_settings_are_refused(params: dict) -> None:
    with pytest.raises(ConfigError, match="preprocessed"):
        get_extractor({"name": "preprocessed", "features": "mfcc_stats", **params})


def test_preprocessing_is_not_nested() -> None:
    inner = {"name": "preprocessed", "features": "mfcc_stats", "loudness_lufs": -23}
    with pytest.raises(ConfigError, match="already preprocessed"):
        get_extractor({"name": "preprocessed", "features": inner, "trim_top_db": 30})


# ------------------------------------------------------------------ preprocessed extractor
def test_loudness_normalised_features_ignore_the_recording_level(tmp_path) -> None:
    ext = get_extractor({"name": "preprocessed", "features": "mfcc_stats",
                         "loudness_lufs": -23})
    plain = get_extractor("mfcc_stats")
    voice = synth_voice(1.5, loudness=0.3, seed=4)
    quiet = get_extractor(ext.spec())  # rebuilt from its spec, as workers do
    assert quiet == ext and ext.key() != plain.key()
    assert ext.output_shape == plain.output_shape
    np.testing.assert_allclose(ext.extract_signal(voice, SR),
                               quiet.extract_signal(0.05 * voice, SR), rtol=1e-3, atol=1e-3)
    # Without normalisation the level shows in the features.
    assert not np.allclose(plain.extract_signal(voice, SR),
                           plain.extract_signal(0.05 * voice, SR), rtol=1e-3, atol=1e-3)
    # A file gives what its signal gives.
    path = tmp_path / "voice.wav"
    sf.write(path, voice, SR, subtype="FLOAT")
    np.testing.assert_allclose(ext.extract_file(path), ext.extract_signal(voice, SR),
                               rtol=1e-4, atol=1e-4)


def test_trimmed_features_do_not_see_the_margins() -> None:
    ext = get_extractor({"name": "preprocessed", "features": "mfcc_stats",
                         "trim_top_db": 30})
    plain = get_extractor("mfcc_stats")
    signal, samples = padded_voice()
    voice = signal[round(SR * 1.0): round(SR * 1.0) + samples]
    trimmed_gap = np.abs(ext.extract_signal(signal, SR) - plain.extract_signal(voice, SR)).mean()
    padded_gap = np.abs(plain.extract_signal(signal, SR) - plain.extract_signal(voice, SR)).mean()
    assert trimmed_gap < 0.25 * padded_gap


def test_preprocessed_errors_name_the_file(tmp_path) -> None:
    ext = get_extractor({"name": "preprocessed", "features": "mfcc_stats",
                         "loudness_lufs": -23})
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match=r"silent\.wav"):
        ext.extract_file(silent)


# ------------------------------------------------------------------ fusion
def test_fused_features_are_the_parts_side_by_side(tmp_path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"v{i}.wav"
        sf.write(path, synth_voice(1.0, f0=120 + 30 * i, seed=i), SR)
        paths.append(str(path))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    paths.insert(1, str(broken))
    fused = get_extractor({"name": "fused", "parts": ["mfcc_stats", "mfcc_chroma_mel"]})
    a, b = get_extractor("mfcc_stats"), get_extractor("mfcc_chroma_mel")
    assert fused.output_shape == (a.output_shape[0] + b.output_shape[0],)

    cache = tmp_path / "cache"
    result = extract_many(paths, fused, cache_dir=cache, n_jobs=1, progress=False)
    assert result.ok.tolist() == [True, False, True, True]
    assert [p for p, _ in result.failures] == [str(broken)]
    assert "broken.wav" in result.failures[0][1]
    for row, path in zip(result.features, result.ok_paths, strict=True):
        np.testing.assert_allclose(row, fused.extract_file(path), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(row[: a.output_shape[0]], a.extract_file(path),
                                   rtol=1e-5, atol=1e-5)
    # Each part was cached under its own key: extracting a part alone now hits the cache.
    again = extract_many(paths, b, cache_dir=cache, n_jobs=1, progress=False)
    assert again.n_cached == 3


@pytest.mark.parametrize("parts", [["mfcc_stats"], "mfcc_stats",
                                   ["mfcc_stats", {"name": "mfcc_sequence", "duration": 1.0}]])
def test_bad_fusions_are_refused(parts) -> None:
    with pytest.raises(ConfigError, match="fused"):
        get_extractor({"name": "fused", "parts": parts})


# ------------------------------------------------------------------ augmented-feature cache
def test_augmented_features_are_cached_and_identical(tmp_path, monkeypatch) -> None:
    paths, labels = [], []
    for i in range(3):
        path = tmp_path / f"a{i}.wav"
        sf.write(path, synth_voice(1.0, f0=110 + 20 * i, seed=10 + i), SR)
        paths.append(str(path))
        labels.append("angry" if i % 2 else "sad")
    uncached = augmented_training_features("mfcc_stats", paths, labels, "noise+gain",
                                           copies=2, seed=5)
    cache = tmp_path / "cache"
    first = augmented_training_features("mfcc_stats", paths, labels, "noise+gain", copies=2,
                                         seed=5, cache_dir=cache)
    ext = get_extractor("mfcc_stats")
    entries = list(FeatureCache(cache).extractor_dir(ext).rglob("*.npy"))
    assert len(entries) == 6
    # The second run reads every copy from the cache: nothing is extracted.
    monkeypatch.setattr(type(ext), "extract_signal",
                        lambda *a, **k: pytest.fail("extracted despite the cache"))
    second = augmented_training_features("mfcc_stats", paths, labels, "noise+gain", copies=2,
                                         seed=5, cache_dir=cache)
    for result in (first, second):
        np.testing.assert_array_equal(result.features, uncached.features)
        assert result.labels.tolist() == uncached.labels.tolist()
        assert result.source.tolist() == [0, 0, 1, 1, 2, 2]
    monkeypatch.undo()
    # Another seed is another augmentation: new entries, other features.
    other = augmented_training_features("mfcc_stats", paths, labels, "noise+gain", copies=2,
                                        seed=6, cache_dir=cache)
    assert len(list(FeatureCache(cache).extractor_dir(ext).rglob("*.npy"))) == 12
    assert not np.allclose(other.features, first.features)
