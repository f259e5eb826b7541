"""The engine: analysed signals -> features -> probabilities -> result rows.

Every front (:class:`~emovox.recognizer.Recognizer` for files, folders and signals,
timelines, live streams, the HTTP server and the CLI) goes through one
:class:`Engine`; a model runtime (:class:`Backend`: PyTorch + scikit-learn, ONNX
Runtime) only turns signals into features and probabilities. The rules that decide an
answer are written here once:

- **adaptation and its fallback**: a speaker-normalised model standardises features
  with the statistics of an explicit :class:`~emovox.adaptation.FeatureAdapter` (a
  per-call fork: a batch, a timeline or a stream owns its own; nothing is switched on
  a shared object), and rows whose statistics rest on fewer than
  :data:`~emovox.adaptation.MIN_ADAPT_VECTORS` vectors are answered by the bundle's
  unadapted model;
- **the answer and "uncertain"**: :func:`emovox.inference.rows.result_rows`;
- **calibration** applies only with enough of the speaker.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from emovox.adaptation import MIN_ADAPT_VECTORS, AdaptMode, FeatureAdapter
from emovox.errors import ConfigError
from emovox.inference.rows import empty_rows, result_rows
from emovox.normalization import FeatureStats

#: Adaptation choices of a front: ``auto`` is batch for files, stream for timelines.
ADAPT_CHOICES = ("auto", "none", "batch", "stream")


def flat(features: np.ndarray) -> np.ndarray:
    """Feature arrays of shape (n, ...) as rows of shape (n, dim), empty ones included."""
    features = np.asarray(features)
    return features.reshape(features.shape[0], int(np.prod(features.shape[1:], dtype=int)))


@dataclass
class Encoded:
    """What a backend computed for a list of signals.

    Attributes
    ----------
    features : np.ndarray, shape (n_usable, dim)
        Pooled features of the usable signals (the input of adaptation).
    plain : np.ndarray, shape (n_usable, n_classes), or None
        Probabilities of the model that needs no adaptation (the bundle's only model,
        or the unadapted fallback of a speaker-normalised one), columns in
        :attr:`Backend.classes` order; None when there is no such model.
    usable : np.ndarray of bool, shape (n,)
        Which signals have features (the others were silent or too short).
    """

    features: np.ndarray
    plain: np.ndarray | None
    usable: np.ndarray

    def take(self, rows: Sequence[int] | np.ndarray) -> Encoded:
        """The usable rows ``rows`` (positions among the usable ones) as their own batch."""
        rows = np.asarray(rows, dtype=int)
        return Encoded(self.features[rows], None if self.plain is None else self.plain[rows],
                       np.ones(len(rows), bool))


class Backend(ABC):
    """A model runtime: signals in, features and probabilities out.

    Attributes
    ----------
    name : str
        ``"torch"`` or ``"onnx"``.
    sample_rate : int
        Rate the model analyses, in Hz (signals may come at any rate).
    classes : list of str
        Class names, the column order of every probability array it returns.
    labels : LabelSet
        How corpus emotions map to the classes.
    uncertain_below : float or None
        A calibrated model's "uncertain" threshold.
    reference : FeatureStats or None
        The average training speaker of a speaker-normalised model (None: the model
        needs no adaptation).
    prior_weight : float
        Weight of ``reference``, in vectors, in a speaker's statistics.
    max_seconds : float
        Longest analysed part of one signal (its features cover no more);
        ``math.inf`` for features of the whole signal.
    frame_seconds : float or None
        Step of the frame-level features of :meth:`encode_frames`, whose mean over a
        unit's frames is its features (Whisper states: 0.02 s); None: the features
        have no such form, and windows are encoded one by one
        (:mod:`emovox.inference.frames`).
    """

    name: str = "backend"
    sample_rate: int
    classes: list[str]
    labels: Any
    uncertain_below: float | None = None
    reference: FeatureStats | None = None
    prior_weight: float = 8.0
    max_seconds: float
    frame_seconds: float | None = None

    @abstractmethod
    def encode(self, signals: Sequence[np.ndarray], sample_rate: int) -> Encoded:
        """Features (and plain probabilities) of whole analysed units.

        Each signal is one unit (a file, a window, a live block): the model's own
        preprocessing (loudness, crop to ``max_seconds``) applies to each. Unusable
        ones (silent, too short) are left out, as ``usable`` says.
        """

    @abstractmethod
    def encode_files(self, paths: Sequence[str], progress: bool = False
                     ) -> tuple[Encoded, list[tuple[str, str]]]:
        """:meth:`encode` of audio files, and ``(path, reason)`` of those that failed."""

    def encode_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                      ) -> tuple[list[np.ndarray], np.ndarray]:
        """Frame-level features of whole units (only when :attr:`frame_seconds` is set).

        Returns
        -------
        frames : list of np.ndarray, each shape (n_frames, dim)
            One array per usable signal, in order; the mean over a unit's frames is
            what :meth:`encode` gives it.
        usable : np.ndarray of bool, shape (len(signals),)
        """
        raise NotImplementedError(f"this {self.name} model has no frame-level features")

    def encode_pooled(self, features: np.ndarray) -> Encoded:
        """:class:`Encoded` rows of features pooled outside the backend (shape (n, dim)):
        the plain model's probabilities added."""
        raise NotImplementedError(f"this {self.name} model has no frame-level features")

    def adapted(self, standardised: np.ndarray) -> np.ndarray:
        """Probabilities of the speaker-normalised model for standardised features."""
        raise ConfigError(f"this {self.name} model was trained without speaker normalisation")


class Engine:
    """Answers of one model: the adaptation rule, the fallback, the rows.

    Parameters
    ----------
    backend : Backend
        The model runtime.
    adapt : {"auto", "none", "batch", "stream"}
        Where a speaker-normalised model's statistics come from (see
        :mod:`emovox.adaptation`); ``auto``: the files predicted together for files
        and folders, running statistics for timelines and streams. Ignored by models
        trained without normalisation.
    """

    def __init__(self, backend: Backend, adapt: str = "auto") -> None:
        if adapt not in ADAPT_CHOICES:
            raise ConfigError(f"adapt must be one of {ADAPT_CHOICES}, got {adapt!r}")
        self.backend = backend
        self.adapt = adapt
        #: Calibration and reference of a speaker-normalised model; each call forks it.
        self.adapter: FeatureAdapter | None = None
        if backend.reference is not None:
            mode: AdaptMode = "batch" if adapt == "auto" else adapt  # type: ignore[assignment]
            self.adapter = FeatureAdapter(backend.reference, backend.prior_weight, mode)

    @property
    def classes(self) -> list[str]:
        """Class names, the order of the probability columns."""
        return list(self.backend.classes)

    def adapter_for(self, kind: AdaptMode, calibration: bool = True
                    ) -> FeatureAdapter | None:
        """A fresh adaptation state for one call: ``kind`` is what ``auto`` means there
        (``"batch"`` for files, ``"stream"`` for timelines and live streams).
        ``calibration=False`` leaves the calibration out (one of several voices)."""
        if self.adapter is None:
            return None
        fork = self.adapter.fork(kind if self.adapt == "auto" else self.adapter.mode)
        if not calibration:
            fork.calibration = None
        return fork

    def probabilities(self, encoded: Encoded, adapter: FeatureAdapter | None
                      ) -> np.ndarray:
        """Class probabilities of encoded rows (columns: :attr:`classes`).

        With a speaker-normalised model the rows are standardised by ``adapter``; rows
        whose statistics rest on fewer than ``MIN_ADAPT_VECTORS`` vectors get the
        plain (unadapted) model's answer when the bundle has one.
        """
        X = flat(encoded.features)
        if adapter is None or self.backend.reference is None:
            if encoded.plain is None:
                raise ConfigError("a speaker-normalised model needs an adaptation state")
            return encoded.plain
        evidence = adapter.evidence(len(X))
        proba = np.array(self.backend.adapted(adapter.transform(X)), dtype=np.float64)
        few = evidence < MIN_ADAPT_VECTORS
        if encoded.plain is not None and few.any():
            proba[few] = encoded.plain[few]
        return proba

    def rows(self, encoded: Encoded, index: pd.MultiIndex,
             adapter: FeatureAdapter | None) -> pd.DataFrame:
        """Result rows (see :func:`~emovox.inference.rows.result_rows`) of encoded rows."""
        if not len(index):
            return empty_rows(self.classes)
        return result_rows(self.probabilities(encoded, adapter), self.classes, index,
                           self.backend.uncertain_below)

    def calibrate(self, features: np.ndarray, too_little: str) -> int:
        """Fix the speaker statistics to those of ``features`` (shape (n, dim)).

        Fewer than ``MIN_ADAPT_VECTORS`` vectors are too little of the speaker: nothing
        changes and a :class:`UserWarning` says why (``too_little``).

        Returns
        -------
        int
            The number of vectors given.
        """
        if self.adapter is None:
            raise ConfigError("this model was trained without speaker normalisation; "
                              "calibration has nothing to adapt")
        if len(features) < MIN_ADAPT_VECTORS:
            warnings.warn(f"calibration not applied: {too_little}", UserWarning, stacklevel=3)
            return len(features)
        return int(self.adapter.calibrate(flat(features)).count)

    @property
    def calibrated(self) -> bool:
        """Whether a calibration fixes the adaptation statistics."""
        return self.adapter is not None and self.adapter.calibration is not None


class SpeakerAdapters:
    """One adaptation state per speaker of a conversation, created on first use.

    Each speaker's statistics (running, or the batch of their own windows) come from
    their own rows only: two voices never share a state. A calibration recording is
    one voice, not known to be any of these speakers, so it is not applied to them (a
    warning says so once).

    Parameters
    ----------
    engine : Engine
        The model and its adaptation rule.
    kind : {"stream", "batch"}
        What ``auto`` means here (``"stream"`` for timelines).
    """

    def __init__(self, engine: Engine, kind: AdaptMode = "stream") -> None:
        self.engine = engine
        self.kind: AdaptMode = kind
        self.by_speaker: dict[str, FeatureAdapter | None] = {}
        if engine.calibrated:
            warnings.warn("the calibration is of one voice: in a conversation each speaker "
                          "is adapted to their own speech instead", UserWarning, stacklevel=3)

    def __getitem__(self, speaker: str) -> FeatureAdapter | None:
        if speaker not in self.by_speaker:
            self.by_speaker[speaker] = self.engine.adapter_for(self.kind, calibration=False)
        return self.by_speaker[speaker]
