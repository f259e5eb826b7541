"""Metrics of a classification run: WA, UAR, macro-F1, per-class scores, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)

SCORES: tuple[str, ...] = ("uar", "wa", "macro_f1")
SCORE_NAMES = {"uar": "UAR", "wa": "WA", "macro_f1": "macro-F1"}


@dataclass
class FoldResult:
    """True and predicted labels of one fold, with its scores."""

    name: str
    y_true: np.ndarray
    y_pred: np.ndarray
    classes: list[str]
    scores: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.scores = compute_scores(self.y_true, self.y_pred, self.classes)


def compute_scores(y_true: Sequence, y_pred: Sequence, classes: Sequence[str]) -> dict[str, float]:
    """WA (accuracy), UAR (macro recall) and macro-F1 over the classes present in ``y_true``.

    Classes absent from a fold's test set are left out of its UAR and F1, so a
    speaker without some emotion does not count as a zero recall.
    """
    present = [c for c in classes if c in set(np.asarray(y_true))]
    return {
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro",
                                  zero_division=0)),
        "wa": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                   zero_division=0)),
    }


def per_class_table(y_true: Sequence, y_pred: Sequence, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (pooled over whatever is passed)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(classes), zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(list(classes), name="class"),
    )


def pooled_confusion(folds: Sequence[FoldResult], classes: Sequence[str]) -> np.ndarray:
    """Confusion matrix summed over folds (rows: true class, columns: predicted)."""
    total = np.zeros((len(classes), len(classes)), dtype=int)
    for fold in folds:
        total += confusion_matrix(fold.y_true, fold.y_pred, labels=list(classes))
    return total


def summarise(folds: Sequence[FoldResult]) -> pd.DataFrame:
    """Per-fold scores plus ``mean`` and ``std`` rows (std over folds, ddof=0)."""
    per_fold = pd.DataFrame(
        [{"fold": f.name, "n_test": len(f.y_true), **f.scores} for f in folds]
    ).set_index("fold")
    mean = per_fold[list(SCORES)].mean()
    std = per_fold[list(SCORES)].std(ddof=0) if len(folds) > 1 else mean * 0
    summary = pd.concat(
        [per_fold, pd.DataFrame([mean, std], index=["mean", "std"])], axis=0
    )
    summary.index.name = "fold"
    return summary


def mean_std(summary: pd.DataFrame, score: str) -> str:
    """``"0.587 ± 0.043"`` for one score of a :func:`summarise` table."""
    return f"{summary.loc['mean', score]:.3f} ± {summary.loc['std', score]:.3f}"
