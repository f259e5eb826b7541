"""Load on ``emovox serve``: latency of normal requests with and without abusive ones.

Usage::

    python benchmarks/serve_load.py [--clients 4] [--seconds 30] [--receive-seconds 5]
                                    [--corpora ../shared/corpora] [--markdown PATH]

Starts the server (default bundle, :func:`emovox.serve.create_app`) in a subprocess
on 127.0.0.1 and a free port, and builds its request audio in a temporary folder
(deleted afterwards, never committed) from real EmoDB utterances: 3 s clips and a
30 s recording. Then two phases of ``--seconds`` each, on loopback only:

- ``baseline``: ``--clients`` normal clients, each sending three ``/api/predict`` of
  a 3 s clip for every ``/api/timeline`` of the 30 s recording, back to back;
- ``abuse``: the same normal clients, plus as many abusive ones cycling through tiny
  hops, a huge window, a bogus ``vad``, a 50 MB form field (chunked, no length), a
  body trickling in (100 bytes a second, past ``--receive-seconds``) and non-audio.

Prints p50/p95/p99 latency of the normal requests per phase, response counts by
status for each kind of request, and the server's resident memory (now and peak)
after each phase. Skips, with a message, when the corpora are absent.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from common import add_corpora_argument

CLIP_SECONDS = 3.0
TIMELINE_SECONDS = 30.0
FIELD_BYTES = 50 * 1024 * 1024
RATE = 16000


# ---------------------------------------------------------------------- the server
def serve(port: int, receive_seconds: float) -> None:
    """Run the server in this process (the subprocess side)."""
    import uvicorn

    from emovox.serve import create_app

    uvicorn.run(create_app(receive_seconds=receive_seconds), host="127.0.0.1", port=port,
                log_level="error")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# ---------------------------------------------------------------------- audio
def build_audio(corpora: Path, folder: Path) -> dict[str, Path]:
    """3 s clips and a 30 s recording of real EmoDB speech, written to ``folder``."""
    import soundfile as sf

    from emovox.audio import load_audio
    from emovox.corpora.base import list_audio_files

    files = list_audio_files(corpora / "emodb").files
    if not files:
        sys.exit(f"no EmoDB audio under {corpora / 'emodb'}")
    speech = itertools.cycle(files[::7])
    out: dict[str, Path] = {}

    def recording(seconds: float) -> np.ndarray:
        parts, total = [], 0
        while total < seconds * RATE:
            part = load_audio(next(speech), RATE)
            parts += [part, np.zeros(int(0.3 * RATE), np.float32)]
            total += len(part) + int(0.3 * RATE)
        return np.concatenate(parts)[:int(seconds * RATE)]

    for i in range(4):
        out[f"clip{i}"] = folder / f"clip{i}.wav"
        sf.write(out[f"clip{i}"], recording(CLIP_SECONDS), RATE, subtype="PCM_16")
    out["long"] = folder / "long.wav"
    sf.write(out["long"], recording(TIMELINE_SECONDS), RATE, subtype="PCM_16")
    out["text"] = folder / "notes.txt"
    out["text"].write_text("not audio\n" * 200)
    return out


# ---------------------------------------------------------------------- clients
def raw_post(port: int, path: str, content_type: str, chunks: Iterator[bytes],
             pause: float = 0.0, timeout: float = 120.0) -> int:
    """POST a chunked body over a plain socket; the status, or 0 if none came back.

    Stops sending as soon as the server answers (it may refuse mid-body).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     f"{content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        sock.setblocking(False)
        answer = b""
        try:
            for chunk in chunks:
                try:
                    answer += sock.recv(65536)
                    break  # the server answered before the body ended
                except BlockingIOError:
                    pass
                sock.setblocking(True)
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sock.setblocking(False)
                if pause:
                    time.sleep(pause)
            else:
                sock.setblocking(True)
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.setblocking(True)
        try:
            while b"\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def abusive_requests(port: int, audio: dict[str, Path]
                     ) -> list[tuple[str, Callable[[Callable[..., object]], int]]]:
    """Each abuse: a name and a function of an httpx-like ``post`` returning a status."""
    long = audio["long"].read_bytes()
    clip = audio["clip0"].read_bytes()
    boundary = "loadtest"

    def multipart_field() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
               ).encode()
        for _ in range(FIELD_BYTES // 65536):
            yield b"x" * 65536

    def trickle() -> Iterator[bytes]:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"a.wav\"\r\n\r\n").encode() + clip
        for i in range(0, len(body), 100):
            yield body[i:i + 100]

    def timeline(query: str) -> Callable[[Callable[..., object]], int]:
        return lambda post: post(f"/api/timeline?{query}",
                                 files={"file": ("long.wav", long, "audio/wav")}).status_code

    form = f"multipart/form-data; boundary={boundary}"
    return [
        ("tiny hop", timeline("window=1e-9&hop=1e-9")),
        ("huge window", timeline("window=1e308")),
        ("bogus vad", timeline("vad=bogus")),
        ("hop > window", timeline("window=2&hop=5")),
        ("50 MB form field", lambda post: raw_post(port, "/api/predict", form,
                                                   multipart_field())),
        ("trickled body", lambda post: raw_post(port, "/api/predict", form, trickle(),
                                                pause=1.0)),
        ("non-audio", lambda post: post("/api/predict", files={
            "file": ("notes.txt", audio["text"].read_bytes(), "text/plain")}).status_code),
    ]


def run_phase(port: int, audio: dict[str, Path], clients: int, seconds: float,
              abuse: bool) -> tuple[dict[str, list[float]], dict[str, Counter]]:
    """Drive the clients for ``seconds``; latencies of normal requests, statuses by kind."""
    import httpx

    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    clips = [audio[f"clip{i}"].read_bytes() for i in range(4)]
    long = audio["long"].read_bytes()

    def normal(index: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
            for n in itertools.count():
                if time.monotonic() > deadline:
                    return
                kind = "timeline 30 s" if n % 4 == 3 else "predict 3 s"
                start = time.perf_counter()
                if kind == "timeline 30 s":
                    response = client.post("/api/timeline", files={
                        "file": ("long.wav", long, "audio/wav")})
                else:
                    response = client.post("/api/predict", files={
                        "file": ("clip.wav", clips[(index + n) % 4], "audio/wav")})
                elapsed = time.perf_counter() - start
                with lock:
                    statuses[kind][response.status_code] += 1
                    if response.status_code == 200:
                        latencies[kind].append(elapsed)

    def abusive(index: int) -> None:
        requests = abusive_requests(port, audio)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
            for n in itertools.count(index):
                if time.monotonic() > deadline:
                    return
                name, send = requests[n % len(requests)]
                try:
                    status = send(client.post)
                except httpx.HTTPError:
                    status = 0
                with lock:
                    statuses[name][status] += 1

    threads = [threading.Thread(target=normal, args=(i,)) for i in range(clients)]
    if abuse:
        threads += [threading.Thread(target=abusive, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


# ---------------------------------------------------------------------- report
def report(results: dict[str, tuple[dict[str, list[float]], dict[str, Counter]]],
           memory: dict[str, tuple[float, float]]) -> str:
    """Markdown tables: latency of normal requests, statuses, server memory."""
    lines = ["| phase | request | n | p50 ms | p95 ms | p99 ms |",
             "|---|---|---:|---:|---:|---:|"]
    for phase, (latencies, _) in results.items():
        for kind in sorted(latencies):
            ms = 1000 * np.asarray(latencies[kind])
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            lines.append(f"| {phase} | {kind} | {len(ms)} | {p50:.0f} | {p95:.0f} | "
                         f"{p99:.0f} |")
    lines += ["", "| phase | request | responses by status |", "|---|---|---|"]
    for phase, (_, statuses) in results.items():
        for kind in sorted(statuses):
            counts = ", ".join(f"{status or 'none'}: {count}"
                               for status, count in sorted(statuses[kind].items()))
            lines.append(f"| {phase} | {kind} | {counts} |")
    lines += ["", "| after phase | server RSS MB | peak RSS MB |", "|---|---:|---:|"]
    lines += [f"| {phase} | {now:.0f} | {peak:.0f} |" for phase, (now, peak) in
              memory.items()]
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, start the server, run both phases, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--receive-seconds", type=float, default=5.0,
                        help="the server's body deadline (408 after)")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # subprocess side
    add_corpora_argument(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.receive_seconds)
        return
    if not 1 <= args.clients <= 32 or not 0 < args.seconds <= 600:
        sys.exit("--clients must be 1-32 and --seconds 0-600 (a bounded load)")
    if not (args.corpora / "emodb").is_dir():
        print(f"skipped: the real corpora (emodb) are not at {args.corpora}; pass --corpora "
              "or set EMOVOX_CORPORA")
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="emovox-serve-load-") as tmp:
        audio = build_audio(args.corpora.resolve(), Path(tmp))
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                                   "--receive-seconds", str(args.receive_seconds)])
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.5)
            results, memory = {}, {}
            for phase, abuse in (("baseline", False), ("abuse", True)):
                print(f"{phase}: {args.clients} normal clients"
                      + (f" + {args.clients} abusive" if abuse else "")
                      + f" for {args.seconds:g} s", flush=True)
                results[phase] = run_phase(port, audio, args.clients, args.seconds, abuse)
                memory[phase] = memory_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    table = report(results, memory)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
