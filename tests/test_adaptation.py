"""Adapting a speaker-normalised model at inference: batch, stream and calibration."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emovox.adaptation import FeatureAdapter
from emovox.bundle import load_bundle, save_bundle
from emovox.config import load_config
from emovox.errors import BundleError, ConfigError
from emovox.experiment import train_bundle
from emovox.normalization import FeatureStats
from emovox.recognizer import Recognizer
from emovox.synth import synth_voice


def _reference(dim: int = 4) -> FeatureStats:
    return FeatureStats(10.0, np.zeros(dim), np.ones(dim))


def test_modes_take_statistics_from_the_right_place():
    rng = np.random.default_rng(0)
    X = 5.0 + 2.0 * rng.standard_normal((40, 4))
    none = FeatureAdapter(_reference(), 8.0, "none").transform(X)
    np.testing.assert_allclose(none, X, rtol=1e-5)  # the reference is the identity here
    batch = FeatureAdapter(_reference(), 8.0, "batch").transform(X)
    expected = FeatureStats.of(X).with_prior(_reference(), 8.0).standardise(X)
    np.testing.assert_allclose(batch, expected, rtol=1e-6)
    assert abs(batch.mean()) < abs(none.mean()) / 3  # the speaker's offset is removed


def test_stream_statistics_accumulate_chunk_by_chunk_and_reset():
    rng = np.random.default_rng(1)
    X = 3.0 + rng.standard_normal((30, 4))
    adapter = FeatureAdapter(_reference(), 8.0, "stream")
    out = np.concatenate([adapter.transform(X[i:i + 10]) for i in range(0, 30, 10)])
    assert adapter.running.count == 30
    whole = FeatureStats.of(X).with_prior(_reference(), 8.0)
    np.testing.assert_allclose(out[-1], whole.standardise(X[-1]), rtol=1e-5)
    assert not np.allclose(out[0], whole.standardise(X[0]))  # the first row saw itself only
    # Row i is standardised with the statistics of rows 0..i, however it is chunked.
    other = FeatureAdapter(_reference(), 8.0, "stream")
    again = np.concatenate([other.transform(X[i:i + 7]) for i in range(0, 30, 7)])
    np.testing.assert_allclose(again, out, rtol=1e-6)
    np.testing.assert_allclose(
        out[12], FeatureStats.of(X[:13]).with_prior(_reference(), 8.0).standardise(X[12]),
        rtol=1e-5)
    adapter.reset()
    assert adapter.running.count == 0


def test_calibration_overrides_the_mode():
    rng = np.random.default_rng(2)
    calibration = -4.0 + rng.standard_normal((20, 4))
    adapter = FeatureAdapter(_reference(), 8.0, "batch")
    adapter.calibrate(calibration)
    X = rng.standard_normal((5, 4))
    expected = FeatureStats.of(calibration).with_prior(_reference(), 8.0).standardise(X)
    np.testing.assert_allclose(adapter.transform(X), expected, rtol=1e-6)
    with pytest.raises(ConfigError, match="adaptation mode"):
        FeatureAdapter(_reference(), 8.0, "sometimes")  # type: ignore[arg-type]


def test_a_speaker_normalised_bundle_keeps_its_reference_statistics(normalised_bundle):
    assert (normalised_bundle / "reference_stats.npz").is_file()
    bundle = load_bundle(normalised_bundle)
    assert bundle.normalization == "speaker"
    assert bundle.reference is not None and bundle.reference.mean.shape == (
        bundle.extractor().output_shape[0],)
    (normalised_bundle / "reference_stats.npz").rename(normalised_bundle / "moved.npz")
    try:
        with pytest.raises(BundleError, match="reference_stats"):
            load_bundle(normalised_bundle)
    finally:
        (normalised_bundle / "moved.npz").rename(normalised_bundle / "reference_stats.npz")


def test_recognizer_adapts_to_a_new_channel(normalised_bundle, tmp_path, monkeypatch):
    """A new speaker heard through a quieter, duller channel: adaptation corrects it."""
    from scipy.signal import butter, sosfilt

    dull = butter(4, 1200, fs=16000, output="sos")
    paths, truth = [], []
    for n, (emotion, f0, swing, loud) in enumerate([
            ("angry", 225, 0.6, 0.6), ("sad", 98, 0.05, 0.15), ("happy", 185, 0.35, 0.4)] * 2):
        signal = 0.3 * sosfilt(dull, synth_voice(1.2, f0=f0, f0_range=swing, loudness=loud,
                                                 seed=500 + n, vowels="oie"))
        path = tmp_path / f"new_{n}.wav"
        sf.write(path, signal.astype(np.float32), 16000)
        paths.append(path)
        truth.append(emotion)
    import emovox.inference.engine

    # Six files are fewer than the unadapted fallback's threshold; adapt anyway here.
    monkeypatch.setattr(emovox.inference.engine, "MIN_ADAPT_VECTORS", 2)
    adapted = Recognizer(normalised_bundle, n_jobs=1, adapt="batch")
    unadapted = Recognizer(normalised_bundle, n_jobs=1, adapt="none")
    batch = adapted.predict_files(paths, progress=False)
    plain = unadapted.predict_files(paths, progress=False)
    hits_adapted = (batch["emotion"].to_numpy() == np.array(truth)).sum()
    hits_plain = (plain["emotion"].to_numpy() == np.array(truth)).sum()
    assert not np.allclose(batch[["angry", "happy", "sad"]], plain[["angry", "happy", "sad"]])
    assert hits_adapted >= hits_plain
    # Calibrating on the same speaker then predicting one file uses those statistics.
    assert unadapted.calibrate(paths) == len(paths)
    one = unadapted.predict_files(paths[:1], progress=False)
    np.testing.assert_allclose(one[["angry", "happy", "sad"]].to_numpy(),
                               batch[["angry", "happy", "sad"]].to_numpy()[:1], atol=1e-5)


def test_calibration_needs_a_normalised_bundle(synthetic_corpus, tmp_path):
    config = load_config(data={
        "name": "plain", "corpora": [{"path": str(synthetic_corpus), "kind": "manifest"}],
        "labels": {"name": "three", "classes": ["angry", "happy", "sad"]},
        "features": {"name": "mfcc_stats"}, "model": {"name": "logreg"},
        "cache_dir": None, "n_jobs": 1})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    recognizer = Recognizer(bundle, n_jobs=1)
    with pytest.raises(ConfigError, match="without speaker normalisation"):
        recognizer.calibrate([tmp_path / "x.wav"])


def test_a_calibrated_bundle_round_trips_and_can_say_uncertain(synthetic_corpus, tmp_path):
    config = load_config(data={
        "name": "calibrated",
        "corpora": [{"path": str(synthetic_corpus), "kind": "manifest"}],
        "labels": {"name": "three", "classes": ["angry", "happy", "sad"]},
        "features": {"name": "mfcc_stats"},
        "model": {"name": "logreg", "calibrate": True, "uncertain_below": 0.99},
        "normalization": "speaker", "cache_dir": None, "n_jobs": 1})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    assert type(bundle.model).__name__ == "CalibratedClassifier"
    assert bundle.model.temperature_ > 0
    loaded = load_bundle(save_bundle(bundle, tmp_path / "calibrated"))
    assert loaded.model.temperature_ == pytest.approx(bundle.model.temperature_)
    frame = Recognizer(loaded, n_jobs=1).predict_signal(
        synth_voice(1.2, f0=150, f0_range=0.2, loudness=0.3, seed=7, vowels="oie"), 16000)
    confidence = float(frame["confidence"].iloc[0])
    assert (frame["emotion"].iloc[0] == "uncertain") == (confidence < 0.99)


def test_too_little_speech_to_adapt_to_falls_back_to_the_unadapted_model(
        normalised_bundle, tmp_path):
    bundle = load_bundle(normalised_bundle)
    assert bundle.unadapted_model is not None
    recognizer = Recognizer(bundle, n_jobs=1, adapt="batch")
    signal = synth_voice(1.2, f0=200, f0_range=0.4, loudness=0.5, seed=3, vowels="oie")
    frame = recognizer.predict_signal(signal, 16000)  # a batch of one: below the minimum
    features = recognizer.extractor.extract_signal(signal, 16000)[None]
    expected = bundle.unadapted_model.predict_proba(features)
    order = [list(bundle.unadapted_model.classes_).index(c) for c in recognizer.classes]
    np.testing.assert_allclose(frame[recognizer.classes].to_numpy(), expected[:, order],
                               atol=1e-6)
    # In a stream the first windows use the unadapted model, later ones adapt.
    stream = FeatureAdapter(bundle.reference, 8.0, "stream")
    assert list(stream.evidence(3)) == [1.0, 2.0, 3.0]
    stream.transform(np.zeros((3, len(bundle.reference.mean))))
    assert stream.evidence(1)[0] == 4.0


def test_a_timeline_adapted_as_a_batch_uses_the_whole_recording(normalised_bundle):
    """adapt="batch" on a timeline: one set of statistics from all of its speech
    windows, whatever the chunking (a stream's running statistics depend on order)."""
    voice = np.concatenate([synth_voice(4.0, f0=f0, f0_range=swing, seed=700 + n)
                            for n, (f0, swing) in enumerate([(225, 0.6), (98, 0.05),
                                                             (185, 0.35)] * 2)])
    whole = Recognizer(normalised_bundle, n_jobs=1, adapt="batch")
    classes = whole.classes
    a = whole.predict_timeline(voice, vad=None, chunk_seconds=5.0, sample_rate=16000)
    b = whole.predict_timeline(voice, vad=None, chunk_seconds=11.0, sample_rate=16000)
    assert len(a) >= 20
    np.testing.assert_allclose(a[classes].to_numpy(), b[classes].to_numpy(), atol=1e-6)
    # The same as every window encoded and adapted as one batch.
    windows = [voice[round(s * 16000):round(e * 16000)] for _, s, e in a.index]
    encoded = whole.backend.encode(windows, 16000)
    expected = whole.engine.probabilities(encoded, whole.engine.adapter_for("batch"))
    np.testing.assert_allclose(a[classes].to_numpy(), expected, atol=1e-6)
    streamed = Recognizer(normalised_bundle, n_jobs=1).predict_timeline(
        voice, vad=None, chunk_seconds=5.0, sample_rate=16000)
    assert not np.allclose(streamed[classes].to_numpy(), expected, atol=1e-3)
