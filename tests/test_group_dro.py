"""Group-robust logistic regression (``group_dro``): the worst group gains, the plain
objective is scikit-learn's, and training passes the speakers as groups."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from emovox.config import load_config
from emovox.corpora.base import corpus_of
from emovox.experiment import balance_weights, fit_model
from emovox.models.robust import GroupDROLogisticRegression


def _two_groups(seed: int, n_major: int = 900, n_minor: int = 100):
    """Corpus "big" labels by x0, corpus "small" (a tenth of the rows) by x1: one linear
    boundary cannot serve both, and the pooled fit follows the majority."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_major + n_minor, 4))
    y = np.where(X[:, 0] > 0, "a", "b")
    y[n_major:] = np.where(X[n_major:, 1] > 0, "a", "b")
    speakers = np.array([f"big:{i % 9}" for i in range(n_major)]
                        + [f"small:{i % 3}" for i in range(n_minor)])
    return X, y, speakers


def _worst_group_accuracy(model, X, y, speakers) -> float:
    corpora = corpus_of(speakers)
    return min(float(np.mean(model.predict(X[corpora == c]) == y[corpora == c]))
               for c in np.unique(corpora))


def test_group_dro_raises_the_worst_group_accuracy_over_the_plain_fit():
    X, y, speakers = _two_groups(0)
    X_test, y_test, speakers_test = _two_groups(1)
    plain = GroupDROLogisticRegression(C=1.0, temperature=None).fit(X, y, groups=speakers)
    robust = GroupDROLogisticRegression(C=1.0, temperature=0.05).fit(X, y, groups=speakers)
    worst_plain = _worst_group_accuracy(plain, X_test, y_test, speakers_test)
    worst_robust = _worst_group_accuracy(robust, X_test, y_test, speakers_test)
    assert worst_robust > worst_plain + 0.1
    # The adversary puts most of its weight on the small corpus.
    assert list(robust.groups_) == ["big", "small"]
    assert robust.group_weights_[1] > 0.3 > plain.group_weights_[1]
    assert robust.group_weights_.sum() == pytest.approx(1.0)


def test_without_temperature_it_is_sklearns_weighted_logistic_regression():
    # Three classes: scikit-learn fits two with a single weight vector (another penalty).
    X, y, speakers = _two_groups(2, n_major=300, n_minor=60)
    y[X[:, 2] > 0.8] = "c"
    weights = balance_weights(y, speakers, "corpus")
    ours = GroupDROLogisticRegression(C=0.05, temperature=None, tol=1e-9).fit(
        X, y, sample_weight=weights, groups=speakers)
    theirs = LogisticRegression(C=0.05, class_weight="balanced", tol=1e-10,
                                max_iter=5000).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-4)


def test_training_gives_the_model_the_speakers_grouped_by_corpus_or_speaker():
    X, y, speakers = _two_groups(3, n_major=90, n_minor=30)
    for group_by, expected in (("corpus", ["big", "small"]),
                               ("speaker", sorted(set(speakers)))):
        config = load_config(data={
            "name": "t", "corpora": ["/x"], "features": "egemaps", "model": {
                "name": "group_dro", "C": 0.1, "group_by": group_by, "balance": "corpus"}})
        model = fit_model(config, X, y, speakers)
        assert list(model.named_steps["classifier"].groups_) == expected
        assert model.predict_proba(X).shape == (len(y), 2)
