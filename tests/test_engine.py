"""The inference engine: whole recordings, one rule set on every runtime, isolated state.

Native (PyTorch + scikit-learn) and ONNX Runtime must give the same answers for every
verb: a signal, a folder, a timeline, a live stream, "uncertain" answers and the
unadapted fallback; a live stream must not change what the same recogniser answers
for files; inference imports no training code.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import corpora_root, requires_corpora

from emovox.synth import synth_voice

pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
pytest.importorskip("skl2onnx", reason="the default model exports with skl2onnx")

from emovox.bundle import load_bundle
from emovox.export import export_onnx
from emovox.recognizer import OnnxRecognizer, Recognizer

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(None, tmp_path_factory.mktemp("engine") / "onnx")


@pytest.fixture(scope="module")
def uncertain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The default bundle with a high "uncertain" threshold, and its ONNX export."""
    bundle = load_bundle()
    model = bundle.model
    model.uncertain_below = 0.6  # a calibrated model declines below this
    bundle = dataclasses.replace(bundle, model=model)
    return bundle, export_onnx(bundle, tmp_path_factory.mktemp("uncertain") / "onnx")


def _voices(folder: Path, n: int = 10) -> list[Path]:
    """One synthetic speaker, ``n`` recordings of varied pitch and liveliness."""
    paths = []
    for i in range(n):
        signal = 0.4 * synth_voice(1.4 + 0.1 * i, f0=105 + 11 * i, f0_range=0.05 + 0.05 * i,
                                   loudness=0.2 + 0.03 * i, seed=70 + i)
        paths.append(folder / f"take{i}.wav")
        sf.write(paths[-1], signal.astype(np.float32), 16000)
    return paths


def _probabilities(frame: Any, classes: list[str]) -> np.ndarray:
    return frame[classes].to_numpy(dtype=np.float64)


def _assert_same(a: Any, b: Any, classes: list[str]) -> None:
    assert a.index.equals(b.index)
    assert list(a.columns) == list(b.columns)
    pa, pb = _probabilities(a, classes), _probabilities(b, classes)
    voiced = ~np.isnan(pa).any(axis=1)
    assert np.array_equal(voiced, ~np.isnan(pb).any(axis=1))
    np.testing.assert_allclose(pa[voiced], pb[voiced], atol=TOLERANCE)
    flips = a["emotion"].to_numpy()[voiced] != b["emotion"].to_numpy()[voiced]
    # Only a near-tie (or a confidence at the uncertain threshold) may flip.
    top = np.sort(pa[voiced], axis=1)[:, -2:]
    assert np.all((top[flips, 1] - top[flips, 0] < 2 * TOLERANCE)
                  | (np.abs(a["confidence"].to_numpy()[voiced][flips] - 0.6) < TOLERANCE))


# ------------------------------------------------------------------ parity
def test_native_and_onnx_agree_on_every_verb(default_onnx, tmp_path):
    native, onnx_rec = Recognizer(n_jobs=1, runtime="torch"), OnnxRecognizer(default_onnx)
    classes = native.classes
    assert onnx_rec.classes == classes
    paths = _voices(tmp_path)
    # a folder (batch adaptation over 10 files) and a lone file (the unadapted fallback)
    _assert_same(native.predict_files(paths, progress=False),
                 onnx_rec.predict_files(paths, progress=False), classes)
    _assert_same(native.predict_file(paths[0]), onnx_rec.predict_file(paths[0]), classes)
    lone = native.predict_file(paths[0])
    plain = Recognizer(n_jobs=1, adapt="none", runtime="torch").predict_file(paths[0])
    np.testing.assert_allclose(_probabilities(lone, classes), _probabilities(plain, classes))
    # a signal at another rate
    signal = synth_voice(2.5, 44100, seed=3)
    _assert_same(native.predict_signal(signal, 44100), onnx_rec.predict_signal(signal, 44100),
                 classes)
    # a timeline (stream adaptation; the energy detector, as silero hears no synthetic
    # speech) and a live stream
    long = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    _assert_same(native.predict_timeline(long, sample_rate=16000, vad="energy"),
                 onnx_rec.predict_timeline(long, sample_rate=16000, vad="energy"), classes)
    rows = []
    for recognizer in (native, onnx_rec):
        live = recognizer.stream(window=2.0, hop=1.0, vad=None)
        rows.append([row["probabilities"] for row in live.run(np.array_split(long, 9))])
    assert len(rows[0]) == len(rows[1]) >= 10
    np.testing.assert_allclose([[r[c] for c in classes] for r in rows[0]],
                               [[r[c] for c in classes] for r in rows[1]], atol=TOLERANCE)


def test_uncertain_answers_survive_the_export(uncertain, tmp_path):
    bundle, folder = uncertain
    native, onnx_rec = Recognizer(bundle, n_jobs=1), OnnxRecognizer(folder)
    assert onnx_rec.uncertain_below == pytest.approx(0.6)
    paths = _voices(tmp_path)
    a = native.predict_files(paths, progress=False)
    b = onnx_rec.predict_files(paths, progress=False)
    _assert_same(a, b, native.classes)
    assert (a["emotion"] == "uncertain").any()  # the threshold is met by some rows
    assert list(a["emotion"]) == list(b["emotion"])


def test_calibration_below_the_threshold_applies_on_neither_runtime(default_onnx, tmp_path):
    paths = _voices(tmp_path, n=3)
    for recognizer in (Recognizer(n_jobs=1, runtime="torch"), OnnxRecognizer(default_onnx)):
        with pytest.warns(UserWarning, match="calibration not applied"):
            assert recognizer.calibrate(paths) == 3
        assert not recognizer.calibrated


# ------------------------------------------------------------------ isolation
def test_a_live_stream_leaves_the_recognizers_files_unchanged(tmp_path):
    recognizer = Recognizer(n_jobs=1, runtime="torch")
    paths = _voices(tmp_path)
    before = recognizer.predict_files(paths, progress=False)
    live = recognizer.stream(window=2.0, hop=0.5, vad=None)
    signal = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    assert len(list(live.run(np.array_split(signal, 20)))) > 8  # running statistics built
    after = recognizer.predict_files(paths, progress=False)
    np.testing.assert_array_equal(_probabilities(before, recognizer.classes),
                                  _probabilities(after, recognizer.classes))
    assert recognizer.adapter.mode == "batch"


def test_inference_imports_no_training_code():
    code = (
        "import sys\n"
        "import emovox.recognizer, emovox.timeline, emovox.listen, emovox.serve.app\n"
        "import emovox.inference.engine, emovox.inference.onnx_backend\n"
        "r = emovox.recognizer.Recognizer()  # the packaged model, as the CLI runs it\n"
        "from emovox.synth import synth_voice\n"
        "r.predict_signal(synth_voice(1.5), 16000)\n"
        "bad = [m for m in sys.modules if m.startswith('emovox.') and m.split('.')[1] in\n"
        "       ('training', 'experiment', 'corpora', 'protocols', 'evaluation', 'augment',\n"
        "        'report', 'studies', 'models')]\n"
        "heavy = [m for m in ('torch', 'sklearn') if m in sys.modules]\n"
        "print(bad, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "[] []", out.stdout


# ------------------------------------------------------------------ whole recordings
@requires_corpora
def test_a_long_file_is_answered_from_all_of_it(tmp_path):
    """60 s of one speaker: 30 s sad then 30 s angry. The answer covers both halves."""
    root = corpora_root()
    assert root is not None
    folder = root / "crema-d" / "AudioWAV"
    speaker = "1012"  # a CREMA-D actor of the shared part
    parts = {}
    for emotion in ("SAD", "ANG"):
        files = sorted(folder.glob(f"{speaker}_*_{emotion}_*.*"))
        if not files:
            pytest.skip(f"no CREMA-D {emotion} files of actor {speaker}")
        pieces, seconds = [], 0.0
        while seconds < 30.0:
            for path in files:
                audio, rate = sf.read(path, dtype="float32")
                assert rate == 16000
                pieces += [audio, np.zeros(4000, np.float32)]
                seconds += (len(audio) + 4000) / rate
                if seconds >= 30.0:
                    break
        parts[emotion] = np.concatenate(pieces)[: 30 * 16000]
    signal = np.concatenate([parts["SAD"], parts["ANG"]])
    path = tmp_path / "sixty.wav"
    sf.write(path, signal, 16000)

    recognizer = Recognizer(n_jobs=1)
    whole = recognizer.predict_file(path)
    first = recognizer.predict_signal(signal[: 30 * 16000], 16000)
    assert whole.index[0][2] == pytest.approx(60.0, abs=0.01)
    assert whole["basis"].iloc[0].startswith("mean of ")
    classes = recognizer.classes
    assert np.abs(_probabilities(whole, classes) - _probabilities(first, classes)).max() > 0.05
    # The same answer as the mean of its timeline's speech windows.
    timeline = recognizer.predict_timeline(path)
    voiced = timeline[timeline["emotion"].notna()]
    np.testing.assert_allclose(_probabilities(whole, classes)[0],
                               _probabilities(voiced, classes).mean(axis=0), atol=1e-9)


def test_the_packaged_onnx_model_is_the_packaged_bundle():
    """The command line runs the packaged export: it must answer as the bundle does."""
    from emovox.inference.packaged import packaged_onnx

    folder = packaged_onnx()
    assert folder is not None, ("src/emovox/bundles/default-onnx is missing or stale: "
                                "emovox export --onnx src/emovox/bundles/default-onnx")
    auto, native = Recognizer(n_jobs=1), Recognizer(n_jobs=1, runtime="torch")
    assert (auto.engine_name, native.engine_name) == ("onnx", "torch")
    signal = synth_voice(2.5, 22050, seed=9)
    np.testing.assert_allclose(
        _probabilities(auto.predict_signal(signal, 22050), auto.classes),
        _probabilities(native.predict_signal(signal, 22050), native.classes), atol=TOLERANCE)
    with pytest.raises(Exception, match="runtime must be"):
        Recognizer(runtime="tensorflow")


def test_utterances_are_answered_whole_and_longer_recordings_from_windows():
    from emovox.recognizer import WHOLE, WHOLE_MAX_SECONDS

    recognizer = Recognizer(n_jobs=1)
    short = recognizer.predict_signal(synth_voice(WHOLE_MAX_SECONDS - 2, seed=4), 16000)
    assert short["basis"].iloc[0] == WHOLE
    longer = recognizer.predict_signal(synth_voice(WHOLE_MAX_SECONDS + 2, seed=4), 16000)
    assert longer["basis"].iloc[0].startswith("mean of ")
    # The same windows as its timeline (silero hears no synthetic speech: all windows).
    timeline = recognizer.predict_timeline(synth_voice(WHOLE_MAX_SECONDS + 2, seed=4),
                                           sample_rate=16000, vad=None)
    np.testing.assert_allclose(_probabilities(longer, recognizer.classes)[0],
                               _probabilities(timeline, recognizer.classes).mean(axis=0),
                               atol=1e-9)
