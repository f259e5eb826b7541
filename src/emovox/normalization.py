"""Feature normalisation by speaker, session or corpus: an explicit, reported adaptation.

Features of one group (a speaker, a recording session, a corpus) are standardised with
that group's own mean and standard deviation, which removes much of what differs
between voices, microphones and corpora. The statistics use **no labels**, only the
group's unlabelled features, so a result with it answers "given some speech of this
speaker (or channel)", and is reported as such.

Few utterances give noisy statistics (one utterance would be standardised to zero),
so a group's statistics are a MAP estimate: they are combined with *reference*
statistics (the average training speaker) as if the reference had been seen
``prior_weight`` times. With ``n`` utterances the group's own mean gets weight
``n / (n + prior_weight)``; a large group is standardised by its own statistics, an
empty one by the reference (the unadapted case).

The same statistics come from three places at inference:

- a batch or folder (:func:`standardise_by_group`, or :class:`FeatureStats` of it),
- a stream (:class:`RunningStats`, updated window by window),
- a short calibration recording of the speaker (its windows' :class:`FeatureStats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCOPES = ("none", "speaker", "session", "corpus")

#: Default weight of the reference statistics, in utterances.
DEFAULT_PRIOR_WEIGHT = 8.0

_EPSILON = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    """Mean and variance of a group's feature vectors, and how many vectors they saw.

    Parameters
    ----------
    count : float
        Number of vectors (may be fractional after a MAP combination).
    mean, var : np.ndarray, shape (dim,)
    """

    count: float
    mean: np.ndarray
    var: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        """Statistics of the rows of ``features`` (shape (n, dim))."""
        X = np.asarray(features, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"need a non-empty (n, dim) array, got shape {X.shape}")
        return cls(float(len(X)), X.mean(axis=0), X.var(axis=0))

    @classmethod
    def average(cls, stats: Sequence[FeatureStats]) -> FeatureStats:
        """The average group: mean of the groups' means and of their variances.

        Used as the reference (prior) statistics: what a typical training speaker's
        features look like. ``count`` is the number of groups.
        """
        if not stats:
            raise ValueError("no statistics to average")
        return cls(float(len(stats)), np.mean([s.mean for s in stats], axis=0),
                   np.mean([s.var for s in stats], axis=0))

    def merged(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of the two groups of vectors (Chan et al.'s pairwise
        update): partial statistics of parts of a group combine exactly."""
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        var = (self.count * self.var + other.count * other.var
               + delta**2 * (self.count * other.count / n)) / n
        return FeatureStats(n, mean, var)

    def with_prior(self, prior: FeatureStats, prior_weight: float) -> FeatureStats:
        """MAP combination with reference statistics seen ``prior_weight`` times.

        The variance is that of the pooled mixture (each part's variance plus its
        squared distance to the pooled mean), so a group whose mean differs from
        the reference does not get an inflated spread.
        """
        if prior_weight <= 0:
            return self
        n, k = self.count, float(prior_weight)
        mean = (n * self.mean + k * prior.mean) / (n + k)
        var = (n * (self.var + (self.mean - mean) ** 2)
               + k * (prior.var + (prior.mean - mean) ** 2)) / (n + k)
        return FeatureStats(n + k, mean, var)

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """Z-score ``features`` (shape (n, dim) or (dim,)) with these statistics."""
        X = np.asarray(features, dtype=np.float64)
        return ((X - self.mean) / np.sqrt(self.var + _EPSILON)).astype(np.float32)


class RunningStats:
    """Mean and variance of a stream of feature vectors, updated one vector at a time.

    Welford's algorithm: numerically stable, and after ``n`` updates exactly the
    statistics of those ``n`` vectors (what :meth:`FeatureStats.of` gives for the
    batch), so a stream converges to its batch statistics.

    Parameters
    ----------
    dim : int
        Length of each feature vector.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self._mean = np.zeros(dim, dtype=np.float64)
        self._m2 = np.zeros(dim, dtype=np.float64)

    def update(self, features: np.ndarray) -> RunningStats:
        """Add one vector (shape (dim,)) or several (shape (n, dim)); returns self."""
        for x in np.atleast_2d(np.asarray(features, dtype=np.float64)):
            self.count += 1
            delta = x - self._mean
            self._mean += delta / self.count
            self._m2 += delta * (x - self._mean)
        return self

    def stats(self) -> FeatureStats:
        """The statistics so far (population variance, like :meth:`FeatureStats.of`)."""
        if self.count == 0:
            raise ValueError("no vectors seen yet")
        return FeatureStats(float(self.count), self._mean.copy(), self._m2 / self.count)


def group_stats(features: np.ndarray, groups: np.ndarray) -> dict[str, FeatureStats]:
    """Statistics of each group's rows (labels are never involved)."""
    groups = np.asarray(groups).astype(str)
    return {g: FeatureStats.of(features[groups == g]) for g in np.unique(groups)}


def reference_stats(features: np.ndarray, groups: np.ndarray) -> FeatureStats:
    """The average group's statistics (e.g. the average training speaker): the prior
    small groups are shrunk towards, and what an unadapted recording is standardised by."""
    return FeatureStats.average(list(group_stats(features, groups).values()))


def standardise_by_group(features: np.ndarray, groups: np.ndarray,
                         prior: FeatureStats | None = None,
                         prior_weight: float = DEFAULT_PRIOR_WEIGHT) -> np.ndarray:
    """Z-score each row with the statistics of the rows of its group.

    Parameters
    ----------
    features : np.ndarray, shape (n, dim)
    groups : np.ndarray, shape (n,)
        Group id of each row (speaker, session or corpus).
    prior : FeatureStats, optional
        Reference statistics to shrink small groups towards (see the module notes);
        without it each group uses its own statistics only.
    prior_weight : float
        Weight of ``prior`` in vectors.

    Returns
    -------
    np.ndarray, float32, shape (n, dim)
    """
    features = np.asarray(features, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    out = np.empty(features.shape, dtype=np.float32)
    for group, stats in group_stats(features, groups).items():
        if prior is not None:
            stats = stats.with_prior(prior, prior_weight)
        rows = groups == group
        out[rows] = stats.standardise(features[rows])
    return out


def describe_scope(scope: str) -> str:
    """Sentence for reports and model cards."""
    return {
        "none": "none (scaling fitted on training data only)",
        "speaker": "per-speaker standardisation (each test speaker's unlabelled features "
                   "are pooled to compute their statistics)",
        "session": "per-session standardisation (each test recording session's unlabelled "
                   "features are pooled to compute their statistics)",
        "corpus": "per-corpus standardisation (each test corpus's unlabelled features are "
                  "pooled to compute their statistics)",
    }[scope]
