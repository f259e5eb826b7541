"""Speed and accuracy of the packaged tiers' timelines on real speech, against CTranslate2.

Usage::

    python benchmarks/speed.py [--minutes 10] [--threads 1] [--seed 0] [--repeats 3]
                               [--corpora ../shared/corpora] [--markdown PATH]

Builds a long recording in a temporary folder (deleted afterwards, never committed)
from real CREMA-D and RAVDESS speech utterances of the default bundle's six classes,
in a random order (fixed seed), separated by 0.3-1.5 s pauses of low noise, and
remembers each utterance's (start, end, label). Then, in one run and with the same
number of threads on both sides:

- times the timeline (2 s windows every 1 s, silero VAD) of the same recording on each
  runtime, and scores it against the known labels: window UAR (each classified window
  labelled by the utterance covering most of it) and utterance UAR (the probabilities
  of an utterance's windows averaged; an utterance without a classified window counts
  as wrong). The runtimes: **before**, the earlier path (the native bundle, each window
  encoded alone); the native bundle as the engine runs it now (each stretch of speech
  encoded once, windows pooled from its encoder frames: :mod:`emovox.inference.frames`);
  the packaged ONNX export (float32, the default); the default's int8 export (made in
  the temporary folder: what the fast tier was before it had its own bundle); and the
  fast tier (``--model fast``: its own bundle on the encoder's first two blocks,
  exported with int8 weights; ``--no-onnx`` skips the two int8 rows);
- times CTranslate2 int8 encoding the same audio once with the same Whisper tiny.en
  encoder (log-mel of 3, 10 or 30 s chunks, the fastest kept) and prints each
  timeline's ratio to it; both sides are timed ``--repeats`` times (3) and the best
  run kept, since one run moves by about 5 % on a shared machine;
- times ``predict_signal`` on a real 3 s clip (p50, p95) on each runtime, and one
  ``emovox predict one.wav`` command (wall time and peak RSS of the child process)
  with the default model and with the native bundle;
- the same (one command, the timeline, the 3 s clip) for the accurate tier
  (``--model accurate``: Whisper tiny.en + base, the packaged int8 export) and for its
  bundle run natively (before), so its cost is a ratio to the default's measured in
  the same run.

The bundles were trained on these corpora, so the UARs compare inference engines and
tiers on the same recording; they are not accuracy estimates (the model cards have
those).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from common import add_corpora_argument, corpora_root

RATE = 16_000
CLIP_SECONDS = 3.0
#: The default bundle's classes; utterances of other emotions are not used.
CLASSES = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
#: Speech corpora the recording is drawn from (folders under the corpora root).
SOURCES = ("crema-d/AudioWAV", "ravdess/Audio_Speech_Actors_01-24")
PAUSE_SECONDS = (0.3, 1.5)
#: Standard deviation of the pauses' noise (about -60 dBFS).
NOISE_LEVEL = 1e-3


@dataclass(frozen=True)
class Utterance:
    """One corpus utterance placed in the long recording (seconds, true label)."""

    start: float
    end: float
    label: str
    path: str


def build_recording(root: Path, out: Path, minutes: float, seed: int = 0) -> list[Utterance]:
    """Write ``minutes`` of shuffled corpus utterances with noisy pauses to ``out``.

    Parameters
    ----------
    root : Path
        Corpora folder (holding :data:`SOURCES`).
    out : Path
        FLAC file to write (16 kHz mono).
    minutes : float
        Length of the recording.
    seed : int
        Seed of the utterance order and the pauses.

    Returns
    -------
    list of Utterance
        Where each utterance lies in ``out``, in time order.
    """
    from emovox.audio import load_audio
    from emovox.corpora import load_corpus

    table = pd.concat([load_corpus(root / source).table for source in SOURCES],
                      ignore_index=True)
    table = table[table["emotion"].isin(CLASSES)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    total = round(minutes * 60 * RATE)
    placed: list[Utterance] = []
    written = 0
    with sf.SoundFile(out, "w", samplerate=RATE, channels=1, format="FLAC",
                      subtype="PCM_16") as handle:
        for row in table.iloc[order].itertuples():
            if written >= total:
                break
            pause = NOISE_LEVEL * rng.standard_normal(round(rng.uniform(*PAUSE_SECONDS) * RATE))
            room = total - written - pause.size
            if room < RATE // 2:  # no room for another utterance: end on noise
                handle.write(pause[: total - written].astype(np.float32))
                break
            speech = load_audio(row.path, RATE)[:room]
            handle.write(pause.astype(np.float32))
            start = written + pause.size
            handle.write(np.clip(speech, -1.0, 1.0))
            written = start + speech.size
            placed.append(Utterance(start / RATE, written / RATE, str(row.emotion),
                                    str(row.path)))
    return placed


def score_timeline(frame: pd.DataFrame, utterances: list[Utterance],
                   classes: list[str]) -> dict[str, float]:
    """Window and utterance UAR of a timeline against the utterances it was built from.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``predict_timeline`` output (indexed by file, start, end).
    utterances : list of Utterance
        The true labels, in time order.
    classes : list of str
        Probability columns of ``frame``.

    Returns
    -------
    dict
        ``window_uar``, ``utterance_uar``, ``windows`` (classified windows that overlap
        an utterance), ``utterances`` and ``utterances_seen`` (with a window).
    """
    from emovox.evaluation import compute_scores

    rows = frame[frame["emotion"].notna()]
    starts = rows.index.get_level_values("start").to_numpy(float)
    ends = rows.index.get_level_values("end").to_numpy(float)
    u_start = np.array([u.start for u in utterances])
    u_end = np.array([u.end for u in utterances])
    # Overlap (seconds) of every window with every utterance; the largest labels it.
    overlap = np.clip(np.minimum(ends[:, None], u_end) - np.maximum(starts[:, None], u_start),
                      0.0, None)
    owner = overlap.argmax(axis=1)
    covered = overlap.max(axis=1) > 0
    truth = np.array([u.label for u in utterances], dtype=object)
    window = compute_scores(truth[owner[covered]], rows["emotion"].to_numpy()[covered], classes)
    proba = rows[classes].to_numpy(float)[covered]
    predicted = np.full(len(utterances), "none", dtype=object)  # no window: wrong
    for index in np.unique(owner[covered]):
        predicted[index] = classes[int(proba[owner[covered] == index].mean(axis=0).argmax())]
    utterance = compute_scores(truth, predicted, classes)
    return {"window_uar": window["uar"], "utterance_uar": utterance["uar"],
            "windows": int(covered.sum()), "utterances": len(utterances),
            "utterances_seen": int((predicted != "none").sum())}


def ct2_encode_seconds(signal: np.ndarray, chunk_seconds: float, threads: int,
                       repeats: int = 1) -> tuple[float, float]:
    """Seconds CTranslate2 int8 takes to encode ``signal`` once, in chunks, and log-mel time.

    Each chunk's Whisper log-mel (:func:`emovox.features.encoders.whisper_log_mel`,
    unpadded, an even number of frames as CTranslate2 wants) is computed first and
    timed apart; the encoder time is the best of ``repeats`` passes.

    Returns
    -------
    (float, float)
        Encoder seconds, log-mel seconds.
    """
    import ctranslate2

    from emovox.features.encoders import torch_threads, whisper_log_mel, whisper_model_dir

    model = ctranslate2.models.Whisper(str(whisper_model_dir()), device="cpu",
                                       compute_type="int8", intra_threads=threads)
    size = round(chunk_seconds * RATE)
    started = time.perf_counter()
    mels = []
    with torch_threads(threads):
        for begin in range(0, signal.size, size):
            chunk = signal[begin:begin + size]
            if chunk.size <= 2 * 160:
                continue
            mel = whisper_log_mel(chunk).numpy()
            mels.append(np.ascontiguousarray(mel[None, :, : mel.shape[1] // 2 * 2]))
    mel_seconds = time.perf_counter() - started
    model.encode(ctranslate2.StorageView.from_array(mels[0]))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for mel in mels:
            model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
        best = min(best, time.perf_counter() - started)
    return best, mel_seconds


def latencies(recognizer: object, clip: np.ndarray, n: int = 30, warmup: int = 3
              ) -> np.ndarray:
    """Seconds per ``predict_signal(clip)`` call, ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        recognizer.predict_signal(clip, RATE)  # type: ignore[attr-defined]
    times = []
    for _ in range(n):
        started = time.perf_counter()
        recognizer.predict_signal(clip, RATE)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
    return np.asarray(times)


def cli_call(path: Path, *options: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``emovox predict path`` in a fresh process.

    The peak is read with ``/usr/bin/time -v`` when it exists, else from
    ``RUSAGE_CHILDREN`` (the largest child so far, so call this before other children).
    """
    emovox = Path(sys.executable).with_name("emovox")
    command = [str(emovox) if emovox.exists() else shutil.which("emovox") or "emovox",
               "predict", *options, str(path)]
    timer = Path("/usr/bin/time")
    if timer.exists():
        command = [str(timer), "-v", *command]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if timer.exists():
        line = next(x for x in done.stderr.splitlines() if "Maximum resident" in x)
        return wall, int(line.split(":")[1]) / 1024
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def set_threads(recognizer: object, threads: int) -> None:
    """Run the recogniser's encoder (and this process's torch) on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    extractor = recognizer.extractor  # type: ignore[attr-defined]
    inner = getattr(extractor, "inner", extractor)
    if hasattr(inner, "threads"):
        inner.threads = threads


class WindowByWindow:
    """The landed timeline's encoding: a backend that encodes each window on its own."""

    #: No frame-level features: the timeline encodes windows, not stretches of speech.
    frame_seconds = None

    def __init__(self, backend: Any) -> None:
        self.inner = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, signals: list[np.ndarray], sample_rate: int) -> Any:
        from emovox.inference.engine import Encoded

        parts = [self.inner.encode([signal], sample_rate) for signal in signals]
        usable = np.array([bool(part.usable[0]) for part in parts])
        kept = [part for part in parts if part.usable[0]]
        n = len(self.inner.classes)
        features = (np.concatenate([part.features for part in kept]) if kept
                    else np.zeros((0, 0), np.float32))
        plain = np.concatenate([part.plain for part in kept]) if kept else np.zeros((0, n))
        return Encoded(features, plain, usable)


def timed_timeline(name: str, recognizer: Any, long_file: Path,
                   utterances: list[Utterance], ct2: float, report: Any,
                   repeats: int = 1) -> None:
    """Time the timeline of ``long_file`` (best of ``repeats`` runs, as CTranslate2's
    time is) and report its speed, ratio and UARs."""
    duration = sf.info(long_file).duration
    seconds = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        frame = recognizer.predict_timeline(long_file)
        seconds = min(seconds, time.perf_counter() - started)
    scores = score_timeline(frame, utterances, recognizer.classes)
    report(f"timeline, {name}", f"{seconds:.1f} s, {duration / seconds:.0f}x real time, "
           f"{seconds / ct2:.2f}x CTranslate2 int8; window / utterance UAR "
           f"{scores['window_uar']:.3f} / {scores['utterance_uar']:.3f}")


def cli_native(path: Path) -> tuple[float, float]:
    """:func:`cli_call` with the packaged bundle given by its folder (the native path)."""
    from emovox.bundle import default_bundle_path

    return cli_call(path, "--bundle", str(default_bundle_path()))


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Build the recording, run every measurement and print the table.

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
                        help="length of the concatenated recording")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the timeline's encoder and of CTranslate2")
    parser.add_argument("--seed", type=int, default=0, help="utterance order and pauses")
    parser.add_argument("--n", type=int, default=30, help="3 s clip repetitions")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timelines and CTranslate2 encodings timed this many times "
                             "each, the best kept")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false",
                        help="skip the int8 exports (the default's and the fast tier)")
    add_corpora_argument(parser)
    args = parser.parse_args(argv)
    root = corpora_root(args)
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None
                                                       else sys.argv[1:])
    rows: list[tuple[str, str]] = []

    def report(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name}: {value}", flush=True)

    with tempfile.TemporaryDirectory(prefix="emovox-speed-") as tmp:
        folder = Path(tmp)
        long_file = folder / "long.flac"
        utterances = build_recording(root, long_file, args.minutes, args.seed)
        signal = sf.read(long_file, dtype="float32")[0]
        duration = signal.size / RATE
        one = folder / "one.wav"
        first = sf.read(utterances[0].path, dtype="float32")[0]
        sf.write(one, first, RATE)
        clip = np.resize(first, round(CLIP_SECONDS * RATE))  # a real 3 s clip
        report("recording", f"{duration / 60:.1f} min, {len(utterances)} utterances "
               f"(CREMA-D + RAVDESS speech, 6 classes, seed {args.seed}), "
               f"{args.threads} thread(s) on both sides, best of {args.repeats} runs")

        wall, rss = cli_call(one)  # first child: RUSAGE_CHILDREN is its own peak
        report("emovox predict one.wav (default: packaged ONNX)",
               f"{wall:.2f} s wall, {rss:.0f} MB peak RSS")
        wall, rss = cli_native(one)
        report("emovox predict one.wav (native bundle, before)",
               f"{wall:.2f} s wall, {rss:.0f} MB peak RSS")

        encode: dict[float, tuple[float, float]] = {
            chunk: ct2_encode_seconds(signal, chunk, args.threads, args.repeats)
            for chunk in (3, 10, 30)}
        best = min(encode, key=lambda c: encode[c][0])
        ct2, mel = encode[best]
        report("CTranslate2 int8 encode, same audio once",
               f"{ct2:.1f} s with {best:g} s chunks (" + ", ".join(
                   f"{c:g} s: {e:.1f}" for c, (e, _) in encode.items())
               + f"); log-mel {mel:.1f} s more")

        from emovox.inference.packaged import (
            EXPORT_SOURCES,
            bundles_root,
            packaged_model,
            packaged_onnx,
        )
        from emovox.recognizer import OnnxRecognizer, Recognizer

        native = Recognizer(n_jobs=1, runtime="torch")
        set_threads(native, args.threads)
        native.predict_signal(clip, RATE)  # loads the encoder and the VAD's imports
        before = Recognizer(backend=WindowByWindow(native.backend))
        runtimes: dict[str, Any] = {"native, window by window (before)": before,
                                    "native, speech encoded once": native}
        default = packaged_onnx()
        if default is not None:
            runtimes["ONNX float32 (packaged default)"] = OnnxRecognizer(
                default, threads=args.threads)
        if args.onnx:
            from emovox.export import export_onnx

            # The fast tier before it had its own bundle: the default's int8 export.
            default_int8 = export_onnx(None, folder / "default-int8", int8=True)
            runtimes["ONNX int8 of the default (fast tier before)"] = OnnxRecognizer(
                default_int8, threads=args.threads)
            runtimes["fast tier (packaged: blocks 1-2, int8)"] = OnnxRecognizer(
                packaged_model("fast"), threads=args.threads)
        for name, recognizer in runtimes.items():
            recognizer.predict_signal(clip, RATE)  # warm
            timed_timeline(name, recognizer, long_file, utterances, ct2, report,
                           args.repeats)
        wall, rss = cli_call(one, "--model", "accurate")
        report("emovox predict one.wav --model accurate (int8)",
               f"{wall:.2f} s wall, {rss:.0f} MB peak RSS")
        wall, rss = cli_call(one, "--bundle", str(bundles_root() / EXPORT_SOURCES["accurate"]))
        report("emovox predict one.wav, accurate bundle (native, before)",
               f"{wall:.2f} s wall, {rss:.0f} MB peak RSS")
        accurate = Recognizer("accurate", n_jobs=1, runtime="torch")
        set_threads(accurate, args.threads)
        tiers = {"accurate tier, native (before)": accurate,
                 "accurate tier (packaged: int8)": OnnxRecognizer(
                     packaged_model("accurate"), threads=args.threads)}
        for name, recognizer in tiers.items():
            recognizer.predict_signal(clip, RATE)  # warm: loads both encoders
            timed_timeline(name, recognizer, long_file, utterances, ct2, report,
                           args.repeats)
        runtimes.update(tiers)
        for name, recognizer in runtimes.items():
            if name.startswith("native, speech"):
                continue  # one clip: the same work as window by window
            times = latencies(recognizer, clip, n=args.n)
            report(f"3 s clip, {name.replace(' (before)', '')}",
                   f"p50 {1000 * np.percentile(times, 50):.1f} ms, "
                   f"p95 {1000 * np.percentile(times, 95):.1f} ms")

    width = max(len(name) for name, _ in rows)
    print(f"\n$ {command.strip()}\n")
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if args.markdown:
        lines = [f"`{command.strip()}`", "", "| measure | value |", "|---|---|",
                 *(f"| {name} | {value} |" for name, value in rows)]
        args.markdown.write_text("\n".join(lines) + "\n")
        print(f"\nmarkdown table written to {args.markdown}")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
