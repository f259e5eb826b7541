"""Timelines encode each stretch of speech once and pool window features from its frames.

The pooled features must equal the whole-unit features where they cover the same
audio, native and ONNX must agree, the result must not depend on how the file is read,
and no piece may hold two speakers' voices.
"""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

from emovox.inference import frames as frames_module
from emovox.inference.frames import WindowEncoder, pool_windows, speech_pieces
from emovox.synth import synth_voice

SR = 16_000


def _talk(seconds: float = 14.0, seed: int = 0) -> np.ndarray:
    """Voice, a pause, voice: a small recording with two stretches of speech."""
    rng = np.random.default_rng(seed)
    half = synth_voice(seconds / 2 - 1.0, SR, f0=150, seed=seed)
    pause = (1e-3 * rng.standard_normal(2 * SR)).astype(np.float32)
    return np.concatenate([half, pause, 0.7 * synth_voice(seconds / 2 - 1.0, SR, f0=120,
                                                          seed=seed + 1)])


# ----------------------------------------------------------------------------- pieces
def test_pieces_are_the_speech_under_the_windows_cut_to_the_longest():
    windows = [(0, 200), (100, 300), (500, 700)]
    assert speech_pieces(windows, None, 1000) == [(0, 300), (500, 700)]
    assert speech_pieces(windows, [(50, 120), (250, 600)], 1000) == [
        (50, 120), (250, 300), (500, 600)]
    cut = speech_pieces([(0, 1000)], None, 300)
    assert cut[0][0] == 0 and cut[-1][1] == 1000 and len(cut) == 4
    assert all(b - a <= 300 for a, b in cut)
    assert all(a == b for (_, a), (b, _) in itertools.pairwise(cut))
    with pytest.raises(ValueError, match="max_samples"):
        speech_pieces(windows, None, 0)


def test_touching_ranges_stay_separate_pieces():
    ranges = [(0, 400), (400, 900), (900, 1000)]  # no gap between them
    assert speech_pieces([(0, 1000)], ranges, 10_000) == ranges


def test_pool_windows_averages_the_frames_whose_centre_is_inside():
    frames = [np.arange(10, dtype=np.float32)[:, None] * [1.0, 2.0],
              np.full((5, 2), 100.0, np.float32)]
    # Piece 1: frames at 0.0-0.2 s (centres 0.01..0.19); piece 2 at 1.0-1.1 s.
    features, usable = pool_windows(frames, [0.0, 1.0],
                                    [(0.0, 0.1), (0.05, 1.05), (0.3, 0.9), (1.0, 2.0)], 0.02)
    assert usable.tolist() == [True, True, False, True]
    np.testing.assert_allclose(features[0], [2.0, 4.0])  # frames 0-4
    expected = np.concatenate([frames[0][2:], frames[1][:2]]).mean(axis=0)
    np.testing.assert_allclose(features[1], expected, rtol=1e-6)
    np.testing.assert_allclose(features[2], [100.0, 100.0])
    empty, none = pool_windows([], [], [(0.0, 1.0)], 0.02)
    assert empty.shape[0] == 0 and not none.any()


# ----------------------------------------------------------------------------- encoders
def test_native_frames_average_to_the_whole_unit_features():
    from emovox.bundle import load_bundle

    extractor = load_bundle().extractor()  # loudness-normalised Whisper tiny.en
    assert extractor.frame_seconds == pytest.approx(0.02)
    signals = [synth_voice(2.3, SR, seed=3), np.zeros(SR, np.float32), synth_voice(1.0, SR)]
    frames, usable = extractor.extract_frames(signals, SR)
    features, usable_whole = extractor.extract_signals(signals, SR)
    assert usable.tolist() == usable_whole.tolist() == [True, False, True]
    assert frames[0].shape == (115, features.shape[1])  # 50 frames per second
    np.testing.assert_allclose(np.stack([f.mean(axis=0) for f in frames]), features,
                               rtol=1e-4, atol=1e-4)


def test_features_that_are_not_a_mean_over_frames_have_no_frames():
    from emovox.features import get_extractor

    assert get_extractor({"name": "whisper_encoder", "pooling": "mean_std"}).frame_seconds is None
    assert get_extractor("mfcc_stats").frame_seconds is None
    trimmed = get_extractor({"name": "preprocessed", "trim_top_db": 30.0,
                             "features": {"name": "whisper_encoder"}})
    assert trimmed.frame_seconds is None  # trimming moves the frames off the clock
    with pytest.raises(NotImplementedError):
        trimmed.extract_frames([synth_voice(1.0, SR)], SR)


@pytest.fixture(scope="module")
def recognizers():
    pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
    from emovox.recognizer import Recognizer

    onnx, native = Recognizer(n_jobs=1), Recognizer(n_jobs=1, runtime="torch")
    assert onnx.engine_name == "onnx" and onnx.backend.frame_seconds is not None
    return native, onnx


def test_onnx_frames_average_to_its_features_output(recognizers):
    _, onnx = recognizers
    signal = synth_voice(3.1, SR, seed=5)
    frames, _ = onnx.backend.encode_frames([signal], SR)
    whole = onnx.backend.encode([signal], SR)
    np.testing.assert_allclose(frames[0].mean(axis=0), whole.features[0], rtol=1e-4, atol=1e-4)
    pooled = onnx.backend.encode_pooled(whole.features)
    np.testing.assert_allclose(pooled.plain, whole.plain, atol=1e-5)  # the graph's head


@pytest.mark.parametrize("vad", [None, "energy"])
def test_timeline_native_and_onnx_agree_and_ignore_the_reading(recognizers, monkeypatch, vad):
    monkeypatch.setattr(frames_module, "CELL_SECONDS", 3.0)  # several cells in 14 s
    native, onnx = recognizers
    signal = _talk()
    classes = native.classes
    a = native.predict_timeline(signal, sample_rate=SR, vad=vad, chunk_seconds=100.0)
    b = native.predict_timeline(signal, sample_rate=SR, vad=vad, chunk_seconds=2.3)
    c = onnx.predict_timeline(signal, sample_rate=SR, vad=vad, chunk_seconds=4.1)
    assert a["emotion"].notna().sum() >= 8
    for other in (b, c):
        np.testing.assert_allclose(other[classes].to_numpy(float), a[classes].to_numpy(float),
                                   atol=1e-3)
        assert (other["emotion"].fillna("") == a["emotion"].fillna("")).all()


def test_each_second_of_speech_is_encoded_once(recognizers, monkeypatch):
    native, _ = recognizers
    seen: list[float] = []
    original = type(native.backend).encode_frames

    def spy(self, signals, sample_rate):
        seen.extend(len(s) / sample_rate for s in signals)
        return original(self, signals, sample_rate)

    monkeypatch.setattr(type(native.backend), "encode_frames", spy)
    signal = _talk()
    frame = native.predict_timeline(signal, sample_rate=SR, vad="energy")
    speech = sum(b - a for a, b in frame.attrs["speech_segments"])
    assert seen and sum(seen) <= speech + 0.05  # windows overlap, their speech is read once
    assert sum(seen) < 0.6 * 2 * len(frame)  # window by window: 2 s per window


def test_exports_without_frames_still_run_window_by_window(recognizers, tmp_path):
    # (recognizers: skips without onnxruntime)
    from emovox.inference.packaged import packaged_onnx
    from emovox.recognizer import OnnxRecognizer

    old = tmp_path / "old"
    shutil.copytree(packaged_onnx(), old)
    spec = json.loads((old / "preprocessing.json").read_text())
    del spec["graph"]["frames_output"]
    (old / "preprocessing.json").write_text(json.dumps(spec))
    legacy = OnnxRecognizer(old)
    assert legacy.backend.frame_seconds is None and WindowEncoder(legacy.backend, SR).grid is None
    signal = _talk(8.0)
    frame = legacy.predict_timeline(signal, sample_rate=SR, vad=None)
    windows = [signal[round(s * SR):round(e * SR)] for _, s, e in frame.index]
    expected = legacy.engine.probabilities(legacy.backend.encode(windows, SR),
                                           legacy.engine.adapter_for("stream"))
    np.testing.assert_allclose(frame[legacy.classes].to_numpy(float), expected, atol=1e-6)


@pytest.mark.parametrize("damage", [b"not a zip", b""])
def test_a_damaged_head_file_is_one_line_naming_it(tmp_path, damage):
    from emovox.errors import BundleError
    from emovox.inference.packaged import packaged_onnx
    from emovox.recognizer import OnnxRecognizer

    pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
    broken = tmp_path / "broken"
    shutil.copytree(packaged_onnx(), broken)
    (broken / "head.npz").write_bytes(damage)
    with pytest.raises(BundleError, match=r"head\.npz") as error:
        OnnxRecognizer(broken)
    assert "\n" not in str(error.value)


def test_a_model_that_does_not_adapt_encodes_windows_alone(monkeypatch):
    """Pooled windows are shifted from whole utterances; only adaptation removes that."""
    pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
    from emovox.recognizer import Recognizer

    plain = Recognizer(n_jobs=1, adapt="none")

    def refuse(*args, **kwargs):
        raise AssertionError("frames used by a model that does not adapt")

    monkeypatch.setattr(type(plain.backend), "encode_frames", refuse)
    signal = _talk(8.0)
    frame = plain.predict_timeline(signal, sample_rate=SR, vad=None)
    windows = [signal[round(s * SR):round(e * SR)] for _, s, e in frame.index]
    np.testing.assert_allclose(frame[plain.classes].to_numpy(float),
                               plain.backend.encode(windows, SR).plain, atol=1e-6)


def test_merged_spans_and_overlaps_any():
    from emovox.inference.frames import merged_spans, overlaps_any

    merged = merged_spans([(50, 60), (0, 10), (10, 20), (5, 8), (30, 30), (55, 70)])
    assert merged.tolist() == [[0, 20], [50, 70]]
    assert overlaps_any(merged, (19, 25)) and overlaps_any(merged, (40, 51))
    assert not overlaps_any(merged, (20, 50)) and not overlaps_any(merged, (70, 80))
    assert not overlaps_any(merged_spans([]), (0, 10))
