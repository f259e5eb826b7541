"""Speaker-independent accuracy of the networks of the published SER experiments.

Each network gets the input its experiment used, and one shared training budget
(Adam, up to ``--epochs`` epochs, early stopping on the loss of a validation set of
*training* speakers, best checkpoint restored). Protocols as in accuracy.py:

- RAVDESS speech, 8 classes, 6 actor folds (actors 1-4, 5-8, ..., 21-24),
- EmoDB, 7 classes, leave-one-speaker-out,
- CREMA-D (actors 1001-1020), 6 classes, 5 speaker folds.

Usage::

    python benchmarks/networks.py [--corpora ../shared/corpora] [--only lstm]
        [--benchmarks ravdess,emodb,cremad] [--epochs 60] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from common import add_corpora_argument, corpora_root

from emovox.config import load_config
from emovox.evaluation import SCORES, mean_std
from emovox.experiment import prepare_dataset, protocol_description, run_experiment

BENCHMARKS = {
    "ravdess": ("RAVDESS speech 8-class, 6 actor folds", "ravdess/Audio_Speech_Actors_01-24",
                "ravdess8", {"kind": "speaker_folds", "n_folds": 6}),
    "emodb": ("EmoDB 7-class LOSO", "emodb/wav", "emodb7", {"kind": "loso"}),
    "cremad": ("CREMA-D (20 actors) 6-class, 5 speaker folds", "crema-d/AudioWAV", "common6",
               {"kind": "speaker_folds", "n_folds": 5}),
}
MFCC_216 = {"name": "mfcc_frame_mean"}  # 13 MFCCs averaged per frame, 2.5 s from 0.5 s
NETWORKS = {
    "cnn1d_mfcc216": MFCC_216,
    "cnn1d_deep": MFCC_216,
    "cnn2d_mfcc": {"name": "mfcc_sequence", "n_mfcc": 25, "sample_rate": 44100,
                   "offset": 0.5, "duration": 2.5},
    "lstm": {"name": "mfcc_sequence", "n_mfcc": 40},
    "cnn_small_b": {"name": "mfcc_stats", "n_mfcc": 40, "deltas": 0, "std": False},
    "cnn_small_c": {"name": "mfcc_stats", "n_mfcc": 40, "deltas": 0, "std": False},
    "cnn_small_d": {"name": "mfcc_stats", "n_mfcc": 40, "deltas": 0, "std": False},
    "mlp": {"name": "mfcc_chroma_mel"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpora_argument(parser)
    parser.add_argument("--only", help="comma-separated network names")
    parser.add_argument("--benchmarks", default="ravdess,emodb,cremad")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    root = corpora_root(args)
    names = args.only.split(",") if args.only else list(NETWORKS)
    lines = ["| benchmark | network | UAR | WA | macro-F1 | protocol | features s | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for key in args.benchmarks.split(","):
        title, folder, labels, protocol = BENCHMARKS[key]
        for name in names:
            config = load_config(data={
                "name": f"{key}-{name}", "corpora": [str(root / folder)],
                "labels": labels, "features": NETWORKS[name], "protocol": protocol,
                "model": {"name": name, "params": {
                    "epochs": args.epochs, "early_stopping_patience": 15, "lr": 1e-3,
                    "optimizer": "adam", "batch_size": 32, "class_weight": "balanced"}}})
            started = time.perf_counter()
            dataset = prepare_dataset(config, progress=sys.stderr.isatty())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = run_experiment(config, dataset, progress=False)
            scores = {s: mean_std(result.summary, s) for s in SCORES}
            print(f"{title:46s} {name:14s} UAR {scores['uar']}  WA {scores['wa']}  "
                  f"F1 {scores['macro_f1']}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            lines.append(f"| {title} | {name} | {scores['uar']} | {scores['wa']} | "
                         f"{scores['macro_f1']} | {protocol_description(result)} | "
                         f"{dataset.feature_seconds:.0f} | "
                         f"{result.seconds['train_and_test']:.0f} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
