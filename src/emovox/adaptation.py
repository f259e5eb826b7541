"""Adapting a speaker-normalised model to whoever is speaking, at inference.

A bundle trained with ``normalization: speaker`` expects each speaker's features to
be standardised with that speaker's statistics (see :mod:`emovox.normalization`). At
inference the statistics come from what is at hand, without any label:

========== ==========================================================================
mode       statistics used to standardise
========== ==========================================================================
``none``   the reference (the average training speaker): no adaptation
``batch``  the features being predicted together (a folder, a list of files), as
           one group, shrunk towards the reference
``stream`` running statistics of everything seen so far (a timeline, a live
           stream): each vector is standardised with the statistics of itself and
           all before it, so results do not depend on how the stream is chunked
========== ==========================================================================

:meth:`FeatureAdapter.calibrate` fixes the statistics from a calibration recording of
the speaker instead (any mode then uses them). The shrinkage towards the reference
(``prior_weight`` utterances) keeps one or two recordings from being standardised to
nothing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from emovox.errors import ConfigError
from emovox.normalization import FeatureStats, RunningStats

#: Fewest feature vectors (files, windows) of a speaker worth adapting to; with less
#: a bundle's unadapted model answers. The MAP prior then weighs at most half (its
#: weight is 8 vectors); benchmarks/adaptation.py measures where adaptation starts to
#: win: from 1 vector on an unseen corpus, from 5-8 within the training corpora.
MIN_ADAPT_VECTORS = 8

AdaptMode = Literal["none", "batch", "stream"]
ADAPT_MODES: tuple[str, ...] = ("none", "batch", "stream")


class FeatureAdapter:
    """Standardises feature vectors for a speaker-normalised model.

    Parameters
    ----------
    reference : FeatureStats
        Statistics of the average training speaker (stored in the bundle).
    prior_weight : float
        Weight of ``reference`` in utterances when combined with observed statistics.
    mode : {"none", "batch", "stream"}
        Where statistics come from when no calibration is set (module table).
    """

    def __init__(self, reference: FeatureStats, prior_weight: float,
                 mode: AdaptMode = "batch") -> None:
        if mode not in ADAPT_MODES:
            raise ConfigError(f"adaptation mode must be one of {ADAPT_MODES}, got {mode!r}")
        self.reference = reference
        self.prior_weight = float(prior_weight)
        self.mode = mode
        self.calibration: FeatureStats | None = None
        self.running = RunningStats(len(reference.mean))

    def calibrate(self, features: np.ndarray) -> FeatureStats:
        """Use the statistics of a calibration recording's feature vectors from now on.

        Parameters
        ----------
        features : np.ndarray, shape (n, dim)
            E.g. the windows of a short recording of the speaker, or a few files.
        """
        self.calibration = FeatureStats.of(np.asarray(features).reshape(len(features), -1))
        return self.calibration

    def fork(self, mode: AdaptMode | None = None) -> FeatureAdapter:
        """A copy for one stream: the same reference and calibration, its own running
        statistics (empty), so concurrent streams never share or lock state.

        Parameters
        ----------
        mode : {"none", "batch", "stream"}, optional
            Mode of the copy (default: :attr:`mode`).

        Returns
        -------
        FeatureAdapter
        """
        copy = FeatureAdapter(self.reference, self.prior_weight, mode or self.mode)
        copy.calibration = self.calibration  # replaced, never mutated: safe to share
        return copy

    def restart_stream(self) -> None:
        """Forget the running statistics only (a new stream; calibration is kept)."""
        self.running = RunningStats(len(self.reference.mean))

    def reset(self) -> None:
        """Forget the calibration and the running statistics (a new speaker)."""
        self.calibration = None
        self.running = RunningStats(len(self.reference.mean))

    def current_stats(self, features: np.ndarray, mode: str | None = None) -> FeatureStats:
        """The statistics that :meth:`transform` would use for ``features`` now
        (``mode`` overrides :attr:`mode` for this call)."""
        mode = mode or self.mode
        if self.calibration is not None:
            observed: FeatureStats | None = self.calibration
        elif mode == "batch":
            observed = FeatureStats.of(features)
        elif mode == "stream":
            self.running.update(features)
            observed = self.running.stats()
        else:
            observed = None
        if observed is None:
            return self.reference
        return observed.with_prior(self.reference, self.prior_weight)

    def evidence(self, n_rows: int, mode: str | None = None) -> np.ndarray:
        """How many vectors the statistics of each of the next ``n_rows`` rest on.

        Call before :meth:`transform`; 0 means "the reference only".
        """
        mode = mode or self.mode
        if self.calibration is not None:
            return np.full(n_rows, self.calibration.count)
        if mode == "batch":
            return np.full(n_rows, float(n_rows))
        if mode == "stream":
            return self.running.count + np.arange(1, n_rows + 1, dtype=float)
        return np.zeros(n_rows)

    def transform(self, features: np.ndarray, mode: str | None = None) -> np.ndarray:
        """Standardised copies of ``features`` (shape (n, dim)).

        In ``stream`` mode (without calibration) the rows update the running
        statistics one at a time, each standardised right after its own update.
        ``mode`` overrides :attr:`mode` for this call.
        """
        mode = mode or self.mode
        X = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if mode == "stream" and self.calibration is None:
            return np.concatenate([self.current_stats(row[None], mode).standardise(row[None])
                                   for row in X]) if len(X) else X.astype(np.float32)
        return self.current_stats(X, mode).standardise(X)
