"""Inference: the emotion of signals, files and folders, from a model bundle."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emovox.adaptation import ADAPT_MODES, MIN_ADAPT_VECTORS, FeatureAdapter
from emovox.audio import check_durations, check_signal, load_audio, resample
from emovox.bundle import Bundle, load_bundle
from emovox.errors import ConfigError
from emovox.features import extract_many
from emovox.inference.rows import column_order, empty_rows, result_rows
from emovox.normalization import DEFAULT_PRIOR_WEIGHT
from emovox.verbs import FileVerbs

if TYPE_CHECKING:
    from emovox.vad import VadOptions

#: Whole-file predictions refuse longer files (a timeline suits them better).
MAX_FILE_SECONDS = 600.0


class Recognizer(FileVerbs):
    """Recognise emotion with a model bundle (the packaged default if none is given).

    Results are DataFrames indexed by ``(file, start, end)`` in seconds, with the
    columns ``emotion``, ``confidence`` and one probability per class.

    Parameters
    ----------
    bundle : Bundle, str or Path, optional
        A loaded bundle or a bundle folder; ``None`` loads the default bundle.
    n_jobs : int
        Processes for multi-file feature extraction (-1: all cores).
    adapt : {"auto", "none", "batch", "stream"}
        For a speaker-normalised bundle, where the speaker statistics come from (see
        :mod:`emovox.adaptation`): ``"auto"`` uses the files predicted together
        (``batch``) for files and folders and running statistics (``stream``) for
        timelines. Ignored by bundles trained without normalisation.
    """

    def __init__(self, bundle: Bundle | str | Path | None = None, n_jobs: int = -1,
                 adapt: str = "auto") -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.extractor = self.bundle.extractor()
        self.n_jobs = n_jobs
        self.adapt = adapt
        self.adapter: FeatureAdapter | None = None
        if adapt not in ("auto", *ADAPT_MODES):
            raise ConfigError(f"adapt must be 'auto' or one of {ADAPT_MODES}, got {adapt!r}")
        if self.bundle.normalization == "speaker" and self.bundle.reference is not None:
            mode = "batch" if adapt == "auto" else adapt
            self.adapter = FeatureAdapter(self.bundle.reference,
                                          float(self.bundle.preprocessing.get(
                                              "prior_weight", DEFAULT_PRIOR_WEIGHT)), mode)

    def calibrate(self, sources: Iterable[str | Path] | np.ndarray,
                  sample_rate: int | None = None, window: float = 2.0,
                  hop: float = 1.0) -> int:
        """Adapt to a speaker from a short calibration recording (or a few files).

        Fewer than :data:`~emovox.adaptation.MIN_ADAPT_VECTORS` feature vectors are
        too little of the speaker to adapt to (the unadapted model would answer all
        the same): the calibration is then not applied, a :class:`UserWarning` says
        how much more is needed, and :attr:`calibrated` stays as it was.

        Parameters
        ----------
        sources : list of paths, or np.ndarray
            Files of the speaker (one vector each), or one recording (a single path,
            or samples with ``sample_rate``), which is cut into ``window``-second
            windows every ``hop`` seconds.
        sample_rate : int, optional
            Rate of array ``sources`` in Hz.
        window, hop : float
            Window length and step in seconds for a single recording.

        Returns
        -------
        int
            Number of feature vectors found (the calibration is applied only when it
            is at least ``MIN_ADAPT_VECTORS``).

        Raises
        ------
        ConfigError
            The bundle was trained without speaker normalisation, or no file could
            be used.
        """
        if self.adapter is None:
            raise ConfigError("this model was trained without speaker normalisation; "
                              "calibration has nothing to adapt")
        name = "<calibration>"
        if not isinstance(sources, np.ndarray):
            sources = list(sources)
            if len(sources) != 1:
                return self.adapt_to_files(sources)
            # One recording: its windows, as for samples.
            name = str(sources[0])
            sample_rate = self.extractor.sample_rate
            sources = load_audio(sources[0], sample_rate)
        if sample_rate is None:
            raise ConfigError("give the sample_rate of the calibration samples")
        signal = resample(check_signal(sources, sample_rate, name),
                          sample_rate, self.extractor.sample_rate)
        size, step = (round(s * self.extractor.sample_rate) for s in (window, hop))
        starts = range(0, max(1, len(signal) - size + 1), step)
        features = np.stack([self.extractor.extract_signal(
            signal[i:i + size], self.extractor.sample_rate) for i in starts])
        # n windows need window + (n - 1) * hop seconds.
        needed = window + (MIN_ADAPT_VECTORS - 1) * hop
        return self._set_calibration(
            features, f"{name} is {len(signal) / self.extractor.sample_rate:.1f} s long, "
                      f"{len(features)} window(s) of {window:g} s; at least "
                      f"{needed:g} s ({MIN_ADAPT_VECTORS} windows) are needed")

    @property
    def calibrated(self) -> bool:
        """Whether a calibration (:meth:`calibrate`) fixes the adaptation statistics."""
        return self.adapter is not None and self.adapter.calibration is not None

    def _set_calibration(self, features: np.ndarray, too_little: str) -> int:
        """Calibrate the adapter on ``features`` if they are enough, else warn why not."""
        if len(features) < MIN_ADAPT_VECTORS:
            warnings.warn(f"calibration not applied: {too_little}", UserWarning, stacklevel=3)
            return len(features)
        return int(self.adapter.calibrate(features.reshape(len(features), -1)).count)

    def adapt_to_files(self, paths: Iterable[str | Path], progress: bool = False) -> int:
        """Fix the adaptation statistics to those of these files (one vector each).

        What ``batch`` adaptation would use for them predicted together; fixing it
        lets a long run predict them in parts (and resume) with the same statistics.
        Unusable files are skipped. Fewer than ``MIN_ADAPT_VECTORS`` usable files fix
        nothing (a warning says so).

        Returns
        -------
        int
            Number of usable files.
        """
        if self.adapter is None:
            raise ConfigError("this model was trained without speaker normalisation; "
                              "there is nothing to adapt")
        result = extract_many(list(paths), self.extractor, cache_dir=None,
                              n_jobs=self.n_jobs, progress=progress)
        if not result.ok.any():
            raise ConfigError("no usable file to adapt to: " + "; ".join(
                f"{p}: {r}" for p, r in result.failures))
        if result.failures:
            warnings.warn(f"calibration left out {len(result.failures)} unusable file(s): "
                          + "; ".join(r for _, r in result.failures), UserWarning, stacklevel=2)
        files = ", ".join(Path(p).name for p in result.ok_paths)
        return self._set_calibration(
            result.features, f"{int(result.ok.sum())} usable file(s) ({files}); at least "
                             f"{MIN_ADAPT_VECTORS} files of the speaker, or one recording of "
                             "several seconds, are needed")

    def _probabilities(self, features: np.ndarray,
                       adapter: FeatureAdapter | None = None) -> np.ndarray:
        """Class probabilities (columns: the model's ``classes_``) of feature rows.

        A speaker-normalised bundle standardises the rows with the adapter (``adapter``,
        e.g. a timeline's own from :meth:`_stream_adapter`, else :attr:`adapter`); rows
        whose statistics rest on fewer than :data:`MIN_ADAPT_VECTORS` vectors go to the
        bundle's unadapted model instead, when it has one.
        """
        X = features.reshape(len(features), -1)
        model = self.bundle.model
        if self.adapter is None:
            return model.predict_proba(X)
        adapter = adapter or self.adapter
        evidence = adapter.evidence(len(X))
        proba = model.predict_proba(adapter.transform(X))
        unadapted = self.bundle.unadapted_model
        few = evidence < MIN_ADAPT_VECTORS
        if unadapted is not None and few.any():
            order = [list(unadapted.classes_).index(c) for c in model.classes_]
            proba[few] = unadapted.predict_proba(X[few])[:, order]
        return proba

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the probability columns."""
        return list(self.bundle.classes)

    def _frame(self, features: np.ndarray, index: pd.MultiIndex,
               adapter: FeatureAdapter | None = None) -> pd.DataFrame:
        proba = self._probabilities(features, adapter)
        order = column_order(list(self.bundle.model.classes_), self.classes)
        return result_rows(proba[:, order], self.classes, index, self.uncertain_below)

    @property
    def uncertain_below(self) -> float | None:
        """A calibrated model's threshold for answering "uncertain" (None: never)."""
        return getattr(self.bundle.model, "uncertain_below", None)

    def predict_signal(self, signal: np.ndarray, sample_rate: int,
                       name: str = "<signal>") -> pd.DataFrame:
        """Emotion of one in-memory signal (any rate; resampled to the model's)."""
        signal = check_signal(signal, sample_rate, name, max_duration=MAX_FILE_SECONDS)
        signal = resample(signal, sample_rate, self.extractor.sample_rate)
        features = self.extractor.extract_signal(signal, self.extractor.sample_rate)
        duration = len(signal) / self.extractor.sample_rate
        index = pd.MultiIndex.from_tuples([(name, 0.0, duration)],
                                          names=["file", "start", "end"])
        return self._frame(features[None], index)

    def predict_files(self, paths: Iterable[str | Path], progress: bool = True) -> pd.DataFrame:
        """Emotion of many files; unusable files are listed in ``result.attrs["failures"]``.

        A bad file never stops the batch: it is reported as ``(path, reason)``.
        """
        durations, failures = check_durations(paths, MAX_FILE_SECONDS)
        candidates = list(durations)
        result = extract_many(candidates, self.extractor, cache_dir=None, n_jobs=self.n_jobs,
                              progress=progress)
        failures += list(result.failures)
        tuples = [(p, 0.0, round(durations[p], 3))
                  for p, ok in zip(candidates, result.ok, strict=True) if ok]
        index = pd.MultiIndex.from_tuples(tuples, names=["file", "start", "end"])
        frame = self._frame(result.features, index) if tuples else empty_rows(self.classes)
        frame.attrs["failures"] = failures
        return frame

    def predict_timeline(
        self,
        source: str | Path | np.ndarray,
        window: float = 2.0,
        hop: float = 1.0,
        vad: str | None = "silero",
        chunk_seconds: float = 60.0,
        *,
        sample_rate: int | None = None,
        min_speech: float = 0.5,
        keep_nonspeech: bool = True,
        name: str | None = None,
        vad_options: VadOptions | None = None,
    ) -> pd.DataFrame:
        """Emotion over time: windows of ``window`` s every ``hop`` s over the speech.

        Any length works: files are read ``chunk_seconds`` at a time, so memory does
        not grow with the recording. See :mod:`emovox.timeline`.

        Parameters
        ----------
        source : str, Path or np.ndarray
            An audio file, or samples (then give ``sample_rate``).
        window, hop : float
            Window length and step between window starts in seconds (hop <= window).
        vad : {"silero", "energy"} or None
            Voice activity detector; ``"silero"`` falls back to ``"energy"`` (with a
            warning) when silero-vad is not installed; None classifies every window.
        chunk_seconds : float
            Seconds of audio processed at a time.
        sample_rate : int, optional
            Rate of an array ``source`` in Hz.
        min_speech : float
            Share of speech a window needs to be classified.
        keep_nonspeech : bool
            Keep the other windows as rows with ``speech=False`` and no emotion.
        name : str, optional
            Value of the ``file`` index level.
        vad_options : VadOptions, optional
            Detector and smoothing parameters.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``(file, start, end)``; columns ``emotion``, ``confidence``, one
            probability per class, ``speech`` and ``speech_ratio``. ``attrs`` holds
            ``duration``, ``vad``, ``speech_segments``, ``window``, ``hop``.

        Raises
        ------
        AudioError
            Unreadable or empty audio.
        """
        from emovox.timeline import timeline

        return timeline(self, source, sample_rate, window=window, hop=hop, vad=vad,
                        chunk_seconds=chunk_seconds, min_speech=min_speech,
                        keep_nonspeech=keep_nonspeech, name=name, vad_options=vad_options)

    def iter_timeline(
        self,
        source: str | Path | np.ndarray,
        window: float = 2.0,
        hop: float = 1.0,
        vad: str | None = "silero",
        chunk_seconds: float = 60.0,
        **options: Any,
    ) -> Iterator[pd.DataFrame]:
        """:meth:`predict_timeline` as it goes: one DataFrame per processed chunk.

        Takes the same parameters; the last frame yielded carries the ``attrs``.
        """
        from emovox.timeline import iter_timeline

        yield from iter_timeline(self, source, window=window, hop=hop, vad=vad,
                                 chunk_seconds=chunk_seconds, **options)

    def _stream_adapter(self) -> FeatureAdapter | None:
        """The adaptation state of one timeline (None without adaptation).

        A timeline is one stream: a fork of :attr:`adapter` with its own, fresh running
        statistics, in ``stream`` mode under ``adapt="auto"``. Each call gets its own,
        so concurrent timelines (server threads) neither share nor lock state.
        """
        if self.adapter is None:
            return None
        return self.adapter.fork("stream" if self.adapt == "auto" else None)
