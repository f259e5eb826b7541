"""Speed of the default bundle: timeline real-time factor, latency, throughput, memory.

Usage::

    python benchmarks/speed.py [--minutes 10] [--long-minutes 60] [--quick]
                               [--markdown PATH] [--workdir /tmp/emovox-speed]

Prints a table of figures (not a test). ``--quick`` uses a 1-minute timeline file
and a 10-minute memory file.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from emovox.synth import synth_voice

RATE = 16_000
CLIP_SECONDS = 3.0


def write_long_file(path: Path, minutes: float, seed: int = 0) -> Path:
    """Write a speech-like file of ``minutes``: synthetic voices and pauses, in chunks.

    Parameters
    ----------
    path : Path
        WAV file to write (kept if it already has the right length).
    minutes : float
        Duration in minutes.
    seed : int
        Random seed.

    Returns
    -------
    Path
    """
    total = round(minutes * 60 * RATE)
    if path.is_file() and sf.info(path).frames == total:
        return path
    rng = np.random.default_rng(seed)
    written = 0
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        while written < total:
            voice = synth_voice(float(rng.uniform(1.0, 4.0)), f0=float(rng.uniform(90, 240)),
                                f0_range=float(rng.uniform(0.05, 0.45)),
                                loudness=float(rng.uniform(0.1, 0.5)),
                                seed=int(rng.integers(1 << 30)))
            pause = 0.003 * rng.standard_normal(round(rng.uniform(0.2, 1.5) * RATE))
            chunk = np.concatenate([voice, pause.astype(np.float32)])[:total - written]
            out.write(chunk)
            written += len(chunk)
    return path


def time_timeline(path: Path) -> tuple[float, float, int]:
    """Seconds taken by ``predict_timeline`` on ``path``, the audio duration, and rows."""
    from emovox.recognizer import Recognizer

    recognizer = Recognizer(n_jobs=1)
    recognizer.predict_signal(synth_voice(CLIP_SECONDS), RATE)  # warm-up
    start = time.perf_counter()
    frame = recognizer.predict_timeline(path)
    return time.perf_counter() - start, float(frame.attrs["duration"]), len(frame)


def latencies(recognizer: object, clip: np.ndarray, n: int = 30, warmup: int = 3
              ) -> np.ndarray:
    """Seconds per ``predict_signal(clip)`` call, ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        recognizer.predict_signal(clip, RATE)  # type: ignore[attr-defined]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        recognizer.predict_signal(clip, RATE)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def peak_memory(path: Path) -> float:
    """Peak resident memory (MB) of a fresh process running the timeline of ``path``.

    Linux keeps ``ru_maxrss`` across fork and exec (the child would report this
    process's peak), so the child reads its own VmHWM there, ``ru_maxrss`` elsewhere.
    """
    code = ("import resource, sys\n"
            "from pathlib import Path\n"
            "from emovox.recognizer import Recognizer\n"
            "Recognizer(n_jobs=1).predict_timeline(sys.argv[1])\n"
            "status = Path('/proc/self/status')\n"
            "hwm = [l.split()[1] for l in status.read_text().splitlines()\n"
            "       if l.startswith('VmHWM:')] if status.exists() else []\n"
            "print(hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                         capture_output=True, text=True).stdout
    kb = int(out.strip().splitlines()[-1])
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmarks and print the table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    list of (str, str)
        The figures, as (measure, value) pairs.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the timeline file")
    parser.add_argument("--long-minutes", type=float, default=60.0,
                        help="length of the peak-memory file")
    parser.add_argument("--quick", action="store_true",
                        help="1-minute timeline file, 10-minute memory file")
    parser.add_argument("--n", type=int, default=30, help="latency repetitions")
    parser.add_argument("--files", type=int, default=50, help="files in the folder test")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir())
                        / "emovox-speed", help="where the generated audio goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.long_minutes = 1.0, 10.0
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []

    def report(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name}: {value}", flush=True)

    from emovox.recognizer import Recognizer

    started = time.perf_counter()
    recognizer = Recognizer(n_jobs=1)
    report("bundle load", f"{time.perf_counter() - started:.2f} s "
           f"({type(recognizer.extractor).__name__})")

    long_file = write_long_file(args.workdir / f"long-{args.minutes:g}min.wav", args.minutes)
    seconds, duration, n_rows = time_timeline(long_file)
    report(f"timeline of {args.minutes:g} min (silero VAD, 2 s / 1 s)",
           f"{seconds:.1f} s, real-time factor {seconds / duration:.4f} "
           f"({duration / seconds:.0f}x real time, {n_rows} windows)")

    clip = synth_voice(CLIP_SECONDS, seed=7)
    native = latencies(recognizer, clip, n=args.n)
    report(f"predict_signal 3 s clip, native (n={args.n})",
           f"p50 {1000 * np.percentile(native, 50):.1f} ms, "
           f"p95 {1000 * np.percentile(native, 95):.1f} ms")

    folder = args.workdir / "clips"
    folder.mkdir(exist_ok=True)
    for i in range(args.files):
        path = folder / f"clip{i:03d}.wav"
        if not path.is_file():
            sf.write(path, synth_voice(CLIP_SECONDS, f0=100 + 3 * i, seed=i), RATE)
    started = time.perf_counter()
    frame = recognizer.predict_folder(folder, progress=False)
    seconds = time.perf_counter() - started
    report(f"predict_folder, {len(frame)} x 3 s files (n_jobs=1)",
           f"{len(frame) / seconds:.1f} files/s ({seconds:.1f} s)")

    try:
        from emovox.export import OnnxRecognizer, export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            out = export_onnx(None, Path(tmp) / "onnx")
            exported = time.perf_counter() - started
            onnx = latencies(OnnxRecognizer(out), clip, n=args.n)
        report(f"predict_signal 3 s clip, ONNX (n={args.n}, export {exported:.0f} s)",
               f"p50 {1000 * np.percentile(onnx, 50):.1f} ms, "
               f"p95 {1000 * np.percentile(onnx, 95):.1f} ms "
               f"({np.median(native) / np.median(onnx):.2f}x native)")
    except ImportError as error:
        report("ONNX", f"skipped ({error})")

    long_file = write_long_file(args.workdir / f"long-{args.long_minutes:g}min.wav",
                                args.long_minutes, seed=1)
    size = long_file.stat().st_size / 1e6
    report(f"peak memory, timeline of {args.long_minutes:g} min ({size:.0f} MB WAV)",
           f"{peak_memory(long_file):.0f} MB maxrss (own process); this process "
           f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if args.markdown:
        lines = ["| measure | value |", "|---|---|",
                 *(f"| {name} | {value} |" for name, value in rows)]
        args.markdown.write_text("\n".join(lines) + "\n")
        print(f"\nmarkdown table written to {args.markdown}")
    return rows


if __name__ == "__main__":
    main()
