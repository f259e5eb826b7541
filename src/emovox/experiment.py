"""An experiment: config -> utterance table -> features -> folds -> fitted models -> results.

The per-fold loop never sees which corpus, feature or classifier it runs; it gets
row positions from a protocol and a model with ``fit``/``predict_proba``.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from emovox.config import ExperimentConfig, dump_config
from emovox.corpora import load_corpora
from emovox.corpora.base import corpus_of
from emovox.errors import ConfigError
from emovox.evaluation import (
    SCORES,
    FoldResult,
    per_class_table,
    pooled_confusion,
    summarise,
)
from emovox.features import extract_many, get_extractor
from emovox.fileio import atomic_folder
from emovox.labels import LabelSet, get_label_set
from emovox.models import make_classifier
from emovox.normalization import describe_scope, reference_stats, standardise_by_group
from emovox.protocols import (
    LEAKAGE_MESSAGE,
    VALIDATE_ON_TEST_MESSAGE,
    LeakageWarning,
    Split,
    make_splits,
    select_rows,
)
from emovox.studies import variant_label


@dataclass
class Dataset:
    """Labelled utterances whose features could be extracted, and what was left out."""

    table: pd.DataFrame
    features: np.ndarray
    label_set: LabelSet
    dropped_labels: dict[str, int]
    failures: list[tuple[str, str]]
    feature_seconds: float

    @property
    def y(self) -> np.ndarray:
        """Class name of each row."""
        return self.table["label"].astype(str).to_numpy()


@dataclass
class RunResult:
    """Scores of every fold and their summary."""

    config: ExperimentConfig
    folds: list[FoldResult]
    summary: pd.DataFrame
    per_class: pd.DataFrame
    confusion: np.ndarray
    classes: list[str]
    predictions: pd.DataFrame
    leaky: bool
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    run_dir: Path | None = None


def prepare_dataset(config: ExperimentConfig, progress: bool = True) -> Dataset:
    """Load the corpora, map labels, apply the subset and extract (cached) features."""
    corpus = load_corpora([(c.path, c.kind) for c in config.corpora])
    label_set = get_label_set(config.labels)
    table, dropped = label_set.apply(corpus.table)
    table = select_rows(table, config.subset)
    extractor = get_extractor({"name": config.features.name, **config.features.params})
    result = extract_many(
        table["path"].tolist(), extractor, cache_dir=config.cache_dir,
        n_jobs=config.n_jobs, progress=progress, engine=config.engine, address=config.address,
    )
    kept = table.loc[result.ok].reset_index(drop=True)
    features = result.features.reshape(len(kept), -1)
    return Dataset(kept, features, label_set, dropped,
                   corpus.failures + list(result.failures), result.seconds)


def normalised_features(config: ExperimentConfig, dataset: Dataset,
                        train_rows: np.ndarray | None = None,
                        test_rows: np.ndarray | None = None) -> np.ndarray:
    """Features after the configured per-group standardisation (none by default).

    Each group (speaker, session or corpus) is standardised with its own statistics,
    shrunk towards the average *training* group's (``train_rows``; all rows when not
    given) by ``normalization_prior`` utterances. Labels are never used.

    With ``train_rows``, a group's statistics come from its rows on the same side of
    the split only: a test speaker is adapted to with their test recordings, never
    with recordings the fold leaves out (e.g. the RAVDESS speech of the actors whose
    songs are tested).
    """
    if config.normalization == "none":
        return dataset.features
    scope = config.normalization
    if scope not in dataset.table:
        raise ConfigError(f"normalization: {scope} needs a {scope!r} column in the "
                          "utterance table (e.g. from a manifest)")
    groups = dataset.table[scope].astype(str).to_numpy()
    rows = np.arange(len(groups)) if train_rows is None else np.asarray(train_rows)
    prior = reference_stats(dataset.features[rows], groups[rows])
    if train_rows is not None:
        side = np.full(len(groups), "other")
        side[rows] = "train"
        if test_rows is not None:
            side[np.asarray(test_rows)] = "test"
        groups = np.char.add(np.char.add(groups, "|"), side)
    out = standardise_by_group(dataset.features, groups, prior, config.normalization_prior)
    if not config.adapt_test and train_rows is not None:
        others = np.setdiff1d(np.arange(len(groups)), rows)
        out[others] = prior.standardise(dataset.features[others])
    return out


def is_network(name: str) -> bool:
    """Whether a model name is a PyTorch network (else a scikit-learn classifier)."""
    from emovox.models.registry import NETWORKS

    return name in NETWORKS


def make_model(config: ExperimentConfig, progress: bool = False):
    """An unfitted model of the configured kind (scikit-learn pipeline or network)."""
    params = dict(config.model.params)
    if is_network(config.model.name):
        from emovox.models.neural import NeuralClassifier

        extractor = get_extractor({"name": config.features.name, **config.features.params})
        params.setdefault("input_shape", list(extractor.output_shape))
        params.setdefault("num_threads", 1)  # one process per core does better here
        return NeuralClassifier(network=config.model.name, seed=config.seed,
                                progress=progress, **params)
    if config.model.name in {"mlp", "svm"}:
        params.setdefault("random_state", config.seed)
    return make_classifier(config.model.name, params)


def fit_model(config: ExperimentConfig, features: np.ndarray, labels: np.ndarray,
              speakers: np.ndarray | None = None, augmented: np.ndarray | None = None,
              progress: bool = False):
    """A fresh model of the configured kind, fitted on the given rows.

    Networks carve their validation set from the training speakers (never the test
    speakers). With ``model.search`` (``{param: [values, ...]}``) scikit-learn
    parameters are chosen by grid search scored by UAR over speaker-group folds *of
    the training rows only*, so test speakers never take part in model selection.
    """
    model = make_model(config, progress=progress)
    if is_network(config.model.name):
        if config.model.balance != "none":
            raise ConfigError("model.balance applies to scikit-learn models only")
        return model.fit(features, labels, groups=speakers, augmented=augmented)
    search = config.model.search
    fit_params = {}
    if config.model.balance != "none":
        if speakers is None:
            raise ConfigError("model.balance needs the speakers of the training rows")
        fit_params["classifier__sample_weight"] = balance_weights(
            labels, speakers, config.model.balance)
    if takes_groups(model):
        if speakers is None:
            raise ConfigError(f"model {config.model.name!r} needs the speakers of the "
                              "training rows")
        fit_params["classifier__groups"] = speakers
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Stochastic Optimizer.*")
        if not search:
            return _calibrated(config, model.fit(features, labels, **fit_params),
                               features, labels, speakers)
        if speakers is None or len(set(speakers)) < 2:
            raise ConfigError("model.search needs at least 2 training speakers")
        from sklearn.model_selection import GridSearchCV, GroupKFold

        grid = GridSearchCV(
            model,
            {f"classifier__{name}": list(values) for name, values in search.items()},
            scoring="balanced_accuracy",
            cv=GroupKFold(n_splits=min(3, len(set(speakers)))),
            n_jobs=config.n_jobs if config.n_jobs != 0 else None,
            refit=True,
        )
        grid.fit(features, labels, groups=speakers, **fit_params)
        return _calibrated(config, grid.best_estimator_, features, labels, speakers)


def takes_groups(model) -> bool:
    """Whether a scikit-learn pipeline's classifier fits on the rows' speakers
    (``fit(..., groups=speakers)``, e.g. ``group_dro``)."""
    classifier = model.named_steps["classifier"] if hasattr(model, "named_steps") else model
    return "groups" in inspect.signature(classifier.fit).parameters


def _calibrated(config: ExperimentConfig, model, features: np.ndarray, labels: np.ndarray,
                speakers: np.ndarray | None):
    """``model`` with temperature-scaled probabilities when ``model.calibrate`` is set.

    The temperature is fitted on out-of-fold predictions over the training speakers
    (each from a model that never heard that speaker), so it reflects unseen voices.
    """
    if not config.model.calibrate:
        return model
    from sklearn.base import clone

    from emovox.calibration import (
        CalibratedClassifier,
        fit_temperature,
        out_of_fold_log_probabilities,
    )

    if speakers is None or len(set(speakers)) < 2:
        raise ConfigError("model.calibrate needs at least 2 training speakers")
    log_probs, _ = out_of_fold_log_probabilities(clone(model), features, labels, speakers)
    temperature = fit_temperature(log_probs, labels, np.unique(labels))
    return CalibratedClassifier.from_fitted(model, temperature, config.model.uncertain_below)


def balance_weights(labels: np.ndarray, speakers: np.ndarray, balance: str) -> np.ndarray:
    """Sample weights giving each corpus (or class, or corpus x class) equal total weight.

    Parameters
    ----------
    labels, speakers : np.ndarray, shape (n,)
        Class and speaker of each training row; a speaker id starts with its corpus
        name (``"emodb:03"``), which is how rows are assigned to corpora.
    balance : {"corpus", "class", "corpus_class"}

    Returns
    -------
    np.ndarray, shape (n,)
        Weights with mean 1.
    """
    corpora = corpus_of(speakers)
    keys = {"corpus": corpora, "class": np.asarray(labels).astype(str),
            "corpus_class": np.char.add(np.char.add(corpora, "|"),
                                        np.asarray(labels).astype(str))}[balance]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights * len(weights) / weights.sum()


def training_rows(config: ExperimentConfig, dataset: Dataset, features: np.ndarray,
                  rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels, speakers and an is-augmented mask of a fold's training rows.

    With ``augment`` configured, augmented copies of these rows' audio are appended
    (computed from the training files only: test files are never read here).
    """
    y = dataset.y[rows]
    speakers = dataset.table["speaker"].astype(str).to_numpy()[rows]
    X = features[rows]
    augmented = np.zeros(len(rows), dtype=bool)
    if config.augment is None:
        return X, y, speakers, augmented
    from emovox.augment import augmented_training_features

    extra = augmented_training_features(
        {"name": config.features.name, **config.features.params},
        dataset.table["path"].to_numpy()[rows], y, config.augment.recipe,
        copies=config.augment.copies, only_classes=config.augment.only_classes,
        seed=config.seed, p=config.augment.p, cache_dir=config.cache_dir,
        progress=sys.stderr.isatty())
    if len(extra.labels) == 0:
        return X, y, speakers, augmented
    extra_features = extra.features.reshape(len(extra.labels), -1)
    if config.normalization != "none":
        # Augmented audio is another channel: its copies form groups of their own
        # (source group + recipe), standardised like every other group.
        groups = dataset.table[config.normalization].astype(str).to_numpy()[rows]
        prior = reference_stats(dataset.features[rows], groups)
        extra_features = standardise_by_group(
            extra_features, np.char.add(groups[extra.source], "#augmented"), prior,
            config.normalization_prior)
    return (np.concatenate([X, extra_features]),
            np.concatenate([y, np.asarray(extra.labels).astype(str)]),
            np.concatenate([speakers, speakers[extra.source]]),
            np.concatenate([augmented, np.ones(len(extra.labels), dtype=bool)]))


def fit_fold(config: ExperimentConfig, dataset: Dataset, features: np.ndarray, split: Split,
             progress: bool = False):
    """A model fitted on one split's training rows (plus augmented copies).

    A network gets the split's own validation rows (``split.valid``: e.g. held-out
    validation speakers, or the test rows themselves under the leaky
    ``validate_on_test``) for early stopping and the restored epoch; without them it
    carves validation speakers out of its training rows. Classical models ignore
    ``split.valid`` (their ``model.search`` validates inside the training speakers).
    ``progress`` shows a network's bar over epochs.
    """
    X_train, y_train, train_speakers, augmented = training_rows(
        config, dataset, features, split.train)
    if not (is_network(config.model.name) and len(split.valid)):
        return fit_model(config, X_train, y_train, train_speakers, augmented,
                         progress=progress)
    model = make_model(config, progress=progress)
    return model.fit(X_train, y_train, groups=train_speakers, augmented=augmented,
                     X_valid=features[split.valid], y_valid=dataset.y[split.valid])


def run_experiment(
    config: ExperimentConfig, dataset: Dataset | None = None, progress: bool = True
) -> RunResult:
    """Evaluate a configuration under its protocol.

    Parameters
    ----------
    config : ExperimentConfig
    dataset : Dataset, optional
        Reuse already extracted features (e.g. to compare classifiers).
    progress : bool
        Show progress bars.
    """
    dataset = dataset or prepare_dataset(config, progress=progress)
    table, classes = dataset.table, dataset.label_set.classes
    params = dict(config.protocol.params)
    if config.protocol.kind in {"random", "holdout"}:
        params.setdefault("seed", config.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeakageWarning)
        splits = make_splits(table, config.protocol.kind, **params)
    notes = [str(w.message) for w in caught if issubclass(w.category, LeakageWarning)]
    leaky = any(s.leaky for s in splits)
    if config.normalization != "none":
        notes.append("normalisation: " + describe_scope(config.normalization))

    started = time.perf_counter()
    folds, rows, histories = [], [], {}
    y = dataset.y
    # Folds can take minutes each: a bar over them, and a network's over its epochs.
    for split in tqdm(splits, desc=f"{config.model.name} folds", unit="fold",
                      disable=not progress, dynamic_ncols=True):
        # Reference statistics of normalisation come from this fold's training rows.
        features = normalised_features(config, dataset, split.train, split.test)
        model = fit_fold(config, dataset, features, split, progress=progress)
        if getattr(model, "history_", None) is not None:
            histories[split.name] = model.history_
        proba = model.predict_proba(features[split.test])
        predicted = model.classes_[proba.argmax(axis=1)]
        folds.append(FoldResult(split.name, y[split.test], predicted, classes))
        fold_rows = table.iloc[split.test][["path", "speaker", "corpus"]].copy()
        fold_rows.insert(0, "fold", split.name)
        fold_rows["true"] = y[split.test]
        fold_rows["predicted"] = predicted
        for j, name in enumerate(model.classes_):
            fold_rows[f"p_{name}"] = proba[:, j]
        rows.append(fold_rows)
    train_seconds = time.perf_counter() - started
    pooled_true = np.concatenate([f.y_true for f in folds])
    pooled_pred = np.concatenate([f.y_pred for f in folds])
    return RunResult(
        config=config,
        folds=folds,
        summary=summarise(folds),
        per_class=per_class_table(pooled_true, pooled_pred, classes),
        confusion=pooled_confusion(folds, classes),
        classes=classes,
        predictions=pd.concat(rows, ignore_index=True),
        leaky=leaky,
        notes=notes,
        seconds={"features": dataset.feature_seconds, "train_and_test": train_seconds},
        histories=histories,
    )


def protocol_description(result: RunResult) -> str:
    """One sentence naming the protocol, as every published number must."""
    config = result.config
    kind = config.protocol.kind
    n = len(result.folds)
    text = {
        "loso": f"leave-one-speaker-out ({n} folds)",
        "speaker_folds": f"{n} speaker-disjoint folds",
        "holdout": "fixed held-out test speakers",
        "cross_corpus": "cross-corpus (train and test corpora disjoint)",
        "loco": f"leave-one-corpus-out ({n} folds)",
        "random": f"random utterance split ({LEAKAGE_MESSAGE})",
    }[kind]
    params = config.protocol.params
    if kind == "random" and params.get("valid_fraction"):
        test = float(params.get("test_fraction", 0.25))
        valid = float(params["valid_fraction"])
        text = text.replace("random utterance split",
                            f"random {1 - test - valid:.0%}/{valid:.0%}/{test:.0%} "
                            "train/validation/test utterance split", 1)
    elif params.get("valid_speakers") or params.get("valid_fraction"):
        by = params.get("valid_by", "speaker")
        text += ("; validation on speakers apart from train and test" if by == "speaker"
                 else "; validation on other utterances of the training speakers")
    if params.get("validate_on_test"):
        text += f"; {VALIDATE_ON_TEST_MESSAGE}"
    if config.normalization != "none":
        text += f"; {describe_scope(config.normalization)}"
        if not config.adapt_test:
            text += ", test speakers NOT adapted (average training speaker's statistics)"
    return text


def write_run(result: RunResult, output_dir: str | Path | None = None) -> Path:
    """Write the run folder atomically: config, metrics JSON/CSV, predictions, plots.

    The folder is assembled under a temporary name and renamed when complete, so an
    interrupted run never leaves a half-written result that looks finished.
    """
    from emovox.plots import format_confusion_matrix, save_confusion_matrix, save_fold_scores

    config = result.config
    root = Path(output_dir or config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    label = variant_label(config)
    final = root / f"{label}-{stamp}"
    suffix = 1
    while final.exists():
        suffix += 1
        final = root / f"{label}-{stamp}-{suffix}"
    with atomic_folder(final, replace=False) as work:
        (work / "config.yaml").write_text(dump_config(config))
        metrics = {
            "name": config.name,
            "variant": config.variant,
            "protocol": protocol_description(result),
            "leaky": result.leaky,
            "notes": result.notes,
            "classes": result.classes,
            "mean": {s: float(result.summary.loc["mean", s]) for s in SCORES},
            "std": {s: float(result.summary.loc["std", s]) for s in SCORES},
            "folds": [{"name": f.name, "n_test": len(f.y_true), **f.scores}
                      for f in result.folds],
            "per_class": result.per_class.reset_index().to_dict(orient="records"),
            "confusion": result.confusion.tolist(),
            "seconds": result.seconds,
        }
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
        result.summary.to_csv(work / "folds.csv", float_format="%.4f")
        result.per_class.to_csv(work / "per_class.csv", float_format="%.4f")
        result.predictions.to_csv(work / "predictions.csv", index=False, float_format="%.5f")
        (work / "confusion.txt").write_text(
            format_confusion_matrix(result.confusion, result.classes) + "\n"
        )
        save_confusion_matrix(result.confusion, result.classes, work / "confusion.png",
                              title=f"{label} — {protocol_description(result)}"[:90])
        per_fold = result.summary.drop(index=["mean", "std"]).reset_index()
        save_fold_scores(per_fold, work / "folds.png")
        for number, (fold, history) in enumerate(result.histories.items(), start=1):
            history.plot(work / f"training-curve-{number:02d}.png", title=fold)
    result.run_dir = final
    return final


def train_bundle(config: ExperimentConfig, evaluate: bool = True, progress: bool = True):
    """Evaluate under the protocol (optional), then fit on all data and build a bundle.

    Returns
    -------
    bundle : emovox.bundle.Bundle
        Ready for :func:`emovox.bundle.save_bundle`; its card and ``training`` metadata
        carry the protocol scores when ``evaluate`` is true.
    result : RunResult or None
    """
    from emovox.bundle import Bundle
    from emovox.model_card import render_card

    if config.normalization not in {"none", "speaker"}:
        # At inference the statistics come from the speaker at hand (adaptation.py).
        raise ConfigError("bundles support normalization: none or speaker")
    dataset = prepare_dataset(config, progress=progress)
    result = run_experiment(config, dataset, progress=progress) if evaluate else None
    everything = np.arange(len(dataset.table))
    # The final fits on all the data are the longest silent step otherwise.
    final = tqdm(total=1 + (config.normalization == "speaker"), unit="model",
                 desc=f"final {config.model.name} on {len(everything)} utterances",
                 disable=not progress, dynamic_ncols=True)
    X, y, speakers, augmented = training_rows(
        config, dataset, normalised_features(config, dataset, everything), everything)
    reference = unadapted = None
    if config.normalization == "speaker":
        groups = dataset.table["speaker"].astype(str).to_numpy()
        reference = reference_stats(dataset.features, groups)
        # A normalised model needs some of the speaker to adapt to; for a lone file
        # the same classifier on unnormalised features does better.
        raw = config.model_copy(update={"normalization": "none"})
        unadapted = fit_model(raw, *training_rows(raw, dataset, dataset.features, everything),
                              progress=progress)
        final.update()
    model = fit_model(config, X, y, speakers, augmented, progress=progress)
    final.update()
    final.close()
    evaluation = None
    if result is not None:
        evaluation = {
            "protocol": protocol_description(result),
            "leaky": result.leaky,
            "mean": {s: round(float(result.summary.loc["mean", s]), 4) for s in SCORES},
            "std": {s: round(float(result.summary.loc["std", s]), 4) for s in SCORES},
        }
    features_spec = get_extractor(
        {"name": config.features.name, **config.features.params}).spec()
    training = {
        "experiment": config.name,
        "corpora": sorted(dataset.table["corpus"].unique().tolist()),
        "utterances": len(dataset.table),
        "speakers": int(dataset.table["speaker"].nunique()),
        "model": config.model.model_dump(),
        "evaluation": evaluation,
    }
    card = render_card(config.name, config.description, dataset.label_set.classes,
                       features_spec, config.model.model_dump(), dataset.table, evaluation,
                       normalization=config.normalization, calibrated=config.model.calibrate)
    bundle = Bundle(model=model, features=features_spec, labels=dataset.label_set,
                    classes=[c for c in dataset.label_set.classes if c in set(model.classes_)],
                    preprocessing={"sample_rate": 16000, "channels": "mono (averaged)",
                                   "normalization": config.normalization,
                                   "prior_weight": config.normalization_prior},
                    training=training, card=card, reference=reference,
                    unadapted_model=unadapted)
    return bundle, result
