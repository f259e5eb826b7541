"""Speaker adaptation for ONNX exports of speaker-normalised bundles.

The exported graph answers one recording with the bundle's unadapted model, and also
outputs the pooled encoder features it computed. ``adaptation.npz`` beside it holds
what the native :class:`~emovox.recognizer.Recognizer` uses to adapt: the average
training speaker's statistics, their prior weight, and the normalised model's linear
head (scaler, coefficients and temperature folded together). With these, the ONNX
backend gives the engine (:mod:`emovox.inference.engine`) what a native bundle does:
the engine standardises the features with the speaker's statistics, applies this head
in NumPy, and falls back to the graph's unadapted probabilities below the same
evidence threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emovox.adaptation import MIN_ADAPT_VECTORS
from emovox.normalization import FeatureStats

ADAPTATION_FILE = "adaptation.npz"
#: The graph's own (unadapted) linear head, for features pooled outside the graph.
LINEAR_HEAD_FILE = "head.npz"


def write_adaptation(folder: Path, folded: tuple[np.ndarray, ...], order: list[int],
                     reference: FeatureStats, prior_weight: float) -> dict[str, Any]:
    """Write ``adaptation.npz`` and return its description for ``preprocessing.json``.

    Parameters
    ----------
    folder : Path
        The export folder being written.
    folded : tuple of np.ndarray
        ``(mean, scale, coef, intercept)`` of the normalised model's linear head,
        temperature included (``export._fold_linear``).
    order : list of int
        Column of each exported class in the head's output.
    reference : FeatureStats
        The average training speaker's statistics.
    prior_weight : float
        Their weight, in recordings, in a speaker's statistics.
    """
    mean, scale, coef, intercept = folded
    np.savez(folder / ADAPTATION_FILE, reference_count=reference.count,
             reference_mean=reference.mean, reference_var=reference.var,
             prior_weight=float(prior_weight), head_mean=mean, head_scale=scale,
             head_coef=coef, head_intercept=intercept, order=np.asarray(order))
    return {"file": ADAPTATION_FILE, "min_vectors": MIN_ADAPT_VECTORS,
            "description": "batch adaptation: the graph's 'features' output of the files "
                           "predicted together is standardised with their statistics, "
                           "shrunk towards reference_mean/var by prior_weight recordings, "
                           "then softmax(((x - head_mean) / head_scale) @ head_coef.T + "
                           "head_intercept)[:, order]; fewer than min_vectors files keep "
                           "the graph's probabilities"}


def write_linear_head(path: Path, folded: tuple[np.ndarray, ...], order: list[int]
                      ) -> dict[str, Any]:
    """Write a folded linear head (``export._fold_linear``) and describe it for
    ``preprocessing.json``.

    Parameters
    ----------
    path : Path
        The ``.npz`` file to write.
    folded : tuple of np.ndarray
        ``(mean, scale, coef, intercept)``, temperature included.
    order : list of int
        Column of each exported class in the head's output.
    """
    mean, scale, coef, intercept = folded
    np.savez(path, mean=mean, scale=scale, coef=coef, intercept=intercept,
             order=np.asarray(order))
    return {"file": path.name,
            "description": "softmax(((x - mean) / scale) @ coef.T + intercept)[:, order] "
                           "(sigmoid for two classes): the probabilities output of the "
                           "graph, for features pooled outside it"}


@dataclass
class LinearHead:
    """A folded linear head read from an export (see :func:`write_linear_head`)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    order: np.ndarray

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        """Read and check a head file (every fault is a ``ValueError``)."""
        with np.load(path, allow_pickle=False) as data:
            head = cls(*(np.asarray(data[k], np.float64) for k in
                         ("mean", "scale", "coef", "intercept")),
                       np.asarray(data["order"], dtype=int))
        dim = head.mean.shape
        if (head.scale.shape != dim or head.coef.ndim != 2 or head.coef.shape[1:] != dim
                or head.intercept.shape != head.coef.shape[:1]
                or not all(np.all(np.isfinite(a)) for a in (head.mean, head.scale,
                                                             head.coef, head.intercept))
                or np.any(head.scale == 0)
                or sorted(head.order.tolist()) != list(range(max(2, head.coef.shape[0])))):
            raise ValueError("inconsistent or non-finite head arrays")
        return head

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of features ``X`` (shape (n, dim); standardised ones for an
        :class:`AdaptedHead`), columns in the exported class order."""
        return linear_head_probabilities(X, self.mean, self.scale, self.coef,
                                         self.intercept)[:, self.order]


def linear_head_probabilities(X: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                              coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Probabilities of a standard scaler + logistic regression, in the model's class order.

    Parameters
    ----------
    X : np.ndarray, shape (n, dim)
    mean, scale : np.ndarray, shape (dim,)
        The scaler.
    coef : np.ndarray, shape (n_classes, dim), or (1, dim) for two classes
    intercept : np.ndarray, shape (n_classes,) or (1,)

    Returns
    -------
    np.ndarray, shape (n, n_classes)
        Softmax of the logits (sigmoid for two classes).
    """
    logits = ((np.asarray(X, dtype=np.float64) - mean) / scale) @ coef.T + intercept
    if logits.shape[1] == 1:  # binary logistic regression
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


@dataclass
class AdaptedHead(LinearHead):
    """The normalised model of an export (a :class:`LinearHead` applied to standardised
    features) and its reference statistics, in NumPy.

    The adaptation itself (statistics, the fallback below ``min_vectors``) is the
    engine's (:class:`emovox.inference.engine.Engine`), as for native models.
    """

    reference: FeatureStats
    prior_weight: float

    @classmethod
    def load(cls, folder: Path) -> AdaptedHead:  # type: ignore[override]
        """Read ``adaptation.npz`` of an export folder."""
        with np.load(folder / ADAPTATION_FILE, allow_pickle=False) as data:
            reference = FeatureStats(float(data["reference_count"]), data["reference_mean"],
                                     data["reference_var"])
            return cls(mean=data["head_mean"], scale=data["head_scale"],
                       coef=data["head_coef"], intercept=data["head_intercept"],
                       order=data["order"], reference=reference,
                       prior_weight=float(data["prior_weight"]))
