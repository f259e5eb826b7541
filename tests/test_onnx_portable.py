"""Portable ONNX export: the graph takes the waveform and holds loudness and log-mel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import corpora_root, requires_corpora

from emovox.synth import synth_voice

pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime")
pytest.importorskip("torch", reason="building the graph needs torch")

import onnxruntime as ort

from emovox.export import MODEL_FILE, SPEC_FILE, OnnxRecognizer, export_onnx
from emovox.export_waveform import front_end_onnx
from emovox.inference.frontend import whisper_log_mel_numpy
from emovox.preprocess import integrated_loudness
from emovox.recognizer import Recognizer

TOLERANCE = 1e-3
#: Largest accepted difference from pyloudnorm, in dB.
LOUDNESS_TOLERANCE = 0.05
RATE = 16_000


def _session(proto: Any) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _run(session: Any, signal: np.ndarray) -> tuple[np.ndarray, float]:
    mel, loudness = session.run(None, {"waveform": np.asarray(signal, np.float32)[None]})
    return mel[0], float(loudness[0])


def _with_loudness(signal: np.ndarray, lufs: float) -> np.ndarray:
    """``signal`` scaled to an integrated loudness of ``lufs`` (pyloudnorm)."""
    gain = 10 ** ((lufs - integrated_loudness(signal, RATE)) / 20)
    return (signal * gain).astype(np.float32)


def _probabilities(frame: Any, classes: list[str]) -> np.ndarray:
    return frame[classes].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def front() -> Any:
    return _session(front_end_onnx(-23.0))


@pytest.fixture(scope="module")
def default_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("portable")
    return export_onnx(None, folder / "float32"), export_onnx(None, folder / "int8", int8=True)


# ---------------------------------------------------------------------- front end
def test_in_graph_log_mel_equals_torch_and_numpy() -> None:
    from emovox.features.encoders import whisper_log_mel

    session = _session(front_end_onnx(None))
    for n in (201, 4000, 32_000, 48_123, 30 * RATE):
        for level in (1.0, 1e-3, 20.0):
            signal = synth_voice(n / RATE + 0.01, seed=n)[:n] * level
            mel, loudness = _run(session, signal)
            assert mel.shape == (80, n // 160) and np.isnan(loudness)
            assert np.max(np.abs(mel - whisper_log_mel(signal).numpy())) < 1e-4
            assert np.max(np.abs(mel - whisper_log_mel_numpy(signal))) < 1e-4
    # The analysed window is cut in the graph: the first 30 s.
    long = synth_voice(31.0, seed=2)
    np.testing.assert_allclose(_run(session, long)[0],
                               whisper_log_mel_numpy(long[: 30 * RATE]), atol=1e-4)
    # Equal-length rows are one batch; each keeps its own floor (max - 8).
    rows = np.stack([synth_voice(2.0, seed=s) * g for s, g in ((1, 1.0), (2, 0.01), (3, 3.0))])
    mels = session.run(None, {"waveform": rows.astype(np.float32)})[0]
    for row, mel in zip(rows, mels, strict=True):
        np.testing.assert_allclose(mel, whisper_log_mel_numpy(row), atol=1e-4)


@pytest.mark.parametrize("lufs", [-10.0, -23.0, -45.0, -60.0, -66.0, -69.0, -69.9])
def test_in_graph_loudness_matches_pyloudnorm(front: Any, lufs: float) -> None:
    voice = synth_voice(4.0, seed=5)
    signals = [voice, voice[:5000],  # shorter than a 400 ms block: one block
               np.concatenate([voice, np.zeros(RATE, np.float32), 0.1 * voice]),  # relative gate
               voice * np.linspace(1.0, 0.003, voice.size, dtype=np.float32),  # fades out
               np.random.default_rng(0).standard_normal(RATE + 777).astype(np.float32)]
    for signal in signals:
        scaled = _with_loudness(signal, lufs)
        _, measured = _run(front, scaled)
        expected = integrated_loudness(scaled, RATE)
        assert abs(measured - expected) < LOUDNESS_TOLERANCE, (lufs, measured, expected)


def test_in_graph_loudness_gates_like_pyloudnorm(front: Any) -> None:
    sine = np.sin(2 * np.pi * 997 * np.arange(RATE) / RATE).astype(np.float32)
    # BS.1770's reference: a full-scale 997 Hz sine reads -3.01 LUFS (at 48 kHz;
    # pyloudnorm's biquads designed for 16 kHz read -3.08).
    assert abs(_run(front, sine)[1] - integrated_loudness(sine, RATE)) < 0.01
    assert abs(_run(front, sine)[1] + 3.01) < 0.1
    # Every block under -70 LUFS: no loudness, and the graph leaves the level alone.
    quiet = 1e-4 * synth_voice(2.0, seed=1)
    assert integrated_loudness(quiet, RATE) == -np.inf
    mel, loudness = _run(front, quiet)
    assert loudness == -np.inf
    np.testing.assert_allclose(mel, whisper_log_mel_numpy(quiet), atol=1e-4)
    # Straddling the absolute gate: some blocks kept, some gated out.
    edge = _with_loudness(np.concatenate([synth_voice(1.0, seed=2),
                                          0.2 * synth_voice(1.0, seed=3)]), -67.0)
    assert abs(_run(front, edge)[1] - integrated_loudness(edge, RATE)) < LOUDNESS_TOLERANCE
    # The gain reaches the target, and the mel is that of the scaled signal.
    loud = 3.0 * synth_voice(2.5, seed=4)
    np.testing.assert_allclose(_run(front, loud)[0],
                               whisper_log_mel_numpy(_with_loudness(loud, -23.0)), atol=1e-4)


@requires_corpora
def test_in_graph_loudness_matches_pyloudnorm_on_corpus_files(front: Any) -> None:
    from emovox.audio import load_audio

    root = corpora_root()
    assert root is not None
    files = []
    for corpus in ("emodb", "ravdess", "crema-d"):
        files += sorted(f for f in (root / corpus).rglob("*") if f.suffix == ".flac")[:4]
    if not files:
        pytest.skip("no corpus files")
    for path in files:
        signal = load_audio(path, RATE)
        assert abs(_run(front, signal)[1] - integrated_loudness(signal, RATE)) < 0.01, path


# ---------------------------------------------------------------------- whole model
def test_waveform_export_spec_tells_a_caller_what_to_do(default_exports: tuple[Path, Path]
                                                        ) -> None:
    import onnx

    folder, _ = default_exports
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "whisper_waveform"
    assert spec["graph"]["input"]["shape"] == ["batch", "samples"]
    assert spec["preprocessing"]["loudness"]["target_lufs"] == -23.0
    assert "signal" not in spec["preprocessing"]  # nothing left to do in Python
    assert any("resample" in step for step in spec["preprocessing"]["caller"])
    assert spec["check"]["max_abs_diff"] < TOLERANCE
    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "waveform" and dims == ["batch", "samples"]


def _assert_answers_as_native(model: Path | None, folder: Path, tmp_path: Path,
                              signals: list[np.ndarray], files: list[np.ndarray],
                              timeline: np.ndarray, min_windows: int) -> None:
    """The export in ``folder`` answers as the bundle ``model`` (None: the packaged
    default) does natively, within TOLERANCE: each signal alone, the files unadapted
    and adapted together as one speaker, and a timeline adapted as a stream."""
    native = Recognizer(model, n_jobs=1, adapt="none", runtime="torch")
    exported = OnnxRecognizer(folder, adapt="none")
    classes = native.classes
    for signal in signals:
        np.testing.assert_allclose(
            _probabilities(exported.predict_signal(signal, RATE), classes),
            _probabilities(native.predict_signal(signal, RATE), classes), atol=TOLERANCE)
    paths = []
    for n, take in enumerate(files):
        paths.append(tmp_path / f"take{n}.wav")
        sf.write(paths[-1], take, RATE)
    for adapt in ("none", "batch"):
        a = Recognizer(model, n_jobs=1, adapt=adapt, runtime="torch").predict_files(
            paths, progress=False)
        b = OnnxRecognizer(folder, adapt=adapt).predict_files(paths, progress=False)
        np.testing.assert_allclose(_probabilities(b, classes), _probabilities(a, classes),
                                   atol=TOLERANCE)
    a = Recognizer(model, n_jobs=1, runtime="torch").predict_timeline(
        timeline, sample_rate=RATE, vad="energy")
    b = OnnxRecognizer(folder).predict_timeline(timeline, sample_rate=RATE, vad="energy")
    assert a.index.equals(b.index) and a["emotion"].notna().sum() >= min_windows
    assert np.nanmax(np.abs(_probabilities(a, classes) - _probabilities(b, classes))) < TOLERANCE


def test_waveform_export_matches_native(default_exports: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    signals = [level * synth_voice(seconds, seed=seed) for seconds, level, seed in
               ((0.7, 0.5, 1), (2.0, 0.05, 2), (3.3, 2.0, 3), (12.0, 0.2, 4))]
    # Ten files: enough for batch adaptation.
    files = [(0.1 + 0.1 * n) * synth_voice(1.5 + 0.1 * n, f0=110 + 12 * n, seed=40 + n)
             for n in range(10)]
    # A timeline: many equal 2 s windows, one batch.
    timeline = np.concatenate([synth_voice(3.0, seed=i) * (0.5 if i % 2 else 0.05)
                               for i in range(6)])
    _assert_answers_as_native(None, default_exports[0], tmp_path, signals, files, timeline,
                              min_windows=10)


def test_a_fused_bundle_exports_as_one_graph_holding_both_encoders(tmp_path: Path) -> None:
    """The packaged accurate bundle (Whisper tiny.en and base states side by side)
    exports to one waveform graph that answers as the bundle does: files, adapted
    files and a timeline pooled from the graph's frames."""
    from emovox.inference.packaged import EXPORT_SOURCES, bundles_root

    source = bundles_root() / EXPORT_SOURCES["accurate"]
    folder = export_onnx(source, tmp_path / "accurate")
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "whisper_waveform"
    assert spec["graph"]["frames_output"]["shape"][2] == 3 * 384 + 3 * 512
    signals = [0.3 * synth_voice(seconds, seed=seed) for seconds, seed in ((1.2, 1), (4.0, 2))]
    files = [0.2 * synth_voice(1.5, f0=110 + 12 * n, seed=60 + n) for n in range(8)]
    timeline = np.concatenate([synth_voice(3.0, seed=i) * (0.5 if i % 2 else 0.05)
                               for i in range(4)])
    _assert_answers_as_native(source, folder, tmp_path, signals, files, timeline,
                              min_windows=5)


def test_waveform_graph_batches_equal_lengths(default_exports: tuple[Path, Path]) -> None:
    from emovox.inference.onnx_backend import OnnxBackend

    backend = OnnxBackend(default_exports[0])
    windows = [synth_voice(2.0, seed=s) * g for s, g in ((1, 1.0), (2, 0.1), (3, 0.5))]
    batch = backend.encode([*windows, synth_voice(1.0, seed=4)], RATE)
    one = [backend.encode([w], RATE) for w in windows]
    assert batch.usable.all() and batch.plain is not None
    for i, single in enumerate(one):
        assert single.plain is not None
        np.testing.assert_allclose(batch.plain[i], single.plain[0], atol=1e-5)
        np.testing.assert_allclose(batch.features[i], single.features[0], atol=1e-4)


@requires_corpora
def test_waveform_export_matches_native_on_corpus_files(default_exports: tuple[Path, Path]
                                                        ) -> None:
    root = corpora_root()
    assert root is not None
    files = []
    for corpus in ("emodb", "ravdess", "crema-d"):
        files += sorted(f for f in (root / corpus).rglob("*") if f.suffix == ".flac")[:3]
    native, exported = Recognizer(n_jobs=1), OnnxRecognizer(default_exports[0])
    a = native.predict_files(files, progress=False)
    b = exported.predict_files(files, progress=False)
    np.testing.assert_allclose(_probabilities(b, native.classes),
                               _probabilities(a, native.classes), atol=TOLERANCE)
    assert list(a["emotion"]) == list(b["emotion"])


def test_int8_export_loads_and_answers(default_exports: tuple[Path, Path]) -> None:
    folder, int8 = default_exports
    spec = json.loads((int8 / SPEC_FILE).read_text())
    assert "QInt8" in spec["graph"]["quantization"]["method"]
    assert spec["graph"]["quantization"]["quantised_inputs"] > 0
    assert (int8 / MODEL_FILE).stat().st_size < 0.5 * (folder / MODEL_FILE).stat().st_size
    frame = OnnxRecognizer(int8).predict_signal(synth_voice(2.0, seed=9), RATE)
    proba = _probabilities(frame, OnnxRecognizer(int8).classes)
    assert frame["emotion"].iloc[0] in spec["classes"]
    assert abs(proba.sum() - 1.0) < 1e-5


def test_int8_export_quantises_the_encoder_convolutions(
        default_exports: tuple[Path, Path]) -> None:
    """The encoder's two convolutions are matrix products in an int8 graph, so int8
    reaches them (ONNX Runtime quantises MatMul, not Conv, with fast kernels); only the
    preprocessing's convolutions stay float32."""
    import onnx

    nodes = onnx.load_model(str(default_exports[1] / MODEL_FILE)).graph.node
    convs = [n.name for n in nodes if n.op_type in ("Conv", "ConvInteger")]
    assert convs and all(name.startswith("/front/") for name in convs), convs
    float_nodes = onnx.load_model(str(default_exports[0] / MODEL_FILE)).graph.node
    assert any(n.op_type == "Conv" and n.name.startswith("/model/encoders.0/")
               for n in float_nodes)  # the float32 export keeps the convolutions


@pytest.mark.parametrize("stride", [1, 2])
def test_a_convolution_as_a_matrix_product_gives_the_same_numbers(stride: int) -> None:
    import torch

    from emovox.export import _torch_classes

    torch.manual_seed(stride)
    conv = torch.nn.Conv1d(5, 7, kernel_size=3, stride=stride, padding=1)
    for frames in (1, 2, 9, 10):
        x = torch.randn(2, 5, frames)
        expected = conv(x)
        got = _torch_classes().ConvAsMatMul(conv)(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_log_mel_exports_still_run(tmp_path: Path, default_exports: tuple[Path, Path]) -> None:
    folder = export_onnx(None, tmp_path / "mel", graph_input="log_mel", check=False)
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["graph"]["kind"] == "whisper_log_mel"
    assert spec["preprocessing"]["signal"]["loudness_lufs"] == -23.0
    signal = 0.3 * synth_voice(2.5, seed=6)
    old, new = OnnxRecognizer(folder), OnnxRecognizer(default_exports[0])
    np.testing.assert_allclose(_probabilities(old.predict_signal(signal, RATE), old.classes),
                               _probabilities(new.predict_signal(signal, RATE), new.classes),
                               atol=TOLERANCE)
