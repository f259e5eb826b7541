"""Probabilities to result rows: the one place the answer and the "uncertain" rule live."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The label given instead of a guess when a calibrated model is not sure enough.
UNCERTAIN = "uncertain"
#: Index levels of every result table.
INDEX_NAMES = ("file", "start", "end")


def result_rows(proba: np.ndarray, classes: Sequence[str], index: pd.MultiIndex,
                uncertain_below: float | None = None) -> pd.DataFrame:
    """A result table: ``emotion``, ``confidence`` and one probability per class.

    Parameters
    ----------
    proba : np.ndarray, shape (n, len(classes))
        Class probabilities, columns in the order of ``classes``.
    classes : sequence of str
        Class names.
    index : pandas.MultiIndex
        ``(file, start, end)`` of each row.
    uncertain_below : float, optional
        A calibrated model's threshold: rows whose top probability is below it are
        answered :data:`UNCERTAIN` (their probabilities are kept).

    Returns
    -------
    pandas.DataFrame
    """
    proba = np.asarray(proba, dtype=np.float64).reshape(len(index), len(classes))
    frame = pd.DataFrame(proba, index=index, columns=list(classes))
    confidence = proba.max(axis=1) if len(proba) else np.zeros(0)
    frame.insert(0, "confidence", confidence)
    labels = np.asarray(list(classes), dtype=object)[proba.argmax(axis=1)] if len(proba) \
        else np.zeros(0, dtype=object)
    if uncertain_below is not None:
        labels[confidence < uncertain_below] = UNCERTAIN
    frame.insert(0, "emotion", labels)
    return frame


def empty_rows(classes: Sequence[str]) -> pd.DataFrame:
    """A result table with no rows (every column present)."""
    index = pd.MultiIndex.from_tuples([], names=list(INDEX_NAMES))
    return pd.DataFrame(columns=["emotion", "confidence", *classes], index=index)


def column_order(model_classes: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Column of each of ``classes`` in probabilities ordered as ``model_classes``."""
    position = {str(c): i for i, c in enumerate(model_classes)}
    return [position[str(c)] for c in classes]
