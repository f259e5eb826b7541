"""The soft-target fit of the distilled students (benchmarks/accuracy.py, issue 13)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from emovox.models import make_classifier

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def accuracy():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("accuracy")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three overlapping, unequally frequent classes and unequal row weights."""
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(["a", "b", "c"]), size=300, p=[0.5, 0.3, 0.2])
    X = rng.normal(size=(300, 5)) + 0.8 * (y[:, None] == np.array(["a", "b", "c", "a", "b"]))
    return X * [1, 2, 3, 4, 5], y, rng.uniform(0.5, 2.0, size=300)


def test_one_hot_targets_give_the_labels_class_balanced_weighted_fit(accuracy):
    X, y, weight = _data()
    onehot = (y[:, None] == np.unique(y)).astype(float)
    soft = accuracy.fit_soft_targets(X, y, onehot, weight, C=1.0)
    hard = make_classifier("logreg", {"C": 1.0}).fit(X, y, classifier__sample_weight=weight)
    np.testing.assert_allclose(soft.predict_proba(X), hard.predict_proba(X), atol=1e-4)
    assert list(soft.classes_) == ["a", "b", "c"]


def test_soft_targets_minimise_the_weighted_cross_entropy_and_pull_towards_them(accuracy):
    X, y, weight = _data(1)
    classes = np.unique(y)
    onehot = (y[:, None] == classes).astype(float)
    teacher = np.tile([0.2, 0.2, 0.6], (len(y), 1))  # a teacher favouring class "c"
    targets = 0.5 * teacher + 0.5 * onehot
    C = 1.0
    model = accuracy.fit_soft_targets(X, y, targets, weight, C=C)
    # Zero gradient (to L-BFGS's tolerance) of sum_i w_i * CE(targets_i, p_i) + |W|^2 / 2C
    # per unit of weight, w_i being the row's sample weight times the balanced weight of
    # its label: the soft targets' cross-entropy is what was minimised.
    counts = np.array([weight[y == c].sum() for c in classes])
    w = weight * (weight.sum() / (len(classes) * counts))[np.searchsorted(classes, y)]
    scaled = model.named_steps["scale"].transform(X)
    lr = model.named_steps["classifier"]
    residual = w[:, None] * (model.predict_proba(X) - targets) / w.sum()
    np.testing.assert_allclose(residual.T @ scaled + lr.coef_ / (C * w.sum()), 0, atol=1e-4)
    np.testing.assert_allclose(residual.sum(axis=0), 0, atol=1e-4)
    # Probabilities move from the labels' fit towards the targets.
    hard = accuracy.fit_soft_targets(X, y, onehot, weight, C=C).predict_proba(X)
    proba = model.predict_proba(X)
    assert proba[:, 2].mean() > hard[:, 2].mean() + 0.05
    assert np.abs(proba - targets).sum() < np.abs(hard - targets).sum()
    with pytest.raises(ValueError, match="targets of shape"):
        accuracy.fit_soft_targets(X, y, targets[:, :2], weight)
