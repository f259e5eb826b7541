"""Calibration: ECE, temperature scaling on speaker folds, and "uncertain" answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import skops.io as sio
from conftest import real_corpus
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin

from emovox.bundle_checks import ALLOWED_TYPES, check_skops_file
from emovox.calibration import (
    UNCERTAIN,
    CalibratedClassifier,
    choose_uncertain_threshold,
    coverage_accuracy_table,
    expected_calibration_error,
    fit_calibrated,
    fit_temperature,
    log_probabilities,
    out_of_fold_log_probabilities,
    reliability_table,
    temperature_scale,
)
from emovox.models import make_classifier

CLASSES = np.array(["angry", "happy", "neutral", "sad"])


def _sample_labels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's distribution."""
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random((len(probabilities), 1))
    index = np.minimum((draws > cumulative).sum(axis=1), probabilities.shape[1] - 1)
    return CLASSES[index]


def _logits(n: int, seed: int, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, size=(n, len(CLASSES)))


def _blobs(n_per_group: int = 30, n_groups: int = 8, seed: int = 0):
    """Overlapping 4-class Gaussian blobs with a speaker offset per group."""
    rng = np.random.default_rng(seed)
    rows = n_per_group * n_groups
    y = CLASSES[rng.integers(0, len(CLASSES), rows)]
    centres = rng.normal(0, 1.2, size=(len(CLASSES), 5))
    groups = np.repeat([f"spk{g}" for g in range(n_groups)], n_per_group)
    offsets = {g: rng.normal(0, 0.5, 5) for g in np.unique(groups)}
    X = centres[np.searchsorted(CLASSES, y)] + rng.normal(0, 1.0, (rows, 5))
    X += np.array([offsets[g] for g in groups])
    return X, y, groups


# ------------------------------------------------------------------ ECE
def test_ece_of_a_hand_computed_example():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array(["a", "b", "a", "a"])
    # Bin of 0.9: accuracy 0.5, gap 0.4; bin of 0.6: accuracy 1.0, gap 0.4.
    assert expected_calibration_error(p, y, ["a", "b"]) == pytest.approx(0.4)
    table = reliability_table(p, y, ["a", "b"], n_bins=10)
    assert table["count"].sum() == 4
    assert table.loc[8, "count"] == 2 and table.loc[8, "accuracy"] == 0.5  # (0.8, 0.9]
    assert table.loc[5, "count"] == 2 and table.loc[5, "confidence"] == pytest.approx(0.6)
    assert np.isnan(table.loc[0, "accuracy"])


def test_confidence_one_lands_in_the_last_bin():
    table = reliability_table(np.array([[1.0, 0.0]]), ["a"], ["a", "b"], n_bins=5)
    assert table["count"].tolist() == [0, 0, 0, 0, 1]
    assert expected_calibration_error(np.array([[1.0, 0.0]]), ["a"], ["a", "b"]) == 0.0


def test_ece_is_small_when_calibrated_and_large_when_over_confident():
    rng = np.random.default_rng(1)
    z = _logits(20_000, seed=1)
    true_p = softmax(z, axis=1)
    y = _sample_labels(true_p, rng)
    calibrated = expected_calibration_error(true_p, y, CLASSES)
    sharpened = expected_calibration_error(softmax(z / 0.3, axis=1), y, CLASSES)
    assert calibrated < 0.02
    assert sharpened > 0.15


def test_unknown_labels_and_bad_shapes_are_errors():
    p = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="not among the classes"):
        expected_calibration_error(p, ["angry", "bored"], CLASSES)
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(p, ["angry", "sad"], CLASSES[:3])


# ------------------------------------------------------------------ temperature
@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(2)
    z = _logits(5_000, seed=2, scale=3.0)
    y = _sample_labels(softmax(z / true_temperature, axis=1), rng)
    estimate = fit_temperature(z, y, CLASSES)
    assert estimate == pytest.approx(true_temperature, rel=0.15)
    # Log-probabilities are logits up to a per-row constant: same answer.
    log_p = np.log(softmax(z, axis=1))
    assert fit_temperature(log_p, y, CLASSES) == pytest.approx(estimate, rel=1e-3)


def test_temperature_scaling_keeps_the_ranking_and_sums_to_one():
    z = _logits(200, seed=3)
    for temperature in (0.3, 1.0, 4.0):
        p = temperature_scale(z, temperature)
        assert np.allclose(p.sum(axis=1), 1.0)
        assert np.array_equal(p.argmax(axis=1), z.argmax(axis=1))
    with pytest.raises(ValueError, match="> 0"):
        temperature_scale(z, 0.0)


# ------------------------------------------------------------------ the wrapper
def test_calibrated_classifier_keeps_the_base_models_top_class():
    X, y, groups = _blobs()
    model = CalibratedClassifier(make_classifier("logreg")).fit(X, y, groups=groups)
    assert model.temperature_ > 0
    assert list(model.classes_) == list(CLASSES)
    base_p = model.base_.predict_proba(X)
    p = model.predict_proba(X)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(model.predict(X), model.classes_[base_p.argmax(axis=1)])
    # A temperature away from 1 really changes the confidence.
    assert not np.allclose(p.max(axis=1), base_p.max(axis=1))
    assert model.oof_log_proba_.shape == (len(y), len(CLASSES))
    assert np.array_equal(model.oof_y_, y)


def test_predict_or_uncertain_is_uncertain_exactly_below_the_threshold():
    X, y, groups = _blobs(seed=4)
    model = CalibratedClassifier(make_classifier("logreg"), uncertain_below=0.6)
    model.fit(X, y, groups=groups)
    p = model.predict_proba(X)
    labels = model.predict_or_uncertain(X)
    below = p.max(axis=1) < 0.6
    assert 0 < below.sum() < len(y)  # the test exercises both cases
    assert np.array_equal(labels == UNCERTAIN, below)
    assert np.array_equal(labels[~below], model.predict(X)[~below])
    # The threshold can be overridden per call; None never answers "uncertain".
    assert np.array_equal(model.predict_or_uncertain(X, threshold=0.0), model.predict(X))
    model.uncertain_below = None
    assert UNCERTAIN not in set(model.predict_or_uncertain(X))


#: (rows the model was fitted on, rows it predicted) of every SpyClassifier call.
PREDICTIONS: list[tuple[frozenset[int], frozenset[int]]] = []
FITS: list[tuple[frozenset[int], frozenset[str] | None]] = []


class SpyClassifier(ClassifierMixin, BaseEstimator):
    """Records which rows (column 0 of X holds the row number) it fits and predicts."""

    def fit(self, X: np.ndarray, y: np.ndarray, groups: Any = None) -> SpyClassifier:
        self.rows_ = frozenset(X[:, 0].astype(int).tolist())
        FITS.append((self.rows_, None if groups is None else frozenset(groups)))
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        PREDICTIONS.append((self.rows_, frozenset(X[:, 0].astype(int).tolist())))
        # Something not uniform, so a temperature can be fitted.
        z = np.sin(np.outer(X[:, 0], np.arange(1, len(self.classes_) + 1)))
        return softmax(3 * z, axis=1)


def test_out_of_fold_calibration_never_fits_and_calibrates_on_the_same_speaker():
    FITS.clear()
    PREDICTIONS.clear()
    rows = 120
    X = np.column_stack([np.arange(rows), np.zeros(rows)])
    y = CLASSES[np.arange(rows) % len(CLASSES)]
    groups = np.array([f"spk{r // 10}" for r in range(rows)])
    group_of = dict(enumerate(groups))
    model = CalibratedClassifier(SpyClassifier(), n_splits=4).fit(X, y, groups=groups)

    fold_fits, final_fit = FITS[:-1], FITS[-1]
    assert len(fold_fits) == 4
    calibration = list(PREDICTIONS)
    assert len(calibration) == 4
    predicted_rows = [row for _, predicted in calibration for row in predicted]
    assert sorted(predicted_rows) == list(range(rows))  # each row calibrated once
    for fit_rows, predicted in calibration:
        fit_speakers = {group_of[r] for r in fit_rows}
        assert fit_speakers and not fit_speakers & {group_of[r] for r in predicted}
    # A model whose fit takes groups gets those of its own rows.
    for fit_rows, fit_groups in fold_fits:
        assert fit_groups == {group_of[r] for r in fit_rows}
    # The final model is fitted on every row, after calibration.
    assert final_fit[0] == frozenset(range(rows))
    assert model.base_.rows_ == frozenset(range(rows))


def test_out_of_fold_log_probabilities_put_columns_in_class_order():
    X, y, groups = _blobs(seed=5)
    log_p, classes = out_of_fold_log_probabilities(make_classifier("logreg"), X, y, groups)
    assert list(classes) == list(CLASSES)
    assert np.allclose(np.exp(log_p).sum(axis=1), 1.0)
    # Better than chance: the columns belong to the right classes.
    assert (classes[log_p.argmax(axis=1)] == y).mean() > 0.4


def test_fitting_the_temperature_needs_groups_unless_it_is_given():
    X, y, _ = _blobs(seed=6)
    with pytest.raises(ValueError, match="groups"):
        CalibratedClassifier(make_classifier("logreg")).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 groups"):
        CalibratedClassifier(make_classifier("logreg")).fit(X, y, groups=np.zeros(len(y)))
    fixed = CalibratedClassifier(make_classifier("logreg"), temperature=2.0).fit(X, y)
    assert fixed.temperature_ == 2.0 and not hasattr(fixed, "oof_log_proba_")
    expected = temperature_scale(log_probabilities(fixed.base_, X), 2.0)
    assert np.allclose(fixed.predict_proba(X), expected)


def test_fit_calibrated_and_from_fitted():
    X, y, groups = _blobs(seed=7)
    model = fit_calibrated(lambda: make_classifier("logreg"), X, y, groups, n_splits=4)
    assert isinstance(model, CalibratedClassifier) and model.n_splits == 4
    fitted = make_classifier("logreg").fit(X, y)
    wrapped = CalibratedClassifier.from_fitted(fitted, temperature=1.0)
    assert wrapped.base_ is fitted
    assert np.allclose(wrapped.predict_proba(X), fitted.predict_proba(X))


def test_a_calibrated_pipeline_round_trips_through_skops(tmp_path):
    X, y, groups = _blobs(seed=8)
    model = CalibratedClassifier(make_classifier("logreg"), uncertain_below=0.5)
    model.fit(X, y, groups=groups)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    # The wrapper is the one emovox type in it, and the bundle allowlist names it.
    assert [t for t in untrusted if t.startswith("emovox.")] == [
        "emovox.calibration.CalibratedClassifier"]
    assert set(untrusted) <= ALLOWED_TYPES
    loaded = sio.load(path, trusted=check_skops_file(path))
    assert np.allclose(loaded.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(loaded.predict_or_uncertain(X), model.predict_or_uncertain(X))


# ------------------------------------------------------------------ the threshold
def test_coverage_accuracy_table_by_hand():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6]])
    y = ["a", "b", "a", "a"]  # right, wrong, right, wrong
    table = coverage_accuracy_table(p, y, ["a", "b"], thresholds=[0.0, 0.7, 0.85, 0.95])
    assert table["coverage"].tolist() == [1.0, 0.5, 0.25, 0.0]
    assert table["accuracy"].tolist()[:3] == [0.5, 0.5, 1.0]
    assert np.isnan(table["accuracy"].iloc[3])
    assert choose_uncertain_threshold(p, y, ["a", "b"], target_accuracy=0.6) == 0.9
    assert choose_uncertain_threshold(p, y, ["a", "b"], min_coverage=0.5) == 0.8
    assert choose_uncertain_threshold(p, y, ["a", "b"], min_coverage=1.0) == 0.6
    with pytest.raises(ValueError, match="exactly one"):
        choose_uncertain_threshold(p, y, ["a", "b"])


def test_a_higher_threshold_keeps_fewer_and_more_accurate_labels():
    rng = np.random.default_rng(9)
    z = _logits(5_000, seed=9)
    p = softmax(z, axis=1)
    y = _sample_labels(p, rng)
    table = coverage_accuracy_table(p, y, CLASSES, thresholds=[0.0, 0.5, 0.7, 0.9])
    assert table["coverage"].is_monotonic_decreasing
    assert table["accuracy"].is_monotonic_increasing
    threshold = choose_uncertain_threshold(p, y, CLASSES, target_accuracy=0.85)
    kept = p.max(axis=1) >= threshold
    assert (CLASSES[p[kept].argmax(axis=1)] == y[kept]).mean() >= 0.85
    threshold = choose_uncertain_threshold(p, y, CLASSES, min_coverage=0.3)
    assert (p.max(axis=1) >= threshold).mean() >= 0.3


# ------------------------------------------------------------------ real speakers
@pytest.mark.corpora
def test_calibration_lowers_ece_on_held_out_ravdess_actors():
    """Temperature fitted on training actors only lowers ECE on 8 unseen actors.

    RAVDESS speech (8 emotions), eGeMAPS, RBF SVM. Held out: actors 01, 04, ..., 22
    (4 male, 4 female, 480 utterances); the other 16 train the model and, in
    3 speaker folds, the temperature.
    """
    from emovox.config import load_config
    from emovox.experiment import prepare_dataset

    folder = real_corpus("ravdess/Audio_Speech_Actors_01-24")
    config = load_config(data={"name": "calibration", "corpora": [str(folder)],
                               "labels": "ravdess8", "features": "egemaps",
                               "model": "svm", "n_jobs": -1})
    dataset = prepare_dataset(config, progress=False)
    X, y = dataset.features, dataset.y
    speakers = dataset.table["speaker"].astype(str).to_numpy()
    held_out = [f"ravdess:{actor:02d}" for actor in range(1, 25, 3)]
    test = np.isin(speakers, held_out)
    train = ~test
    assert test.sum() == 480 and not set(speakers[train]) & set(held_out)

    raw = make_classifier("svm").fit(X[train], y[train])
    calibrated = CalibratedClassifier(make_classifier("svm")).fit(
        X[train], y[train], groups=speakers[train])
    # Calibration saw only training actors: its out-of-fold rows are the training rows.
    assert len(calibrated.oof_y_) == train.sum()

    before = expected_calibration_error(raw.predict_proba(X[test]), y[test], raw.classes_)
    after = expected_calibration_error(calibrated.predict_proba(X[test]), y[test],
                                       calibrated.classes_)
    # Measured: T ~ 1.3 (over-confident on unseen actors), ECE 0.146 -> 0.074.
    assert calibrated.temperature_ > 1.0
    assert after < before - 0.03, (before, after)
    # The top class, hence accuracy, is unchanged by the temperature.
    assert np.array_equal(calibrated.predict(X[test]),
                          calibrated.classes_[calibrated.base_.predict_proba(X[test])
                                              .argmax(axis=1)])
    # A threshold chosen on the out-of-fold training rows carries over: the labels kept
    # on the unseen actors are more accurate than all labels.
    threshold = choose_uncertain_threshold(calibrated.out_of_fold_proba(), calibrated.oof_y_,
                                           calibrated.classes_, target_accuracy=0.7)
    labels = calibrated.predict_or_uncertain(X[test], threshold=threshold)
    kept = labels != UNCERTAIN
    assert 0 < kept.sum() < test.sum()
    accuracy_all = (calibrated.predict(X[test]) == y[test]).mean()
    assert (labels[kept] == y[test][kept]).mean() > accuracy_all + 0.1
