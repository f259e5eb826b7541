"""Honest confidence: calibrated probabilities and an explicit "uncertain" answer.

A classifier is *calibrated* when, among the utterances it labels with confidence
0.8, about 80 % are right. Emotion classifiers are usually not: on speakers they were
not trained on they are right far less often than their probabilities claim, so a
user sees "angry (0.95)" for a voice the model has simply never heard. This module

- measures it: :func:`expected_calibration_error` and :func:`reliability_table`
  (the numbers behind a reliability diagram);
- fixes the scale of the probabilities with **temperature scaling** (Guo et al.,
  2017, "On calibration of modern neural networks"): one number ``T > 0`` divides the
  log-probabilities before the softmax. ``T > 1`` softens over-confident
  probabilities, ``T < 1`` sharpens under-confident ones; the ranking of the classes
  and thus the predicted label never change. ``T`` is fitted by
  :func:`fit_temperature` on **out-of-fold predictions over speaker groups** of the
  training rows (:class:`CalibratedClassifier`), so the probabilities are tuned to
  voices the model has not heard, like the ones it will meet in use;
- lets the model say ``"uncertain"`` (:meth:`CalibratedClassifier.predict_or_uncertain`)
  when its calibrated top probability is below a threshold, chosen with
  :func:`choose_uncertain_threshold` / :func:`coverage_accuracy_table`.

Choosing the threshold is a trade-off between **coverage** (the share of
utterances that get a label) and **selective accuracy** (how often the labels that
are given are right). Raising the threshold labels fewer utterances, and those it
labels are right more often. Choose it on predictions for speakers the model was
not fitted on (e.g. :meth:`CalibratedClassifier.out_of_fold_proba`), never on
training rows, where every model looks sure and right.

Example::

    from emovox.models import make_classifier
    model = CalibratedClassifier(make_classifier("logreg")).fit(X, y, groups=speakers)
    model.temperature_                 # e.g. 1.8: the raw model was over-confident
    model.uncertain_below = choose_uncertain_threshold(
        model.out_of_fold_proba(), model.oof_y_, model.classes_, target_accuracy=0.8)
    model.predict_or_uncertain(X_new)  # array(['angry', 'uncertain', 'sad'], dtype=object)

Persistence: a fitted :class:`CalibratedClassifier` around a scikit-learn pipeline
is saved by skops like any pipeline; its own type,
``emovox.calibration.CalibratedClassifier``, must then be on the bundle allowlist
(:data:`emovox.bundle_checks.ALLOWED_TYPES`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted

# The label predict_or_uncertain gives instead of a guess, shared with the engine.
from emovox.inference.rows import UNCERTAIN

__all__ = [
    "UNCERTAIN",
    "CalibratedClassifier",
    "choose_uncertain_threshold",
    "coverage_accuracy_table",
    "expected_calibration_error",
    "fit_calibrated",
    "fit_temperature",
    "log_probabilities",
    "out_of_fold_log_probabilities",
    "reliability_table",
    "temperature_scale",
]

#: Probabilities are clipped to at least this before the log (a hard 0 has log -inf).
MIN_PROBABILITY = 1e-12
#: Search range of the temperature; outside it the model is broken rather than
#: mis-calibrated (T = 20 makes any model nearly uniform).
TEMPERATURE_BOUNDS = (0.05, 20.0)


# ------------------------------------------------------------------ measuring
def _label_indices(y_true: Any, classes: Sequence[Any]) -> np.ndarray:
    """Column of each true label in ``classes``; unknown labels are an error."""
    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    order = np.argsort(classes, kind="stable")
    position = np.searchsorted(classes[order], y_true)
    position = np.clip(position, 0, len(classes) - 1)
    index = order[position]
    unknown = classes[index] != y_true
    if np.any(unknown):
        raise ValueError(
            f"labels not among the classes {list(classes)}: {sorted(set(y_true[unknown]))}")
    return index


def _check_probabilities(probabilities: Any, y_true: Any,
                         classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"probabilities must have shape (n, {len(classes)}), got {p.shape}")
    if len(p) != len(np.asarray(y_true)):
        raise ValueError(f"{len(p)} rows of probabilities but {len(y_true)} labels")
    if len(p) == 0:
        raise ValueError("no rows to measure")
    return p, _label_indices(y_true, classes)


def reliability_table(probabilities: Any, y_true: Any, classes: Sequence[Any],
                      n_bins: int = 15) -> pd.DataFrame:
    """Per-bin confidence, accuracy and count of the top label (a reliability diagram).

    Each row is put in the bin of its *confidence*, the largest predicted probability,
    with ``n_bins`` equal-width bins ``(0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]``.

    Parameters
    ----------
    probabilities : array-like, shape (n, k)
        Predicted probabilities, columns in the order of ``classes``.
    y_true : array-like, shape (n,)
        True labels (each must be in ``classes``).
    classes : sequence, length k
        Class of each column (a model's ``classes_``).
    n_bins : int
        Number of equal-width confidence bins.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``lower``, ``upper`` (bin edges), ``count`` (rows in the bin),
        ``confidence`` (their mean top probability) and ``accuracy`` (share of them
        whose top label is right); the last two are NaN for empty bins.
    """
    p, truth = _check_probabilities(probabilities, y_true, classes)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == truth
    # Right-closed bins: ceil(c * n) - 1, so c = 1.0 lands in the last bin.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy})


def expected_calibration_error(probabilities: Any, y_true: Any, classes: Sequence[Any],
                               n_bins: int = 15) -> float:
    """Top-label expected calibration error (ECE) with equal-width bins.

    .. math::

        \\mathrm{ECE} = \\sum_{b=1}^{B} \\frac{|S_b|}{n}
            \\left| \\mathrm{acc}(S_b) - \\mathrm{conf}(S_b) \\right|

    where each row goes to the bin ``S_b`` of its confidence (largest predicted
    probability) among ``B = n_bins`` equal-width bins of ``[0, 1]``,
    ``conf(S_b)`` is the mean confidence in the bin and ``acc(S_b)`` the share of its
    rows whose top label is right. 0 is perfectly calibrated; a model that always
    says 0.95 and is right 60 % of the time has ECE 0.35. With few rows per bin the
    estimate is biased upwards (noise in ``acc`` never averages out), so compare
    models on the same rows and bins.

    Parameters
    ----------
    probabilities : array-like, shape (n, k)
        Predicted probabilities, columns in the order of ``classes``.
    y_true : array-like, shape (n,)
        True labels (each must be in ``classes``).
    classes : sequence, length k
        Class of each column (a model's ``classes_``).
    n_bins : int
        Number of equal-width confidence bins (15, as in Guo et al. 2017).

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    table = reliability_table(probabilities, y_true, classes, n_bins)
    used = table[table["count"] > 0]
    gaps = (used["accuracy"] - used["confidence"]).abs()
    return float((used["count"] * gaps).sum() / used["count"].sum())


# ------------------------------------------------------------------ temperature
def log_probabilities(model: Any, X: Any) -> np.ndarray:
    """``log(model.predict_proba(X))``, clipped so a hard 0 stays finite.

    Works with any model with ``predict_proba`` (pipelines, SVMs with Platt
    probabilities, :class:`~emovox.models.neural.NeuralClassifier`): the
    log-probabilities equal the logits up to a per-row constant, which the softmax
    ignores, so temperature scaling on them is temperature scaling on the logits.
    """
    return np.log(np.clip(np.asarray(model.predict_proba(X), dtype=float),
                          MIN_PROBABILITY, None))


def temperature_scale(log_probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log_probs / temperature)`` row by row.

    Parameters
    ----------
    log_probs : array-like, shape (n, k)
        Logits or log-probabilities.
    temperature : float
        ``T > 0``; 1 returns the (normalised) input probabilities.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(np.asarray(log_probs, dtype=float) / temperature, axis=1)


def _nll(log_probs: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    scaled = log_softmax(log_probs / temperature, axis=1)
    return float(-scaled[np.arange(len(truth)), truth].mean())


def fit_temperature(log_probs: Any, y_true: Any, classes: Sequence[Any],
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature minimising the negative log-likelihood of the true labels.

    Finds ``T`` in ``bounds`` minimising

    .. math::

        \\mathrm{NLL}(T) = -\\frac{1}{n} \\sum_i \\log
            \\operatorname{softmax}(z_i / T)_{y_i}

    with ``z_i`` the logits (or log-probabilities) of row ``i``. The search runs on
    ``log T`` (bounded Brent), so halving and doubling ``T`` are equally easy to
    reach. Fit it on predictions for rows (speakers) the model was not trained on;
    on its own training rows a model looks better calibrated than it is.

    Parameters
    ----------
    log_probs : array-like, shape (n, k)
        Logits or log-probabilities (e.g. :func:`log_probabilities`).
    y_true : array-like, shape (n,)
        True labels, each in ``classes``.
    classes : sequence, length k
        Class of each column.
    bounds : (float, float)
        Smallest and largest temperature considered.

    Returns
    -------
    float
        ``T > 0``; ``> 1`` means the input was over-confident.
    """
    z = np.asarray(log_probs, dtype=float)
    z, truth = _check_probabilities(z, y_true, classes)
    if not np.all(np.isfinite(z)):
        raise ValueError("log_probs must be finite (clip probabilities before the log)")
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    result = minimize_scalar(lambda log_t: _nll(z, truth, math.exp(log_t)),
                             bounds=(math.log(low), math.log(high)), method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))


# ------------------------------------------------------------------ out-of-fold
def _accepts_groups(estimator: Any) -> bool:
    """Whether ``estimator.fit`` takes ``groups`` by name (NeuralClassifier does).

    Pipelines take ``**params`` meant for their steps, so they are not given it.
    """
    try:
        parameters = inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False
    return "groups" in parameters


def _fit(estimator: Any, X: Any, y: np.ndarray, groups: np.ndarray | None) -> Any:
    if groups is not None and _accepts_groups(estimator):
        return estimator.fit(X, y, groups=groups)
    return estimator.fit(X, y)


def _rows(X: Any, rows: np.ndarray) -> Any:
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]


def out_of_fold_log_probabilities(
    estimator: Any, X: Any, y: Any, groups: Any, n_splits: int = 3, seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of every row from a model that never saw its group.

    The rows are split into ``n_splits`` folds of whole groups (speakers) with
    :class:`sklearn.model_selection.GroupKFold`; for each fold a clone of
    ``estimator`` is fitted on the other folds and predicts this one. No group is
    ever in both the fit and the predicted part of a fold.

    Parameters
    ----------
    estimator : unfitted estimator
        Cloned for each fold (it is not fitted itself).
    X : array-like, shape (n, ...)
        Features.
    y : array-like, shape (n,)
        Labels.
    groups : array-like, shape (n,)
        Speaker (or other group) of each row; at least 2 distinct values.
    n_splits : int
        Number of folds (reduced to the number of groups when there are fewer).
    seed : int or None
        Shuffles which groups share a fold; ``None`` keeps GroupKFold's size balancing
        without shuffling.

    Returns
    -------
    log_probs : ndarray, shape (n, k)
        Row ``i`` predicted by the fold model that did not see ``groups[i]``; columns
        follow ``classes``. A class missing from a fold's training rows gets
        probability :data:`MIN_PROBABILITY` from that fold's model.
    classes : ndarray, shape (k,)
        Sorted distinct labels of ``y``.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(f"{len(groups)} groups for {len(y)} rows")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("out-of-fold calibration needs at least 2 groups (speakers)")
    classes = np.unique(y)
    splitter = (GroupKFold(n_splits=min(n_splits, n_groups)) if seed is None else
                GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed))
    log_probs = np.full((len(y), len(classes)), math.log(MIN_PROBABILITY))
    for fit_rows, calib_rows in splitter.split(np.zeros(len(y)), y, groups):
        model = _fit(clone(estimator), _rows(X, fit_rows), y[fit_rows], groups[fit_rows])
        columns = _label_indices(model.classes_, classes)
        log_probs[np.ix_(calib_rows, columns)] = log_probabilities(model,
                                                                   _rows(X, calib_rows))
    return log_probs, classes


# ------------------------------------------------------------------ the wrapper
class CalibratedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are temperature-scaled, and may say "uncertain".

    ``predict_proba(X) = softmax(log(base.predict_proba(X)) / T)``. The order of the
    classes in each row is unchanged, so :meth:`predict` is the argmax of the base
    model's ``predict_proba`` (for an SVC with ``probability=True`` this can differ
    from ``SVC.predict``, which uses the decision function).

    Parameters
    ----------
    base : estimator
        An *unfitted* model with ``fit``, ``predict_proba`` and ``classes_`` (a
        :func:`emovox.models.make_classifier` pipeline or a
        :class:`~emovox.models.neural.NeuralClassifier`); cloned, never modified.
    temperature : float or None
        ``None`` (default): fitted by :meth:`fit` on out-of-fold predictions over
        speaker groups of the training rows. A number: used as is (1 changes
        nothing).
    uncertain_below : float or None
        :meth:`predict_or_uncertain` answers :data:`UNCERTAIN` where the calibrated
        top probability is below it; ``None`` never does. Can be set after fitting.
    n_splits : int
        Speaker-group folds for the out-of-fold predictions.
    seed : int or None
        Shuffles which speakers share a fold.

    Attributes
    ----------
    base_ : estimator
        Clone of ``base`` fitted on all training rows.
    classes_ : ndarray
        The base model's classes.
    temperature_ : float
        The temperature in use.
    oof_log_proba_, oof_y_ : ndarray
        Out-of-fold log-probabilities (uncalibrated) and labels of the training rows,
        kept for choosing ``uncertain_below`` (see :meth:`out_of_fold_proba`); absent
        when ``temperature`` was given.
    """

    def __init__(self, base: Any, temperature: float | None = None,
                 uncertain_below: float | None = None, n_splits: int = 3,
                 seed: int | None = 0) -> None:
        self.base = base
        self.temperature = temperature
        self.uncertain_below = uncertain_below
        self.n_splits = n_splits
        self.seed = seed

    def fit(self, X: Any, y: Any, groups: Any | None = None) -> CalibratedClassifier:
        """Fit the temperature on out-of-fold predictions, then the base on all rows.

        The temperature comes from :func:`out_of_fold_log_probabilities` over
        ``groups`` (so each prediction it is fitted on is for a speaker the fold's
        model never heard); the final model is a fresh clone fitted on every row.
        It has seen somewhat more data than the fold models, so ``T`` is a slightly
        conservative estimate for it (the usual trade of cross-validated calibration).

        Parameters
        ----------
        X : array-like
            Training features.
        y : array-like, shape (n,)
            Labels.
        groups : array-like, shape (n,)
            Speaker of each row. Required unless ``temperature`` is given: without it
            the temperature would be fitted on rows of speakers the model trains on.
        """
        y = np.asarray(y)
        groups_arr = None if groups is None else np.asarray(groups)
        for name in ("oof_log_proba_", "oof_y_"):
            self.__dict__.pop(name, None)
        if self.temperature is None:
            if groups_arr is None:
                raise ValueError("fitting the temperature needs groups (the speaker of "
                                 "each row); or give temperature=")
            log_probs, _ = out_of_fold_log_probabilities(
                self.base, X, y, groups_arr, n_splits=self.n_splits, seed=self.seed)
            self.temperature_ = fit_temperature(log_probs, y, np.unique(y))
            self.oof_log_proba_ = log_probs
            self.oof_y_ = y.copy()
        else:
            if not self.temperature > 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature}")
            self.temperature_ = float(self.temperature)
        self.base_ = _fit(clone(self.base), X, y, groups_arr)
        self.classes_ = np.asarray(self.base_.classes_)
        return self

    @classmethod
    def from_fitted(cls, model: Any, temperature: float = 1.0,
                    uncertain_below: float | None = None) -> CalibratedClassifier:
        """Wrap an already fitted model with a known temperature (nothing is refitted).

        E.g. with ``T`` from :func:`fit_temperature` on held-out validation speakers:
        ``CalibratedClassifier.from_fitted(model, fit_temperature(
        log_probabilities(model, X_valid), y_valid, model.classes_))``.
        """
        wrapper = cls(base=clone(model), temperature=temperature,
                      uncertain_below=uncertain_below)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        wrapper.base_ = model
        wrapper.classes_ = np.asarray(model.classes_)
        wrapper.temperature_ = float(temperature)
        return wrapper

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities ``softmax(log p / T)``, columns as ``classes_``."""
        check_is_fitted(self, ["base_", "temperature_"])
        return temperature_scale(log_probabilities(self.base_, X), self.temperature_)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class (the same as the base model's top class)."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def predict_or_uncertain(self, X: Any, threshold: float | None = None) -> np.ndarray:
        """Labels, with :data:`UNCERTAIN` where the top probability is below a threshold.

        Parameters
        ----------
        X : array-like
            Features.
        threshold : float, optional
            Overrides ``uncertain_below`` for this call.

        Returns
        -------
        ndarray of object, shape (n,)
            A class of ``classes_`` or the string ``"uncertain"``.
        """
        threshold = self.uncertain_below if threshold is None else threshold
        probabilities = self.predict_proba(X)
        labels = self.classes_[probabilities.argmax(axis=1)].astype(object)
        if threshold is not None:
            labels[probabilities.max(axis=1) < threshold] = UNCERTAIN
        return labels

    def out_of_fold_proba(self) -> np.ndarray:
        """Calibrated out-of-fold probabilities of the training rows (see ``oof_y_``).

        Predictions for speakers each fold model did not hear: the right data for
        :func:`choose_uncertain_threshold` when there is no separate validation set.
        """
        check_is_fitted(self, ["oof_log_proba_"])
        return temperature_scale(self.oof_log_proba_, self.temperature_)


def fit_calibrated(make_model: Any | Callable[[], Any], X: Any, y: Any, groups: Any,
                   n_splits: int = 3, seed: int | None = 0,
                   uncertain_below: float | None = None) -> CalibratedClassifier:
    """A :class:`CalibratedClassifier` fitted with speaker-group out-of-fold calibration.

    Parameters
    ----------
    make_model : estimator or callable
        An unfitted estimator, or a function of no arguments returning one.
    X, y, groups
        Training features, labels and speaker of each row.
    n_splits, seed, uncertain_below
        As in :class:`CalibratedClassifier`.
    """
    base = make_model() if callable(make_model) and not hasattr(make_model, "fit") \
        else make_model
    return CalibratedClassifier(base, uncertain_below=uncertain_below, n_splits=n_splits,
                                seed=seed).fit(X, y, groups=groups)


# ------------------------------------------------------------------ saying "uncertain"
def coverage_accuracy_table(probabilities: Any, y_true: Any, classes: Sequence[Any],
                            thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """What each "uncertain" threshold costs (coverage) and buys (selective accuracy).

    A row is *kept* (labelled) when its top probability is ``>= threshold`` and
    answered "uncertain" otherwise.

    Parameters
    ----------
    probabilities : array-like, shape (n, k)
        Calibrated probabilities of rows the model was not fitted on.
    y_true : array-like, shape (n,)
        True labels.
    classes : sequence, length k
        Class of each column.
    thresholds : sequence of float, optional
        Default: 0 and every distinct top probability (each possible cut).

    Returns
    -------
    pandas.DataFrame
        ``threshold``, ``coverage`` (share of rows kept), ``accuracy`` (share of the
        kept rows labelled right; NaN when none is kept) and ``kept`` (count), by
        increasing threshold.
    """
    p, truth = _check_probabilities(probabilities, y_true, classes)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == truth).astype(float)
    if thresholds is None:
        thresholds = np.concatenate([[0.0], np.unique(confidence)])
    thresholds = np.sort(np.asarray(thresholds, dtype=float))
    order = np.argsort(confidence)
    sorted_conf = confidence[order]
    # Rows kept at threshold t are the suffix from the first confidence >= t.
    correct_from = np.concatenate([np.cumsum(correct[order][::-1])[::-1], [0.0]])
    start = np.searchsorted(sorted_conf, thresholds, side="left")
    kept = len(p) - start
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(kept > 0, correct_from[start] / kept, np.nan)
    return pd.DataFrame({"threshold": thresholds, "coverage": kept / len(p),
                         "accuracy": accuracy, "kept": kept})


def choose_uncertain_threshold(probabilities: Any, y_true: Any, classes: Sequence[Any],
                               target_accuracy: float | None = None,
                               min_coverage: float | None = None) -> float:
    """A value for ``uncertain_below``: by target accuracy or by minimum coverage.

    Give exactly one of

    - ``target_accuracy``: the **lowest** threshold whose kept rows are right at least
      this often (the most labels at that accuracy). If no threshold reaches it, the
      threshold with the best selective accuracy is returned (ties: the lowest);
    - ``min_coverage``: the **highest** threshold that still labels at least this
      share of the rows (the most accurate labels at that coverage).

    The result is only as good as the rows it is chosen on: use calibrated
    probabilities for speakers the model was not fitted on (see
    :meth:`CalibratedClassifier.out_of_fold_proba`), and check it on others. With
    few rows, a high target accuracy may be met by chance by a handful of kept rows.

    Parameters
    ----------
    probabilities : array-like, shape (n, k)
        Calibrated probabilities.
    y_true : array-like, shape (n,)
        True labels.
    classes : sequence, length k
        Class of each column.
    target_accuracy, min_coverage : float, optional
        In ``(0, 1]``.

    Returns
    -------
    float
        Threshold on the top probability (0 labels everything).
    """
    if (target_accuracy is None) == (min_coverage is None):
        raise ValueError("give exactly one of target_accuracy and min_coverage")
    table = coverage_accuracy_table(probabilities, y_true, classes)
    if target_accuracy is not None:
        if not 0 < target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
        reached = table[table["accuracy"] >= target_accuracy]
        if len(reached):
            return float(reached["threshold"].iloc[0])
        return float(table.loc[table["accuracy"].idxmax(), "threshold"])
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    enough = table[table["coverage"] >= min_coverage - 1e-12]
    return float(enough["threshold"].iloc[-1])
