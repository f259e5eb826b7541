"""The HTTP API: predictions, model description, limits, errors and concurrency.

Also holds helpers the browser and ONNX tests import: :func:`make_bundle` (a small
bundle trained on synthetic voices) and :func:`live_server` (uvicorn in a thread on
127.0.0.1).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from emovox.synth import synth_voice

#: Classes differ in pitch and loudness, as aroused and calm speech do.
STYLE = {"angry": (220.0, 0.45, 0.6), "sad": (95.0, 0.05, 0.15), "happy": (180.0, 0.35, 0.4)}
#: Limits of the test app (small, so the limit tests stay fast).
MAX_UPLOAD = 400_000
MAX_SECONDS = 8.0


def make_bundle(root: Path, features: dict[str, Any] | None = None,
                model: dict[str, Any] | None = None) -> Path:
    """Train and save a small bundle on 4 synthetic speakers x 3 emotions x 2 takes.

    Recordings last 0.9 to 2.4 s, so duration-dependent features vary in training.

    Parameters
    ----------
    root : Path
        Folder for the corpus and the bundle.
    features, model : dict, optional
        Experiment ``features`` and ``model`` (default: MFCC statistics + logreg).

    Returns
    -------
    Path
        The bundle folder, ``root / "bundle"``.
    """
    from emovox.bundle import save_bundle
    from emovox.config import load_config
    from emovox.experiment import train_bundle

    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(4):
        for emotion, (f0, swing, loud) in STYLE.items():
            for take in range(2):
                seed = 100 * s + 10 * take + len(emotion)
                signal = synth_voice(0.9 + 0.35 * s + 0.4 * take,
                                     f0=f0 * (1 + 0.08 * (s - 2)), f0_range=swing,
                                     loudness=loud, seed=seed, vowels="aoiea"[take:take + 3])
                path = corpus / f"s{s}_{emotion}_{take}.wav"
                sf.write(path, signal, 16000)
                rows.append({"path": path.name, "emotion": emotion, "speaker": f"s{s}",
                             "gender": "male" if s % 2 else "female"})
    manifest = corpus / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = load_config(data={
        "name": "synthetic", "corpora": [{"path": str(manifest), "kind": "manifest"}],
        "labels": {"name": "three", "classes": ["angry", "happy", "sad"]},
        "features": features or {"name": "mfcc_stats"},
        "model": model or {"name": "logreg", "params": {"C": 1.0}},
        "protocol": {"kind": "speaker_folds", "n_folds": 2}, "cache_dir": None,
        "n_jobs": 1, "output_dir": str(root / "runs")})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    return save_bundle(bundle, root / "bundle")


def wav_bytes(signal: np.ndarray, sample_rate: int = 16000) -> bytes:
    """A signal as the bytes of a 16-bit WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, signal, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def angry_voice(seconds: float = 2.0, seed: int = 7) -> np.ndarray:
    """A high, swinging, loud synthetic voice (the "angry" class of the test bundle)."""
    return synth_voice(seconds, f0=225, f0_range=0.6, loudness=0.6, seed=seed, vowels="oie")


@contextlib.contextmanager
def live_server(app: Any, timeout: float = 120.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1 and a free port.

    Parameters
    ----------
    app : ASGI application
    timeout : float
        Seconds allowed for startup (the app's warm-up included).

    Yields
    ------
    str
        The base URL, e.g. ``http://127.0.0.1:41234``.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _http() -> Any:
    """httpx2 (what Starlette's TestClient prefers), else httpx."""
    try:
        import httpx2 as httpx
    except ImportError:
        httpx = pytest.importorskip("httpx", reason="needs httpx2 or httpx")
    return httpx


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def recognizer(bundle_dir: Path) -> Any:
    from emovox.recognizer import Recognizer

    return Recognizer(bundle_dir, n_jobs=1)


@pytest.fixture(scope="module")
def app(recognizer: Any) -> Any:
    pytest.importorskip("fastapi", reason="emovox serve needs fastapi")
    from emovox.serve import create_app

    return create_app(recognizer, max_upload_bytes=MAX_UPLOAD, max_seconds=MAX_SECONDS)


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[Any]:
    _http()
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


# ---------------------------------------------------------------------- tests
def test_predict_synthetic_wav(client: Any, recognizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "angry.wav"
    sf.write(path, angry_voice(), 16000)
    with path.open("rb") as handle:
        response = client.post("/api/predict", files={"file": ("angry.wav", handle,
                                                               "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == "angry.wav"
    assert body["emotion"] == "angry"
    assert body["duration"] == pytest.approx(2.0, abs=1e-3)
    assert body["classes"] == ["angry", "happy", "sad"]
    assert set(body["probabilities"]) == set(body["classes"])
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
    native = recognizer.predict_file(path).iloc[0]
    for name, p in body["probabilities"].items():
        assert p == pytest.approx(float(native[name]), abs=1e-5)


def test_predict_raw_body_and_other_rates(client: Any) -> None:
    data = wav_bytes(angry_voice(1.5, seed=3).repeat(3), 48000)  # 48 kHz, resampled
    response = client.post("/api/predict", content=data,
                           headers={"content-type": "audio/wav", "x-filename": "raw.wav"})
    assert response.status_code == 200, response.text
    assert response.json()["file"] == "raw.wav"
    assert response.json()["duration"] == pytest.approx(1.5, abs=1e-3)


def test_model_info(client: Any) -> None:
    response = client.get("/api/model")
    assert response.status_code == 200
    info = response.json()
    assert info["classes"] == ["angry", "happy", "sad"]
    assert info["labels"]["name"] == "three"
    assert info["features"]["name"] == "mfcc_stats"
    assert info["training"]["utterances"] == 24
    assert info["card"].startswith("# Model card")
    assert info["engine"] == "native"
    assert info["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_seconds": MAX_SECONDS,
                              "max_predict_seconds": MAX_SECONDS}
    assert isinstance(info["timeline"], bool)


def test_oversized_upload_is_refused_with_413(client: Any) -> None:
    big = wav_bytes(synth_voice(7.0))  # 224 kB of audio...
    big += b"\0" * (MAX_UPLOAD - len(big) + 1)  # ...padded past the limit
    response = client.post("/api/predict", files={"file": ("big.wav", big, "audio/wav")})
    assert response.status_code == 413
    assert "upload too large" in response.json()["detail"]

    # Without a Content-Length (chunked), the limit is enforced while streaming.
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\0" * 50_000

    response = client.post("/api/predict", content=chunks(),
                           headers={"content-type": "audio/wav"})
    assert response.status_code == 413
    assert "upload too large" in response.json()["detail"]


def test_non_audio_is_refused_with_the_reason(client: Any) -> None:
    response = client.post("/api/predict",
                           files={"file": ("notes.txt", b"not audio at all\n" * 50,
                                           "text/plain")})
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert detail.startswith("notes.txt: not a readable audio file"), detail
    assert "\n" not in detail

    corrupt = wav_bytes(synth_voice(1.0))[:44] + bytes(range(256)) * 8  # header, no data
    corrupt = b"RIFF\xff\xff\xff\xffWAVEjunk" + corrupt[16:]
    response = client.post("/api/predict", files={"file": ("broken.wav", corrupt,
                                                           "audio/wav")})
    assert response.status_code in (415, 422)
    assert response.json()["detail"].startswith("broken.wav: ")

    response = client.post("/api/predict", json={"audio": "nope"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]

    response = client.post("/api/predict", files={"other": ("x", b"", "text/plain")},
                           data={"note": "no file field"})
    assert response.status_code in (415, 422)


def test_unusable_audio_is_422(client: Any) -> None:
    silent = wav_bytes(np.zeros(16000, dtype=np.float32))
    response = client.post("/api/predict", files={"file": ("silent.wav", silent, "audio/wav")})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("silent.wav: silent: no sound above")
    response = client.post("/api/predict", files={"file": ("empty.wav", b"", "audio/wav")})
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_too_long_is_refused_before_decoding(client: Any) -> None:
    long_wav = wav_bytes(synth_voice(MAX_SECONDS + 1.0, sample_rate=8000), 8000)
    response = client.post("/api/predict", files={"file": ("long.wav", long_wav, "audio/wav")})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert detail.startswith("long.wav: too long (9.0 s)") and "8 s" in detail


def test_timeline_is_501_without_predict_timeline(recognizer: Any) -> None:
    _http()
    from fastapi.testclient import TestClient

    from emovox.serve import create_app

    class Plain:
        """A recogniser without predict_timeline."""

        classes = recognizer.classes
        bundle = recognizer.bundle
        extractor = recognizer.extractor
        predict_signal = recognizer.predict_signal

    with TestClient(create_app(Plain(), warm_up=False)) as client:
        response = client.post("/api/timeline",
                               files={"file": ("a.wav", wav_bytes(angry_voice()), "audio/wav")})
        assert response.status_code == 501
        assert "predict_timeline" in response.json()["detail"]
        assert client.get("/api/model").json()["timeline"] is False


def test_timeline_uses_predict_timeline(recognizer: Any) -> None:
    """The endpoint's contract with ``Recognizer.predict_timeline``, on a stand-in."""
    _http()
    from fastapi.testclient import TestClient

    from emovox.audio import load_audio
    from emovox.serve import create_app

    class WithTimeline:
        classes = recognizer.classes
        bundle = recognizer.bundle
        extractor = recognizer.extractor
        predict_signal = recognizer.predict_signal

        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def predict_timeline(self, source: str, window: float = 2.0, hop: float = 1.0,
                             vad: str | None = "energy", *, name: str | None = None
                             ) -> pd.DataFrame:
            self.calls.append({"window": window, "hop": hop, "vad": vad, "name": name})
            signal = load_audio(source)
            frames = []
            for start in np.arange(0.0, len(signal) / 16000 - window + 1e-9, hop):
                part = signal[int(start * 16000):int((start + window) * 16000)]
                frame = recognizer.predict_signal(part, 16000, name=name or source)
                frame.index = pd.MultiIndex.from_tuples([(name, start, start + window)],
                                                        names=["file", "start", "end"])
                frames.append(frame.assign(speech=True))
            silence = frames[0].copy()
            silence.loc[:, recognizer.classes] = np.nan
            silence["emotion"], silence["confidence"], silence["speech"] = None, np.nan, False
            return pd.concat([*frames, silence])

    fake = WithTimeline()
    signal = np.concatenate([angry_voice(3.0), synth_voice(3.0, f0=95, f0_range=0.05,
                                                           loudness=0.15, seed=4)])
    with TestClient(create_app(fake, warm_up=False)) as client:
        assert client.get("/api/model").json()["timeline"] is True
        response = client.post("/api/timeline?window=2&hop=1&vad=none",
                               files={"file": ("long.wav", wav_bytes(signal), "audio/wav")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert fake.calls == [{"window": 2.0, "hop": 1.0, "vad": None, "name": "long.wav"}]
        assert body["duration"] == pytest.approx(6.0)
        segments = body["segments"]
        assert len(segments) == 6
        assert segments[0]["emotion"] == "angry" and segments[0]["speech"] is True
        assert segments[0]["start"] == 0.0 and segments[0]["end"] == 2.0
        assert set(segments[0]["probabilities"]) == set(recognizer.classes)
        assert segments[-1]["emotion"] is None and segments[-1]["speech"] is False
        assert all(v is None for v in segments[-1]["probabilities"].values())
        response = client.post("/api/timeline?window=-1",
                               files={"file": ("long.wav", wav_bytes(signal), "audio/wav")})
        assert response.status_code == 422


def test_page_static_files_and_docs(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text and "/static/app.js" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing external
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "encodeWav" in script.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/timeline", "/api/model"} <= set(schema["paths"])
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


def test_onnx_recognizer_is_served(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    _http()
    from fastapi.testclient import TestClient

    from emovox.export import OnnxRecognizer, export_onnx
    from emovox.serve import create_app

    folder = export_onnx(bundle_dir, tmp_path / "onnx")
    with TestClient(create_app(OnnxRecognizer(folder))) as client:
        info = client.get("/api/model").json()
        assert info["engine"] == "onnx" and info["classes"] == ["angry", "happy", "sad"]
        response = client.post("/api/predict",
                               files={"file": ("a.wav", wav_bytes(angry_voice()), "audio/wav")})
        assert response.status_code == 200, response.text
        assert response.json()["emotion"] == "angry"


def test_twenty_concurrent_requests(app: Any) -> None:
    httpx = _http()
    clips = [wav_bytes(angry_voice(1.0 + 0.1 * (i % 5), seed=i)) for i in range(20)]
    with live_server(app) as url:
        def send(i: int) -> tuple[int, dict[str, Any]]:
            response = httpx.post(f"{url}/api/predict", timeout=60.0,
                                  files={"file": (f"clip{i}.wav", clips[i], "audio/wav")})
            return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=20) as pool:
            futures = [pool.submit(send, i) for i in range(20)]
            # While the predictions run, the server still answers other requests.
            health = httpx.get(f"{url}/api/health", timeout=30.0)
            results = [f.result(timeout=120) for f in futures]
    assert health.status_code == 200
    assert [status for status, _ in results] == [200] * 20, results
    assert {body["file"] for _, body in results} == {f"clip{i}.wav" for i in range(20)}
    assert all(body["emotion"] == "angry" for _, body in results)
