"""How many recordings of a new speaker does adaptation need?

For the default bundle's recipe (loudness to -23 LUFS, Whisper-tiny all-layer means,
one channel-augmented copy per training file, corpus-balanced logistic regression,
C = 0.01), each leave-one-domain-out fold trains

- the **adapted** model, on per-speaker standardised features, and
- the **unadapted** model, on raw features (what the Recognizer uses for a lone file).

Each test speaker's recordings are split at random into a calibration pool and an
evaluation half. The speaker's statistics are estimated from ``k`` recordings of the
pool (shrunk towards the average training speaker, exactly as the Recognizer does)
and the evaluation half is standardised with them; the unadapted model predicts the
same evaluation half. UAR over all test speakers' evaluation halves, averaged over
random draws, for each ``k``: the curve behind ``Recognizer.MIN_ADAPT_VECTORS`` and
what a calibration recording (``--calibrate``) of ``k`` sentences buys. Calibration
recordings never count as evaluation. No label of a test speaker is used.

Usage::

    python benchmarks/adaptation.py [--corpora ../shared/corpora] [--draws 5]
    python benchmarks/adaptation.py --in-corpus   # the recipe's 5 speaker folds

Features (and augmented copies) are cached; the first run extracts them.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from common import add_corpora_argument, corpora_root, print_table
from sklearn.metrics import balanced_accuracy_score

from emovox.config import load_config
from emovox.experiment import fit_fold, normalised_features, prepare_dataset
from emovox.normalization import FeatureStats, reference_stats
from emovox.protocols import make_splits

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "default_bundle.yaml"
KS = (1, 2, 4, 8, 16)


def recipe_config(root: Path, in_corpus: bool, calibrate: bool = False,
                  recipe: Path = RECIPE):
    """A bundle's recipe (the default's unless given), leave-one-domain-out over every
    developer corpus or (``in_corpus``) under its own 5 speaker-disjoint folds.

    Calibration is off unless asked: temperature scaling never changes the top class,
    so UAR is the same and each fold fits once instead of four times.
    """
    import yaml

    spec = yaml.safe_load(Path(recipe).read_text())
    if not in_corpus:
        spec.update(corpora=[str(root / c) for c in ("emodb/wav", "ravdess",
                                                     "crema-d/AudioWAV")
                             if (root / c).exists()],
                    protocol={"kind": "loco", "by": "domain"})
    spec["model"] = {**spec["model"], "calibrate": calibrate}
    return load_config(data=spec)


def curve(root: Path, draws: int, in_corpus: bool = False, seed: int = 0) -> list[dict]:
    """One row per (test domain or fold, k): adapted and unadapted UAR on the
    evaluation halves."""
    config = recipe_config(root, in_corpus)
    raw = config.model_copy(update={"normalization": "none"})
    dataset = prepare_dataset(config, progress=sys.stderr.isatty())
    speakers = dataset.table["speaker"].astype(str).to_numpy()
    y = dataset.y
    rows = []
    splits = make_splits(dataset.table, config.protocol.kind, **config.protocol.params)
    for number, split in enumerate(splits):
        started = time.perf_counter()
        held = f"fold {number + 1}" if in_corpus else split.name.split("test=")[-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adapted = fit_fold(config, dataset,
                               normalised_features(config, dataset, split.train, split.test),
                               split)
            unadapted = fit_fold(raw, dataset, dataset.features, split)
        prior = reference_stats(dataset.features[split.train], speakers[split.train])
        rng = np.random.default_rng(seed)
        scores: dict[object, list[float]] = {k: [] for k in (*KS, "pool", "none")}
        for _ in range(draws):
            pools, evaluation = {}, []
            for speaker in np.unique(speakers[split.test]):
                own = rng.permutation(split.test[speakers[split.test] == speaker])
                half = len(own) // 2
                pools[speaker], evaluation = own[:half], [*evaluation, *own[half:]]
            evaluation = np.asarray(evaluation)
            truth = y[evaluation]
            scores["none"].append(balanced_accuracy_score(
                truth, unadapted.predict(dataset.features[evaluation])))
            for k in (*KS, "pool"):
                standardised = np.empty((len(evaluation), dataset.features.shape[1]),
                                        dtype=np.float32)
                for speaker, pool in pools.items():
                    used = pool if k == "pool" else pool[:k]
                    stats = FeatureStats.of(dataset.features[used]).with_prior(
                        prior, config.normalization_prior)
                    mine = speakers[evaluation] == speaker
                    standardised[mine] = stats.standardise(dataset.features[evaluation[mine]])
                scores[k].append(balanced_accuracy_score(truth, adapted.predict(standardised)))
        pool_sizes = [len(p) for p in pools.values()]
        for k, values in scores.items():
            rows.append({"test": held, "k": k, "uar": float(np.mean(values)),
                         "pool": f"{min(pool_sizes)}-{max(pool_sizes)}"})
        print(f"{held:16s} " + "  ".join(f"{k}: {np.mean(v):.3f}" for k, v in scores.items())
              + f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """Recordings of the speaker down, test domains across."""
    domains = sorted({r["test"] for r in rows})
    lines = ["| recordings of the speaker | " + " | ".join(domains) + " | mean |",
             "|---|" + "---|" * (len(domains) + 1)]
    labels = {"none": "0 (the unadapted model)", "pool": "the whole pool (half of theirs)"}
    for k in ("none", *KS, "pool"):
        cells = {r["test"]: r["uar"] for r in rows if r["k"] == k}
        mean = sum(cells.values()) / len(cells)
        lines.append(f"| {labels.get(k, k)} | " + " | ".join(f"{cells[d]:.3f}" for d in domains)
                     + f" | {mean:.3f} |")
    return "\n".join(lines)


def main() -> None:
    """Print the adaptation curve; ``--markdown`` also writes it to a file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpora_argument(parser)
    parser.add_argument("--draws", type=int, default=5,
                        help="random calibration/evaluation splits per speaker")
    parser.add_argument("--in-corpus", action="store_true",
                        help="the recipe's own 5 speaker-disjoint folds instead of "
                             "leave-one-corpus-out")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    print_table(markdown(curve(corpora_root(args), args.draws, args.in_corpus)), args.markdown)


if __name__ == "__main__":
    main()
