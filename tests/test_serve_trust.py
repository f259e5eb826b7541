"""The HTTP API under hostile use: parameters, work and size bounds, slow bodies, locks.

Every refusal is a JSON error (422 naming the ``field`` for parameters) decided before
the work it would cost; two timelines never wait for each other. Nothing here times
anything: slow clients are simulated at the ASGI level, concurrency is checked by two
timelines meeting mid-stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pytest
from test_serve import _http, angry_voice, live_server, wav_bytes

from emovox.synth import synth_voice
from emovox.timeline import window_count

pytest.importorskip("fastapi", reason="emovox serve needs fastapi")

MAX_UPLOAD = 1_000_000
MAX_SECONDS = 30.0
MAX_WINDOWS = 50
RATE = 8000  # small uploads for 20 s recordings


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def recognizer(normalised_bundle: Path) -> Any:
    """A speaker-normalised model: its timelines adapt with running statistics."""
    from emovox.recognizer import Recognizer

    recognizer = Recognizer(normalised_bundle, n_jobs=1)
    assert recognizer.adapter is not None
    return recognizer


class Spy:
    """The recogniser, with its timeline calls recorded (and optionally a hook)."""

    def __init__(self, real: Any, hook: Any = None) -> None:
        self.real = real
        self.hook = hook
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def predict_timeline(self, source: str, window: float = 2.0, hop: float = 1.0,
                         vad: str | None = "energy", *, name: str | None = None
                         ) -> pd.DataFrame:
        self.calls.append({"window": window, "hop": hop, "vad": vad})
        if self.hook is None:
            return self.real.predict_timeline(source, window=window, hop=hop, vad=vad,
                                              name=name)
        return self.hook(source, window, hop, vad, name)


def _app(recognizer: Any, **options: Any) -> Any:
    from emovox.serve import create_app

    settings = {"max_upload_bytes": MAX_UPLOAD, "max_seconds": MAX_SECONDS,
                "max_windows": MAX_WINDOWS, "warm_up": False, **options}
    return create_app(recognizer, **settings)


@pytest.fixture(scope="module")
def spy(recognizer: Any) -> Spy:
    return Spy(recognizer)


@pytest.fixture(scope="module")
def client(spy: Spy) -> Iterator[Any]:
    _http()
    from fastapi.testclient import TestClient

    with TestClient(_app(spy), raise_server_exceptions=False) as test_client:
        yield test_client


def _voice(seconds: float, seed: int = 3) -> bytes:
    return wav_bytes(synth_voice(seconds, sample_rate=RATE, seed=seed), RATE)


def _asgi_post(app: Any, path: str, headers: dict[str, str], chunks: Iterable[bytes],
               stall: bool = False) -> tuple[int, dict[str, str], bytes, int]:
    """POST a body chunk by chunk straight to the ASGI app, as a slow network would.

    Returns the status, the response headers, the body and how many chunks the app
    asked for; with ``stall`` the client stops sending after the chunks (without
    ending the body).
    """
    async def main() -> tuple[int, dict[str, str], bytes, int]:
        pending = iter(chunks)
        consumed = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal consumed
            chunk = next(pending, None)
            if chunk is None:
                if stall:
                    await anyio.sleep_forever()
                return {"type": "http.request", "body": b"", "more_body": False}
            consumed += 1
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "state": {}}
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], head, body, consumed

    return anyio.run(main)


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "trust"
               ) -> bytes:
    """A multipart/form-data body of ``(field, filename, data)`` parts."""
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"'
                                                      if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("query", "field"), [
    ("vad=bogus", "vad"),
    ("vad=SILERO%20", "vad"),
    ("window=2&hop=5", "hop"),
    ("hop=5", "hop"),  # over the default window
    ("window=1e308", "window"),
    ("window=inf", "window"),
    ("window=-inf", "window"),
    ("window=nan", "window"),
    ("window=abc", "window"),
    ("window=", "window"),
    ("window=-1", "window"),
    ("window=0.1", "window"),
    ("window=31", "window"),
    ("window=1e-9&hop=1e-9", "window"),
    ("hop=1e-9", "hop"),
    ("hop=0.1", "hop"),
    ("hop=0", "hop"),
    ("hop=nan", "hop"),
    ("window=30&hop=1", "hop"),  # analyses every second 30 times
    ("colour=red", "colour"),
    ("window=2&chunk_seconds=0.001", "chunk_seconds"),
    ("voices=ge2e", "voices"),  # without speakers
    ("speakers=2&voices=xvector", "voices"),
    ("speakers=9", "speakers"),  # more voices than the work bound
    ("speakers=2-20", "speakers"),
    ("speakers=4-2", "speakers"),
])
def test_each_bad_timeline_parameter_is_422_naming_it(client: Any, spy: Spy, query: str,
                                                      field: str) -> None:
    calls = len(spy.calls)
    response = client.post(f"/api/timeline?{query}",
                           files={"file": ("a.wav", _voice(3.0), "audio/wav")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field
    assert field in body["detail"] and "\n" not in body["detail"]
    assert "Traceback" not in response.text
    assert len(spy.calls) == calls  # refused before any work


def test_good_parameters_pass_through(client: Any, spy: Spy) -> None:
    response = client.post("/api/timeline?window=2.5&hop=0.5&vad=NONE",
                           files={"file": ("a.wav", _voice(6.0), "audio/wav")})
    assert response.status_code == 200, response.text
    assert spy.calls[-1] == {"window": 2.5, "hop": 0.5, "vad": None}
    assert len(response.json()["segments"]) == window_count(6 * RATE, RATE, 2.5, 0.5)
    info = client.get("/api/model").json()
    assert info["timeline_limits"]["max_windows"] == MAX_WINDOWS


def test_predict_takes_no_query_parameters(client: Any) -> None:
    response = client.post("/api/predict?window=2",
                           files={"file": ("a.wav", wav_bytes(angry_voice()), "audio/wav")})
    assert response.status_code == 422
    assert response.json()["field"] == "window"


# ---------------------------------------------------------------------- work bounds
def test_too_many_windows_are_refused_before_the_work(client: Any, spy: Spy) -> None:
    seconds, window, hop = 20.0, 2.0, 0.25
    count = window_count(int(seconds * RATE), RATE, window, hop)
    assert count > MAX_WINDOWS
    calls = len(spy.calls)
    response = client.post(f"/api/timeline?window={window}&hop={hop}&vad=none",
                           files={"file": ("long.wav", _voice(seconds), "audio/wav")})
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["field"] == "hop"
    assert f"{count} windows" in body["detail"] and str(MAX_WINDOWS) in body["detail"]
    assert len(spy.calls) == calls
    # The same recording at a larger hop is within the limit: the count is the real one.
    response = client.post("/api/timeline?window=2&hop=1&vad=none",
                           files={"file": ("long.wav", _voice(seconds), "audio/wav")})
    assert response.status_code == 200, response.text
    assert len(response.json()["segments"]) == window_count(int(seconds * RATE), RATE, 2, 1)


def test_an_oversized_form_field_is_refused_while_it_streams(spy: Spy) -> None:
    app = _app(spy)
    chunk = 16 * 1024
    body = _multipart([("note", None, b"x" * 600_000),
                       ("file", "a.wav", wav_bytes(angry_voice()))])
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    status, headers, text, consumed = _asgi_post(
        app, "/api/predict", {"content-type": "multipart/form-data; boundary=trust"}, chunks)
    assert status == 413, text
    assert b'"field":"note"' in text and b"4096 bytes" in text
    assert consumed <= 2 < len(chunks)  # refused at the field's first KB, not at its end
    assert headers.get("connection") == "close"


def test_form_fields_headers_and_parts_are_bounded(client: Any) -> None:
    audio = ("a.wav", wav_bytes(angry_voice()), "audio/wav")
    ok = client.post("/api/predict", files={"file": audio}, data={"note": "hi"})
    assert ok.status_code == 200, ok.text
    big = client.post("/api/predict", files={"file": audio}, data={"note": "x" * 5000})
    assert big.status_code == 413 and big.json()["field"] == "note"
    # A second file is a field like any other: it cannot smuggle in a large upload.
    two = client.post("/api/predict", files=[("file", audio), ("file2", audio)])
    assert two.status_code == 413 and two.json()["field"] == "file2"
    many = client.post("/api/predict", files={"file": audio},
                       data={f"f{i}": "1" for i in range(40)})
    assert many.status_code == 413 and "parts" in many.json()["detail"]
    header = _multipart([("file", "a.wav" + "a" * 10_000, b"RIFF")])
    response = client.post("/api/predict", content=header,
                           headers={"content-type": "multipart/form-data; boundary=trust"})
    assert response.status_code == 422 and "header size" in response.json()["detail"]


def test_a_body_past_the_upload_limit_is_refused_while_it_streams(spy: Spy) -> None:
    chunk = 64 * 1024
    chunks = [b"\0" * chunk] * (2 * MAX_UPLOAD // chunk)
    status, _, text, consumed = _asgi_post(_app(spy), "/api/predict",
                                           {"content-type": "audio/wav"}, chunks)
    assert status == 413 and b"upload too large" in text
    assert consumed < len(chunks)


def test_a_trickling_body_gets_408(spy: Spy) -> None:
    app = _app(spy, receive_seconds=0.2)
    first = _multipart([("file", "a.wav", wav_bytes(angry_voice()))])[:1000]
    status, headers, text, consumed = _asgi_post(
        app, "/api/timeline", {"content-type": "multipart/form-data; boundary=trust"},
        [first], stall=True)
    assert status == 408, text
    assert b"took longer than 0.2 s" in text and consumed == 1
    assert headers.get("connection") == "close"
    with pytest.raises(ValueError, match="receive_seconds"):
        _app(spy, receive_seconds=0)


def test_hostile_requests_never_get_a_500(client: Any) -> None:
    audio = wav_bytes(angry_voice())
    requests: list[dict[str, Any]] = [
        {"content": b"junk", "headers": {"content-type": "multipart/form-data"}},
        {"content": b"--x\r\nno headers end", "headers": {
            "content-type": "multipart/form-data; boundary=x"}},
        {"content": b"", "headers": {"content-type": "audio/wav"}},
        {"content": b"\x00" * 5000, "headers": {"content-type": "application/octet-stream"}},
        {"content": audio, "headers": {"content-type": "text/plain"}},
        {"content": audio, "headers": {"content-type": "audio/wav", "x-filename": "../../x"}},
        {"files": {"file": ("notes.txt", b"hello" * 100, "text/plain")}},
        {"files": {"file": ("a.wav", audio[:100], "audio/wav")}},
    ]
    statuses = []
    for path in ("/api/predict", "/api/timeline?vad=energy"):
        for options in requests:
            response = client.post(path, **options)
            statuses.append(response.status_code)
            assert response.status_code < 500, (path, options.get("headers"), response.text)
            assert response.status_code == 200 or "detail" in response.json()
    assert 200 in statuses and 415 in statuses and 422 in statuses


# ---------------------------------------------------------------------- no shared lock
def _run_guarded(function: Any) -> Any:
    """Run ``function`` in a daemon thread; a deadlock fails the test instead of hanging."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = function()
        except BaseException as error:  # handed to the test
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "deadlock: one timeline waited for another"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_timeline_runs_while_another_holds_its_state(recognizer: Any) -> None:
    first = np.concatenate([angry_voice(6.0, seed=1),
                            synth_voice(6.0, f0=95, f0_range=0.05, loudness=0.15, seed=2)])
    second = synth_voice(10.0, f0=180, f0_range=0.35, loudness=0.4, seed=5)
    options = {"sample_rate": 16000, "vad": None, "chunk_seconds": 3.0}
    alone = [recognizer.predict_timeline(s, **options) for s in (first, second)]

    def interleaved() -> tuple[pd.DataFrame, pd.DataFrame]:
        stream = recognizer.iter_timeline(first, **options)
        head = next(stream)  # the first timeline is mid-stream, holding its state...
        other = recognizer.predict_timeline(second, **options)  # ...while this one runs
        return pd.concat([head, *stream]), other

    merged, other = _run_guarded(interleaved)
    classes = recognizer.classes
    assert len(merged) > 8  # enough windows for stream adaptation to apply
    np.testing.assert_array_equal(merged[classes].to_numpy(), alone[0][classes].to_numpy())
    np.testing.assert_array_equal(other[classes].to_numpy(), alone[1][classes].to_numpy())
    assert recognizer.adapter.running.count == 0  # the shared adapter was never used


def test_two_served_timelines_meet_mid_stream(recognizer: Any) -> None:
    """Each request waits, mid-timeline, for the other to be mid-timeline too."""
    httpx = _http()
    barrier = threading.Barrier(2, timeout=120)

    def hook(source: str, window: float, hop: float, vad: str | None,
             name: str | None) -> pd.DataFrame:
        frames = recognizer.iter_timeline(source, window=window, hop=hop, vad=vad,
                                          chunk_seconds=2.0, name=name)
        head = next(frames)
        barrier.wait()  # broken (-> 500) if the other timeline cannot start
        return pd.concat([head, *frames])

    app = _app(Spy(recognizer, hook), workers=2)
    clips = [_voice(8.0, seed=s) for s in (11, 12)]
    with live_server(app) as url, ThreadPoolExecutor(max_workers=2) as pool:
        def send(i: int) -> Any:
            return httpx.post(f"{url}/api/timeline?vad=none", timeout=300.0,
                              files={"file": (f"t{i}.wav", clips[i], "audio/wav")})

        responses = list(pool.map(send, range(2)))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert not barrier.broken
