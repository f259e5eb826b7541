"""The native backend: a bundle's feature extractor (PyTorch, librosa, openSMILE) and its
scikit-learn or PyTorch classifier."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from emovox.inference.engine import Backend, Encoded, flat
from emovox.inference.rows import column_order
from emovox.normalization import DEFAULT_PRIOR_WEIGHT

if TYPE_CHECKING:
    from emovox.bundle import Bundle


class TorchBackend(Backend):
    """A loaded :class:`~emovox.bundle.Bundle` run natively.

    Parameters
    ----------
    bundle : Bundle
        The model.
    n_jobs : int
        Processes for multi-file feature extraction (-1: all cores; a handful of files
        is extracted in this process).
    """

    name = "torch"

    def __init__(self, bundle: Bundle, n_jobs: int = -1) -> None:
        self.bundle = bundle
        self.extractor = bundle.extractor()
        self.n_jobs = n_jobs
        self.sample_rate = int(self.extractor.sample_rate)
        self.classes = list(bundle.classes)
        self.labels = bundle.labels
        self.uncertain_below = getattr(bundle.model, "uncertain_below", None)
        normalised = bundle.normalization == "speaker" and bundle.reference is not None
        self.reference = bundle.reference if normalised else None
        self.prior_weight = float(bundle.preprocessing.get("prior_weight",
                                                           DEFAULT_PRIOR_WEIGHT))
        #: The model that needs no adaptation (None: a normalised bundle without one).
        self._plain = bundle.unadapted_model if normalised else bundle.model
        inner = getattr(self.extractor, "inner", self.extractor)
        self.max_seconds = float(getattr(inner, "max_seconds", None) or math.inf)
        if getattr(inner, "duration", None) is not None:
            self.max_seconds = min(self.max_seconds, float(inner.duration))
        self.frame_seconds = self.extractor.frame_seconds

    def _ordered(self, model: object, X: np.ndarray) -> np.ndarray:
        proba = model.predict_proba(X)  # type: ignore[attr-defined]
        order = column_order(list(model.classes_), self.classes)  # type: ignore[attr-defined]
        return np.asarray(proba, dtype=np.float64)[:, order]

    def _encoded(self, features: np.ndarray, usable: np.ndarray) -> Encoded:
        X = flat(features)
        plain = None
        if self._plain is not None:
            plain = self._ordered(self._plain, X) if len(X) else np.zeros((0, len(self.classes)))
        return Encoded(features=X, plain=plain, usable=usable)

    def encode(self, signals: Sequence[np.ndarray], sample_rate: int) -> Encoded:
        """Features of in-memory signals (equal-length ones in one encoder batch)."""
        features, usable = self.extractor.extract_signals(list(signals), sample_rate)
        return self._encoded(features, usable)

    def encode_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                      ) -> tuple[list[np.ndarray], np.ndarray]:
        """The extractor's frame-level features (see :meth:`Backend.encode_frames`)."""
        return self.extractor.extract_frames(list(signals), sample_rate)

    def encode_pooled(self, features: np.ndarray) -> Encoded:
        """Rows of pooled features, with the plain model's probabilities."""
        features = flat(features)
        return self._encoded(features, np.ones(len(features), bool))

    def encode_files(self, paths: Sequence[str], progress: bool = False
                     ) -> tuple[Encoded, list[tuple[str, str]]]:
        """Features of files, in worker processes when there are many."""
        from emovox.features import extract_many

        result = extract_many(list(paths), self.extractor, cache_dir=None,
                              n_jobs=self.n_jobs, progress=progress)
        return self._encoded(result.features, np.asarray(result.ok, bool)), list(
            result.failures)

    def adapted(self, standardised: np.ndarray) -> np.ndarray:
        """The speaker-normalised model's probabilities."""
        return self._ordered(self.bundle.model, standardised)
