"""Batch-job throughput: 1 and 2 local workers, Ray with 1 and 2 workers, in one run.

Real CREMA-D utterances of 2.5-3.5 s (read in place; nothing is copied), the packaged
model, whole-file predictions into a Parquet folder in a temporary directory. For each
setting: wall time (start-up included), files/s and the real-time factor, and the
steady rate (files/s between the first and the last stored batch: start-up excluded,
what a long job runs at). Run: ``.venv/bin/python benchmarks/scale.py [--files 160]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf

from emovox.scale.runner import run_job

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def pick_files(count: int) -> list[str]:
    """``count`` CREMA-D files of 2.5-3.5 s, spread over speakers."""
    chosen = []
    for path in sorted((CORPORA / "crema-d" / "AudioWAV").iterdir())[::3]:
        if 2.5 <= sf.info(str(path)).duration <= 3.5:
            chosen.append(str(path))
        if len(chosen) == count:
            break
    return chosen


def measure(files: list[str], engine: str, jobs: int) -> dict[str, float]:
    stamps: list[tuple[float, int]] = []

    def stamp(summary, executor) -> None:
        stamps.append((time.perf_counter(), summary.encoded))

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        summary = run_job([{"file": f} for f in files], Path(folder) / "out.parquet",
                          engine=engine, jobs=jobs, total=len(files), progress=False,
                          batch_files=8, on_batch=stamp)
        wall = time.perf_counter() - started
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    return {"wall": wall, "files_s": len(files) / wall, "rtf": wall / summary.audio_seconds,
            "steady": (n1 - n0) / (t1 - t0), "audio": summary.audio_seconds,
            "first": summary.first_result_seconds or float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=160)
    args = parser.parse_args()
    files = pick_files(args.files)
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    rows = []
    for engine, jobs in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
        result = measure(files, engine, jobs)
        rows.append((engine, jobs, result))
        print(f"done {engine} x{jobs}", flush=True)
    ray.shutdown()
    audio = rows[0][2]["audio"]
    print(f"\n{len(files)} CREMA-D files, {audio:.0f} s of audio ({audio / len(files):.2f} s "
          "per file), packaged model (Whisper tiny.en encoder + head)\n")
    print("| engine | workers | wall s | files/s | real-time factor | steady files/s "
          "| steady vs 1 local worker | first result s |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][2]["steady"]
    for engine, jobs, r in rows:
        print(f"| {engine} | {jobs} | {r['wall']:.1f} | {r['files_s']:.1f} | {r['rtf']:.4f} "
              f"| {r['steady']:.1f} | {r['steady'] / base:.2f}x | {r['first']:.1f} |")
    per_core = base * audio / len(files)  # seconds of audio per second per core
    print(f"\nper core: {base:.1f} files/s = {per_core:.0f} s of audio per second "
          f"({per_core:.0f}x real time); 10,000 h = {10_000 * 3600 / per_core / 3600:.0f} "
          "core-hours")


if __name__ == "__main__":
    main()
