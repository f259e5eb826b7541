"""Measure the activation ranges of the int8 CAM++ graphs
(src/emovox/data/campplus_int8_ranges.json).

Runs the float32 window graph on 1.6 s windows of speech from every developer corpus,
the same number from each, and keeps the 99.999th percentile of each activation's
magnitude (ONNX Runtime's percentile calibration). Deterministic (seed 1). The run graph
diarization uses (``CampPlusEncoder.embed_run``) has the same layers and names and uses
the same ranges. The ranges are numbers, no audio: nothing of the corpora is stored.

Usage::

    python tools/build_campplus_int8.py [--corpora ../shared/corpora] [--per-corpus 48]
                                        [--out src/emovox/data/campplus_int8_ranges.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("emodb/wav", "ravdess/Audio_Speech_Actors_01-24", "ravdess/Audio_Song_Actors_01-24",
           "crema-d/AudioWAV")
#: Samples of a window and between two (1.6 s every 0.8 s at 16 kHz, as diarization).
WINDOW, HOP = 25_600, 12_800
BATCH = 16


def speech_windows(table, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows of speech from files of ``table`` drawn at random, one
    speaker after another, silences trimmed."""
    import librosa

    from emovox.audio import load_audio

    files = rng.permutation(table["path"].to_numpy())
    out: list[np.ndarray] = []
    for path in files:
        signal = load_audio(path, 16_000)
        speech = np.concatenate([signal[a:b] for a, b in librosa.effects.split(signal, top_db=35)])
        out += [speech[i:i + WINDOW] for i in range(0, len(speech) - WINDOW + 1, HOP)][:2]
        if len(out) >= count:
            return np.stack(out[:count])
    raise SystemExit(f"only {len(out)} windows of speech in {len(files)} files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--per-corpus", type=int, default=48)
    parser.add_argument("--out", type=Path,
                        default=REPO / "src" / "emovox" / "data" / "campplus_int8_ranges.json")
    args = parser.parse_args()
    from emovox.campplus import CampPlusEncoder, quantize_graph
    from emovox.corpora import load_corpus
    from emovox.fileio import atomic_write

    rng = np.random.default_rng(1)
    encoder = CampPlusEncoder(threads=1, runtime="onnx", precision="float")
    windows = np.concatenate([speech_windows(load_corpus(args.corpora / s).table,
                                             args.per_corpus, rng) for s in SOURCES])
    frames = encoder.features(rng.permutation(windows))
    with tempfile.TemporaryDirectory() as tmp:
        ranges = Path(tmp) / "ranges.json"
        encoder.session  # noqa: B018 - the window graph, built on first use
        # Measured on the window graph; the run graph has the same layer names and
        # uses the same ranges (its int8 agreement is checked when it is built).
        quantize_graph(encoder.float_graphs["windows"], Path(tmp) / "int8.onnx", ranges,
                       calibration=[frames[i:i + BATCH] for i in range(0, len(frames), BATCH)])
        measured = json.loads(ranges.read_text())
    text = json.dumps(measured, sort_keys=True, separators=(",", ":"))
    atomic_write(args.out, lambda tmp: tmp.write_text(text + "\n"))
    print(f"{args.out}: {len(measured['data'])} activation ranges from {len(frames)} windows "
          f"({args.per_corpus} per corpus: {', '.join(SOURCES)})")


if __name__ == "__main__":
    main()
