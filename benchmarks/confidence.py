"""Is a packaged model's confidence honest on voices and corpora it never heard?

For the default bundle's recipe (or another one, ``--recipe``; calibrated: a
temperature fitted on out-of-fold predictions over the training speakers), each fold
reports, on its test speakers, the expected calibration error (ECE, 15 bins) of the
probabilities before and after the temperature, for the adapted model (test speakers
standardised by their own recordings) and the unadapted one (a lone file), and how
accurate the answers given with a calibrated confidence of at least 0.7 are, and how
many they are.

Protocols: leave-one-corpus-out over every developer corpus (default), or the
recipe's own 5 speaker-disjoint folds (``--in-corpus``). The temperature never sees a
test speaker.

Usage::

    python benchmarks/confidence.py [--in-corpus] [--recipe recipes/accurate_bundle.yaml]
                                    [--corpora ../shared/corpora]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from adaptation import RECIPE, recipe_config  # sibling scripts: this folder is on sys.path
from common import add_corpora_argument, corpora_root, print_table

from emovox.calibration import expected_calibration_error
from emovox.experiment import fit_fold, normalised_features, prepare_dataset
from emovox.protocols import make_splits

CONFIDENT = 0.7


def fold_rows(root: Path, in_corpus: bool, recipe: Path = RECIPE) -> list[dict]:
    """One row per fold and model (adapted / unadapted)."""
    config = recipe_config(root, in_corpus, calibrate=True, recipe=recipe)
    raw = config.model_copy(update={"normalization": "none"})
    dataset = prepare_dataset(config, progress=sys.stderr.isatty())
    rows = []
    splits = make_splits(dataset.table, config.protocol.kind, **config.protocol.params)
    for number, split in enumerate(splits):
        started = time.perf_counter()
        name = f"fold {number + 1}" if in_corpus else split.name.split("test=")[-1]
        truth = dataset.y[split.test]
        for label, cfg, features in (
                ("adapted", config, normalised_features(config, dataset, split.train,
                                                        split.test)),
                ("unadapted", raw, dataset.features)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = fit_fold(cfg, dataset, features, split)
            X = features[split.test]
            calibrated = model.predict_proba(X)
            before = model.base_.predict_proba(X)
            confident = calibrated.max(axis=1) >= CONFIDENT
            right = model.classes_[calibrated.argmax(axis=1)] == truth
            rows.append({
                "test": name, "model": label, "T": model.temperature_,
                "ece_before": expected_calibration_error(before, truth, model.classes_),
                "ece_after": expected_calibration_error(calibrated, truth, model.classes_),
                "mean_confidence": float(calibrated.max(axis=1).mean()),
                "accuracy": float(right.mean()),
                "confident_share": float(confident.mean()),
                "confident_accuracy": float(right[confident].mean()) if confident.any()
                else float("nan")})
            r = rows[-1]
            print(f"{name:16s} {label:9s} T {r['T']:.2f}  ECE {r['ece_before']:.3f} -> "
                  f"{r['ece_after']:.3f}  mean confidence {r['mean_confidence']:.3f} vs "
                  f"accuracy {r['accuracy']:.3f}; confidence >= {CONFIDENT}: "
                  f"{r['confident_share']:.0%} of answers, {r['confident_accuracy']:.3f} "
                  f"right", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """One line per fold and model."""
    lines = ["| test | model | T | ECE before | ECE after | mean confidence | accuracy "
             f"| share with confidence ≥ {CONFIDENT} | their accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['test']} | {r['model']} | {r['T']:.2f} | {r['ece_before']:.3f} "
                     f"| {r['ece_after']:.3f} | {r['mean_confidence']:.3f} "
                     f"| {r['accuracy']:.3f} | {r['confident_share']:.0%} "
                     f"| {r['confident_accuracy']:.3f} |")
    for model in ("adapted", "unadapted"):
        mine = [r for r in rows if r["model"] == model]
        lines.append(f"| mean | {model} | {np.mean([r['T'] for r in mine]):.2f} "
                     f"| {np.mean([r['ece_before'] for r in mine]):.3f} "
                     f"| {np.mean([r['ece_after'] for r in mine]):.3f} "
                     f"| {np.mean([r['mean_confidence'] for r in mine]):.3f} "
                     f"| {np.mean([r['accuracy'] for r in mine]):.3f} "
                     f"| {np.mean([r['confident_share'] for r in mine]):.0%} "
                     f"| {np.nanmean([r['confident_accuracy'] for r in mine]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    """Print the table; ``--markdown`` also writes it to a file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpora_argument(parser)
    parser.add_argument("--in-corpus", action="store_true",
                        help="the recipe's own 5 speaker-disjoint folds")
    parser.add_argument("--recipe", type=Path, default=RECIPE,
                        help="the bundle recipe (default: the default bundle's; e.g. "
                             "recipes/accurate_bundle.yaml)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    print_table(markdown(fold_rows(corpora_root(args), args.in_corpus, args.recipe)),
                args.markdown)


if __name__ == "__main__":
    main()
