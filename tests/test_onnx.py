"""ONNX export: self-contained graphs that give the native model's probabilities."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import corpora_root, requires_corpora
from test_serve import make_bundle

from emovox.synth import synth_voice

pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")

from emovox.errors import BundleError
from emovox.export import (
    LINEAR_HEAD_FILE,
    MODEL_FILE,
    SPEC_FILE,
    OnnxRecognizer,
    export_onnx,
    whisper_log_mel_numpy,
)
from emovox.recognizer import Recognizer

TOLERANCE = 1e-3
WHISPER = {"name": "whisper_encoder", "layers": "all", "pooling": "mean"}


def _signals() -> list[tuple[str, np.ndarray]]:
    """Synthetic voices of several lengths and styles (one longer than Whisper's 30 s)."""
    return [
        ("short", synth_voice(0.6, f0=210, f0_range=0.4, loudness=0.5, seed=11)),
        ("calm", synth_voice(2.2, f0=100, f0_range=0.05, loudness=0.15, seed=12)),
        ("odd", synth_voice(3.337, f0=170, f0_range=0.3, loudness=0.4, seed=13)),
        ("long", synth_voice(7.5, f0=140, f0_range=0.2, loudness=0.3, seed=14)),
    ]


def _probabilities(frame: Any, classes: list[str]) -> np.ndarray:
    return frame[classes].to_numpy(dtype=np.float64)


def _assert_agree(native: Any, onnx_rec: OnnxRecognizer, signal: np.ndarray,
                  rate: int = 16000) -> float:
    a = native.predict_signal(signal, rate)
    b = onnx_rec.predict_signal(signal, rate)
    assert list(a.columns) == list(b.columns)
    assert a.index.equals(b.index)
    diff = float(np.max(np.abs(_probabilities(a, native.classes) -
                               _probabilities(b, native.classes))))
    assert diff < TOLERANCE
    if a["emotion"].iloc[0] != b["emotion"].iloc[0]:  # only a near-tie may flip
        top = np.sort(_probabilities(a, native.classes)[0])[-2:]
        assert top[1] - top[0] < 2 * TOLERANCE
    return diff


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def whisper_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="whisper_encoder features need torch")
    return make_bundle(tmp_path_factory.mktemp("whisper"), WHISPER,
                       {"name": "logreg", "params": {"C": 0.1}})


@pytest.fixture(scope="module")
def whisper_onnx(whisper_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(whisper_bundle, tmp_path_factory.mktemp("export") / "onnx")


@pytest.fixture(scope="module")
def mfcc_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("mfcc"))


# ---------------------------------------------------------------------- front end
def test_numpy_log_mel_equals_whisper_front_end() -> None:
    torch_mel = pytest.importorskip("emovox.features.encoders").whisper_log_mel
    for n in (201, 4000, 48_000, 48_123):
        signal = synth_voice(n / 16000 + 0.01, seed=n)[:n]
        ours = whisper_log_mel_numpy(signal)
        reference = torch_mel(signal).numpy()
        assert ours.shape == reference.shape == (80, n // 160)
        assert np.max(np.abs(ours - reference)) < 1e-4
    with pytest.raises(ValueError, match="too short"):
        whisper_log_mel_numpy(np.zeros(200))


# ---------------------------------------------------------------------- whisper graph
def test_whisper_export_is_one_self_contained_graph(whisper_onnx: Path) -> None:
    import onnx

    from emovox.features.encoders import (
        WHISPER_HOP_LENGTH,
        WHISPER_N_FFT,
        WHISPER_N_MELS,
        WHISPER_SAMPLE_RATE,
    )

    # The graph, and beside it its own head for windows pooled from its frames output.
    assert sorted(p.name for p in whisper_onnx.iterdir()) == sorted(
        ["MODEL_CARD.md", LINEAR_HEAD_FILE, MODEL_FILE, SPEC_FILE])
    model = onnx.load(str(whisper_onnx / MODEL_FILE), load_external_data=False)
    onnx.checker.check_model(model)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    (graph_input,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "waveform" and dims == ["batch", "samples"]
    outputs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
               for o in model.graph.output}
    assert list(outputs) == ["probabilities", "features", "frames"]
    width = outputs["features"][1]
    assert outputs["frames"] == ["batch", "frames", width] and width == 5 * 384

    spec = json.loads((whisper_onnx / SPEC_FILE).read_text())
    assert spec["sha256"] == hashlib.sha256((whisper_onnx / MODEL_FILE).read_bytes()).hexdigest()
    assert spec["graph"]["kind"] == "whisper_waveform"
    assert spec["classes"] == ["angry", "happy", "sad"]
    mel = spec["preprocessing"]["log_mel"]
    assert (mel["sample_rate"], mel["n_fft"], mel["hop_length"], mel["n_mels"]) == (
        WHISPER_SAMPLE_RATE, WHISPER_N_FFT, WHISPER_HOP_LENGTH, WHISPER_N_MELS)
    assert "(x + 4.0) / 4.0" in mel["scale"] and "max(x) - 8.0" in mel["floor"]
    assert spec["preprocessing"]["audio"]["max_seconds"] == 30.0
    assert spec["check"]["max_abs_diff"] < TOLERANCE
    assert "LogisticRegression folded in" in spec["graph"]["contains"]


def test_whisper_onnx_matches_native_on_synthetic_audio(whisper_bundle: Path,
                                                        whisper_onnx: Path,
                                                        tmp_path: Path) -> None:
    native = Recognizer(whisper_bundle, n_jobs=1)
    exported = OnnxRecognizer(whisper_onnx)
    assert exported.classes == native.classes
    confident = []
    for _, signal in _signals():
        _assert_agree(native, exported, signal)
        confident.append(float(native.predict_signal(signal, 16000)["confidence"].iloc[0]))
    assert min(confident) < 0.99  # the comparison is not only between saturated outputs
    # 44.1 kHz stereo, and longer than the encoder's 30 s (cropped the same way).
    stereo = np.stack([synth_voice(3.0, 44100, seed=5), synth_voice(3.0, 44100, seed=6)], 1)
    _assert_agree(native, exported, stereo, 44100)
    # Longer than the encoder's 30 s: answered from its windows, never cropped.
    _assert_agree(native, exported, synth_voice(31.0, seed=8, f0=200), 16000)

    paths = []
    for name, signal in _signals():
        paths.append(tmp_path / f"{name}.wav")
        sf.write(paths[-1], signal, 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    files = [*paths, tmp_path / "bad.wav"]
    a = native.predict_files(files, progress=False)
    b = exported.predict_files(files, progress=False)
    assert a.index.equals(b.index)
    assert np.max(np.abs(_probabilities(a, native.classes) -
                         _probabilities(b, native.classes))) < TOLERANCE
    assert [f for f, _ in b.attrs["failures"]] == [str(tmp_path / "bad.wav")]
    with pytest.raises(Exception, match="not a readable audio file"):
        exported.predict_file(tmp_path / "bad.wav")


def test_onnx_inference_does_not_import_torch(whisper_onnx: Path) -> None:
    code = (
        "import sys\n"
        "from emovox.export import OnnxRecognizer\n"
        "from emovox.synth import synth_voice\n"
        f"r = OnnxRecognizer({str(whisper_onnx)!r})\n"
        "print(r.predict_signal(synth_voice(1.5), 16000)['emotion'].iloc[0])\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    emotion, torch_loaded = out.stdout.split()
    assert emotion in {"angry", "happy", "sad"}
    assert torch_loaded == "False"


@requires_corpora
def test_onnx_matches_native_on_real_speech(whisper_bundle: Path, whisper_onnx: Path,
                                            tmp_path: Path) -> None:
    root = corpora_root()
    assert root is not None
    files = sorted((root / "emodb" / "wav").glob("*.*"))[:3]
    files += sorted((root / "ravdess" / "Audio_Speech_Actors_01-24").rglob("*.*"))[:3]
    files = [f for f in files if f.suffix.lower() in {".wav", ".flac"}]
    if len(files) < 2:
        pytest.skip("EmoDB / RAVDESS files not found under the corpora folder")
    pairs = [(Recognizer(whisper_bundle, n_jobs=1), OnnxRecognizer(whisper_onnx))]
    try:  # the packaged model too, whatever its features
        from emovox.bundle import load_bundle

        default = load_bundle()
    except Exception:  # not built in this checkout
        default = None
    if default is not None:
        pytest.importorskip("skl2onnx", reason="needs skl2onnx")
        folder = export_onnx(default, tmp_path / "default-onnx")
        # The graph holds no speaker adaptation: compare with the unadapted native model.
        pairs.append((Recognizer(default, n_jobs=1, adapt="none"), OnnxRecognizer(folder)))
    for native, exported in pairs:
        a = native.predict_files(files, progress=False)
        b = exported.predict_files(files, progress=False)
        assert len(a) == len(files) and a.index.equals(b.index)
        diff = np.abs(_probabilities(a, native.classes) - _probabilities(b, native.classes))
        assert diff.max() < TOLERANCE, diff.max()
        assert list(a["emotion"]) == list(b["emotion"])


def test_default_export_adapts_a_batch_as_the_native_model_does(tmp_path: Path) -> None:
    """The packaged (speaker-normalised) model: batch adaptation and calibration agree."""
    pytest.importorskip("torch", reason="the native model needs torch")
    from scipy.signal import butter, sosfilt

    from emovox.bundle import load_bundle

    default = load_bundle()
    folder = export_onnx(default, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["adaptation"]["file"] == "adaptation.npz"
    assert (folder / "adaptation.npz").is_file()
    # One synthetic speaker heard through a dull channel, ten recordings.
    dull = butter(4, 1500, fs=16000, output="sos")
    files = []
    for n in range(10):
        signal = 0.5 * sosfilt(dull, synth_voice(1.5 + 0.1 * n, f0=110 + 12 * n,
                                                 f0_range=0.05 + 0.05 * n, seed=40 + n))
        files.append(tmp_path / f"take{n}.wav")
        sf.write(files[-1], signal.astype(np.float32), 16000, subtype="FLOAT")

    def probabilities(recognizer: Any, paths: list[Path]) -> np.ndarray:
        return _probabilities(recognizer.predict_files(paths, progress=False),
                              default.classes)

    adapted = probabilities(OnnxRecognizer(folder), files)
    np.testing.assert_allclose(adapted, probabilities(Recognizer(default, n_jobs=1), files),
                               atol=TOLERANCE)
    unadapted = probabilities(OnnxRecognizer(folder, adapt="none"), files)
    np.testing.assert_allclose(
        unadapted, probabilities(Recognizer(default, n_jobs=1, adapt="none"), files),
        atol=TOLERANCE)
    assert np.abs(adapted - unadapted).max() > 0.05  # adaptation changed the answers
    # Fewer than 8 files: not enough of the speaker, the unadapted model answers.
    np.testing.assert_allclose(probabilities(OnnxRecognizer(folder), files[:3]),
                               unadapted[:3], atol=1e-6)
    # A calibration recording set adapts single predictions, natively and in ONNX.
    exported, native = OnnxRecognizer(folder), Recognizer(default, n_jobs=1)
    assert exported.calibrate(files) == native.calibrate(files) == 10
    one = sf.read(files[0])[0]
    np.testing.assert_allclose(
        _probabilities(exported.predict_signal(one, 16000), default.classes),
        _probabilities(native.predict_signal(one, 16000), default.classes), atol=TOLERANCE)
    with pytest.raises(Exception, match="adapt must be"):
        OnnxRecognizer(folder, adapt="sometimes")


# ---------------------------------------------------------------------- other models
@pytest.mark.filterwarnings("ignore:.*probability:FutureWarning")  # SVC's, in sklearn 1.9
def test_whisper_with_another_classifier_is_one_graph(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="whisper_encoder features need torch")
    pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    bundle = make_bundle(tmp_path, {"name": "whisper_encoder", "layers": [4, 2],
                                    "pooling": "mean_std"}, {"name": "svm"})
    folder = export_onnx(bundle, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "whisper_waveform" and "skl2onnx" in spec["graph"]["contains"]
    native, exported = Recognizer(bundle, n_jobs=1), OnnxRecognizer(folder)
    for _, signal in _signals():
        _assert_agree(native, exported, signal)


def test_loudness_normalised_whisper_exports_its_signal_steps(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="whisper_encoder features need torch")
    features = {"name": "preprocessed", "features": WHISPER, "loudness_lufs": -23.0,
                "trim_top_db": 30.0}
    bundle = make_bundle(tmp_path, features, {"name": "logreg", "params": {"C": 0.1}})
    folder = export_onnx(bundle, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "whisper_waveform"
    # Loudness runs in the graph; trimming is left to the caller.
    assert spec["preprocessing"]["loudness"]["target_lufs"] == -23.0
    assert spec["preprocessing"]["signal"]["loudness_lufs"] is None
    assert spec["preprocessing"]["signal"]["trim_top_db"] == 30.0
    native, exported = Recognizer(bundle, n_jobs=1), OnnxRecognizer(folder)
    for _, signal in _signals():
        _assert_agree(native, exported, signal)
        # The level of the recording does not change the answer of either.
        _assert_agree(native, exported, 0.1 * signal)
        np.testing.assert_allclose(
            _probabilities(exported.predict_signal(0.1 * signal, 16000), native.classes),
            _probabilities(exported.predict_signal(signal, 16000), native.classes), atol=2e-3)
    padded = np.concatenate([np.zeros(16000, np.float32), synth_voice(2.0, seed=3),
                             np.zeros(8000, np.float32)])
    path = tmp_path / "padded.wav"
    sf.write(path, padded, 16000, subtype="FLOAT")
    a = native.predict_files([path], progress=False)
    b = exported.predict_files([path], progress=False)
    assert np.max(np.abs(_probabilities(a, native.classes) -
                         _probabilities(b, native.classes))) < TOLERANCE


def test_other_preprocessed_features_export_the_classifier_only(tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    features = {"name": "preprocessed", "features": "mfcc_stats", "loudness_lufs": -23.0}
    bundle = make_bundle(tmp_path, features)
    folder = export_onnx(bundle, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "features" and "signal" not in spec["preprocessing"]
    assert spec["preprocessing"]["extractor"]["spec"]["name"] == "preprocessed"
    native, exported = Recognizer(bundle, n_jobs=1), OnnxRecognizer(folder)
    for _, signal in _signals():
        _assert_agree(native, exported, signal)


def test_classifier_only_export_for_other_features(mfcc_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    folder = export_onnx(mfcc_bundle, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "features"
    assert spec["graph"]["input"]["name"] == "features"
    assert spec["preprocessing"]["extractor"]["spec"]["name"] == "mfcc_stats"
    native, exported = Recognizer(mfcc_bundle, n_jobs=1), OnnxRecognizer(folder)
    for _, signal in _signals():
        _assert_agree(native, exported, signal)


def test_network_export(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="networks need torch")
    bundle = make_bundle(tmp_path, {"name": "mfcc_sequence", "n_mfcc": 20, "duration": 1.0},
                         {"name": "cnn_small_b", "params": {"epochs": 2, "batch_size": 8}})
    folder = export_onnx(bundle, tmp_path / "onnx")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "features" and "network" in spec["graph"]["contains"]
    native, exported = Recognizer(bundle, n_jobs=1), OnnxRecognizer(folder)
    for _, signal in _signals():
        _assert_agree(native, exported, signal)


def test_cli_export(mfcc_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    from typer.testing import CliRunner

    from emovox.cli import app

    out = CliRunner().invoke(app, ["export", "--onnx", str(tmp_path / "model"), "--bundle",
                                   str(mfcc_bundle)])
    assert out.exit_code == 0, out.output
    assert "ONNX model written to" in out.output and "largest difference" in out.output
    assert (tmp_path / "model" / MODEL_FILE).is_file()
    again = OnnxRecognizer(tmp_path / "model").predict_signal(synth_voice(1.0), 16000)
    assert list(again.columns) == ["emotion", "confidence", "angry", "happy", "sad",
                                    "basis"]


def test_not_an_export_is_a_clear_error(tmp_path: Path) -> None:
    from emovox.errors import BundleError

    with pytest.raises(BundleError, match="not an emovox ONNX export"):
        OnnxRecognizer(tmp_path)


# ---------------------------------------------------------------------- damaged exports
def _damage_spec(folder: Path, change) -> None:
    spec_file = folder / "preprocessing.json"
    spec = json.loads(spec_file.read_text())
    result = change(spec)
    spec_file.write_text(json.dumps(spec if result is None else result))


@pytest.mark.parametrize("change", [
    lambda spec: [spec],
    lambda spec: spec.pop("graph") and None,
    lambda spec: spec.update(model_file="../../elsewhere/model.onnx"),
    lambda spec: spec.update(preprocessing="x"),
    lambda spec: spec["preprocessing"]["audio"].update(sample_rate="fast"),
    lambda spec: spec.update(labels={"classes": 3}),
], ids=["list", "no graph", "path out", "preprocessing string", "rate text", "labels"])
def test_a_damaged_onnx_export_is_one_bundle_error(mfcc_bundle, tmp_path, change) -> None:
    folder = export_onnx(mfcc_bundle, tmp_path / "onnx")
    _damage_spec(folder, change)
    with pytest.raises(BundleError) as caught:
        OnnxRecognizer(folder)
    assert "\n" not in str(caught.value)
    assert str(folder) in str(caught.value)


def test_a_truncated_onnx_graph_is_one_bundle_error(mfcc_bundle, tmp_path) -> None:
    folder = export_onnx(mfcc_bundle, tmp_path / "onnx")
    graph = folder / json.loads((folder / "preprocessing.json").read_text())["model_file"]
    graph.write_bytes(graph.read_bytes()[:100])
    with pytest.raises(BundleError, match="not a loadable ONNX model"):
        OnnxRecognizer(folder)
