import numpy as np
import pytest

from emovox.evaluation import (
    FoldResult,
    compute_scores,
    per_class_table,
    pooled_confusion,
    summarise,
)
from emovox.normalization import standardise_by_group

CLASSES = ["angry", "happy", "sad"]


def test_uar_differs_from_wa_on_imbalanced_data():
    y_true = ["angry"] * 8 + ["sad"] * 2
    y_pred = ["angry"] * 10
    scores = compute_scores(y_true, y_pred, CLASSES)
    assert scores["wa"] == pytest.approx(0.8)
    assert scores["uar"] == pytest.approx(0.5)  # happy is absent from y_true: not counted
    assert 0 < scores["macro_f1"] < scores["uar"]


def test_summary_mean_and_std_over_folds():
    folds = [FoldResult("a", np.array(["angry", "sad"]), np.array(["angry", "sad"]), CLASSES),
             FoldResult("b", np.array(["angry", "sad"]), np.array(["sad", "sad"]), CLASSES)]
    summary = summarise(folds)
    assert summary.loc["a", "uar"] == 1.0 and summary.loc["b", "uar"] == 0.5
    assert summary.loc["mean", "uar"] == pytest.approx(0.75)
    assert summary.loc["std", "uar"] == pytest.approx(0.25)
    matrix = pooled_confusion(folds, CLASSES)
    assert matrix.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]


def test_per_class_table():
    table = per_class_table(["angry", "angry", "sad"], ["angry", "sad", "sad"], CLASSES)
    assert table.loc["angry", "recall"] == 0.5
    assert table.loc["sad", "precision"] == 0.5
    assert table.loc["happy", "support"] == 0


def test_standardise_by_group_uses_each_groups_own_statistics():
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(5, 2, (50, 3)), rng.normal(-3, 0.5, (40, 3))])
    groups = np.array(["a"] * 50 + ["b"] * 40)
    out = standardise_by_group(features, groups)
    for g in "ab":
        assert np.allclose(out[groups == g].mean(axis=0), 0, atol=1e-5)
        assert np.allclose(out[groups == g].std(axis=0), 1, atol=1e-3)
