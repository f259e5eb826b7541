"""Feature normalisation by group (speaker or corpus), an explicit and reported option.

Each group's features are standardised with that group's own mean and standard
deviation. It uses no labels, but it does use a test speaker's unlabelled features
together, so results with it answer "given a batch of this speaker's speech", and
are reported as such.
"""

from __future__ import annotations

import numpy as np

SCOPES = ("none", "speaker", "corpus")


def standardise_by_group(features: np.ndarray, groups: np.ndarray,
                         epsilon: float = 1e-8) -> np.ndarray:
    """Z-score each row with the mean and std of the rows of its group.

    Parameters
    ----------
    features : np.ndarray, shape (n, dim)
    groups : np.ndarray, shape (n,)
        Group id of each row (speaker or corpus).
    """
    features = np.asarray(features, dtype=np.float64)
    out = np.empty_like(features)
    for group in np.unique(groups):
        rows = groups == group
        block = features[rows]
        out[rows] = (block - block.mean(axis=0)) / (block.std(axis=0) + epsilon)
    return out.astype(np.float32)


def describe_scope(scope: str) -> str:
    """Sentence for reports and model cards."""
    return {
        "none": "none (scaling fitted on training data only)",
        "speaker": "per-speaker standardisation (each test speaker's unlabelled features "
                   "are pooled to compute their statistics)",
        "corpus": "per-corpus standardisation (each test corpus's unlabelled features are "
                  "pooled to compute their statistics)",
    }[scope]
