"""Inference: the emotion of signals, files, folders, long recordings and streams.

:class:`Recognizer` is a thin front over :class:`~emovox.inference.engine.Engine`: the
same verbs run on every model runtime, chosen by what is given: a bundle (native:
PyTorch + scikit-learn) or an ONNX export folder (ONNX Runtime only).

A whole-file answer covers the whole file. A recording of utterance length (up to
:data:`WHOLE_MAX_SECONDS`, and within the model's analysed length) is encoded whole, as
the model was trained; a longer one is answered by the mean probabilities of its
timeline's speech windows, and the ``basis`` column says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emovox.adaptation import MIN_ADAPT_VECTORS
from emovox.audio import check_durations, check_signal, load_audio, resample
from emovox.errors import AudioError, ConfigError
from emovox.inference.engine import Backend, Encoded, Engine
from emovox.inference.rows import INDEX_NAMES, empty_rows, result_rows
from emovox.verbs import FileVerbs

if TYPE_CHECKING:
    from emovox.bundle import Bundle
    from emovox.vad import VadOptions

#: Whole-file predictions refuse longer files: the work of one call stays bounded.
MAX_FILE_SECONDS = 3 * 3600.0
#: ``basis`` of an answer from the whole analysed recording.
WHOLE = "whole recording"
#: Longest recording answered whole: about the longest acted utterance the models are
#: trained on (EmoDB's reach 9 s). Anything longer holds more than one utterance's
#: worth, so it is answered from its timeline, and the answer, the page headline and the
#: timeline of the same recording agree.
WHOLE_MAX_SECONDS = 10.0
#: Window and hop (seconds) of the timeline that answers longer recordings.
AGGREGATE_WINDOW, AGGREGATE_HOP = 2.0, 1.0


#: Model runtimes: ``auto`` runs the packaged default model on ONNX Runtime when its
#: export is current (same answers, a fraction of the start-up), any other model as given.
RUNTIMES = ("auto", "torch", "onnx")


def make_backend(model: Bundle | str | Path | None = None, n_jobs: int = -1,
                 runtime: str = "auto") -> Backend:
    """The runtime for a model: a bundle runs natively, an ONNX export on ONNX Runtime.

    Parameters
    ----------
    model : Bundle, str or Path, optional
        A loaded bundle, a bundle folder, an ONNX export folder (it holds
        ``preprocessing.json``), the name of a packaged model (``"default"``,
        ``"fast"``, ``"accurate"``; see :mod:`emovox.inference.packaged`), or None for the
        packaged default model.
    n_jobs : int
        Processes for multi-file feature extraction.
    runtime : {"auto", "torch", "onnx"}
        For the default model: ``auto`` and ``onnx`` take its packaged ONNX export
        (``onnx`` insists on it), ``torch`` the bundle. Other models run on the
        runtime their folder is for; asking for the other one is an error.

    Raises
    ------
    ConfigError
        An unknown runtime, or one the model does not exist for.
    """
    from emovox.inference.onnx_backend import SPEC_FILE, OnnxBackend
    from emovox.inference.packaged import PACKAGED_MODELS, resolve_model

    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    model = resolve_model(model, runtime)  # type: ignore[assignment]
    if isinstance(model, str | Path) and not Path(model).exists():
        raise ConfigError(f"{model}: no such model folder, and not a packaged model "
                          f"(those are {', '.join(PACKAGED_MODELS)})")
    onnx_jobs = 1 if n_jobs < 0 else n_jobs
    if model is None and runtime != "torch":
        from emovox.inference.packaged import packaged_onnx

        folder = packaged_onnx()
        if folder is not None:
            return OnnxBackend(folder, n_jobs=onnx_jobs)
        if runtime == "onnx":
            raise ConfigError("the packaged ONNX model is missing, stale or onnxruntime is "
                              "not installed; use runtime 'torch' or reinstall emovox")
    is_export = isinstance(model, str | Path) and (Path(model) / SPEC_FILE).is_file()
    if is_export:
        if runtime == "torch":
            raise ConfigError(f"{model} is an ONNX export: it runs on the 'onnx' runtime")
        return OnnxBackend(model, n_jobs=onnx_jobs)  # type: ignore[arg-type]
    if runtime == "onnx" and model is not None:
        raise ConfigError(f"{model} is a bundle: export it first (emovox export --onnx DIR) "
                          "to run it on ONNX Runtime")
    from emovox.bundle import Bundle, load_bundle
    from emovox.inference.torch_backend import TorchBackend

    return TorchBackend(model if isinstance(model, Bundle) else load_bundle(model), n_jobs)


class Recognizer(FileVerbs):
    """Recognise emotion with a model (the packaged default bundle if none is given).

    Results are DataFrames indexed by ``(file, start, end)`` in seconds, with the
    columns ``emotion``, ``confidence``, one probability per class and ``basis`` (what
    the answer was computed from).

    Parameters
    ----------
    bundle : Bundle, str or Path, optional
        A loaded bundle, a bundle folder, an ONNX export folder or a packaged model's
        name (``"default"``, ``"fast"``, ``"accurate"``); ``None`` loads the default.
    n_jobs : int
        Processes for multi-file feature extraction (-1: all cores).
    adapt : {"auto", "none", "batch", "stream"}
        For a speaker-normalised model, where the speaker statistics come from (see
        :mod:`emovox.adaptation`): ``"auto"`` uses the files predicted together
        (``batch``) for files and folders and running statistics (``stream``) for
        timelines and live streams. Ignored by models trained without normalisation.
    runtime : {"auto", "torch", "onnx"}
        Model runtime (see :func:`make_backend`): by default the packaged model runs
        on ONNX Runtime, with the same answers as the native bundle.
    backend : Backend, optional
        A ready runtime (then ``bundle``, ``n_jobs`` and ``runtime`` are ignored).
    """

    def __init__(self, bundle: Bundle | str | Path | None = None, n_jobs: int = -1,
                 adapt: str = "auto", backend: Backend | None = None,
                 runtime: str = "auto") -> None:
        self.backend = backend if backend is not None else make_backend(bundle, n_jobs,
                                                                        runtime)
        self.engine = Engine(self.backend, adapt)
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ description
    @property
    def engine_name(self) -> str:
        """The runtime: ``"torch"`` or ``"onnx"``."""
        return self.backend.name

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the probability columns."""
        return self.engine.classes

    @property
    def adapt(self) -> str:
        """The adaptation choice (see the class parameters)."""
        return self.engine.adapt

    @property
    def adapter(self) -> Any:
        """The speaker statistics holder of a speaker-normalised model (None otherwise);
        every call works on its own fork of it."""
        return self.engine.adapter

    @property
    def uncertain_below(self) -> float | None:
        """A calibrated model's threshold for answering "uncertain" (None: never)."""
        return self.backend.uncertain_below

    @property
    def sample_rate(self) -> int:
        """The rate the model analyses, in Hz."""
        return int(self.backend.sample_rate)

    @property
    def labels(self) -> Any:
        """The model's :class:`~emovox.labels.LabelSet`."""
        return self.backend.labels

    @property
    def bundle(self) -> Bundle:
        """The bundle of a native model."""
        bundle = getattr(self.backend, "bundle", None)
        if bundle is None:
            raise AttributeError(f"a {self.backend.name} model has no native bundle")
        return bundle

    @property
    def extractor(self) -> Any:
        """The feature extractor of a native model (None for ONNX Whisper graphs)."""
        return getattr(self.backend, "extractor", None)

    # ------------------------------------------------------------------ calibration
    @property
    def calibrated(self) -> bool:
        """Whether a calibration (:meth:`calibrate`) fixes the adaptation statistics."""
        return self.engine.calibrated

    def calibrate(self, sources: Iterable[str | Path] | np.ndarray,
                  sample_rate: int | None = None, window: float = 2.0,
                  hop: float = 1.0) -> int:
        """Adapt to a speaker from a short calibration recording (or a few files).

        Fewer than :data:`~emovox.adaptation.MIN_ADAPT_VECTORS` feature vectors are
        too little of the speaker to adapt to: the calibration is then not applied, a
        :class:`UserWarning` says how much more is needed, and :attr:`calibrated`
        stays as it was.

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
            The model was trained without speaker normalisation, or no file could be
            used.
        """
        from emovox.inference.frames import WindowEncoder
        from emovox.inference.windows import check_window, window_bounds

        if self.engine.adapter is None:
            raise ConfigError("this model was trained without speaker normalisation; "
                              "calibration has nothing to adapt")
        name = "<calibration>"
        if not isinstance(sources, np.ndarray):
            sources = list(sources)
            if len(sources) != 1:
                return self.adapt_to_files(sources)
            # One recording: its windows, as for samples.
            name = str(sources[0])
            sample_rate = self.sample_rate
            sources = load_audio(sources[0], sample_rate)
        if sample_rate is None:
            raise ConfigError("give the sample_rate of the calibration samples")
        check_window(window, hop)
        signal = resample(check_signal(sources, sample_rate, name), sample_rate,
                          self.sample_rate)
        # Its windows encoded as a timeline encodes them (each second once, when the
        # features are a mean over frames), so the statistics match a timeline's.
        windows = list(window_bounds(len(signal), self.sample_rate, window, hop,
                                     partial=False)) or [(0, len(signal))]
        encoded = WindowEncoder(self.backend, self.sample_rate).encode(signal, 0, windows)
        needed = window + (MIN_ADAPT_VECTORS - 1) * hop  # n windows: window + (n-1) hops
        return self.engine.calibrate(
            encoded.features, f"{name} is {len(signal) / self.sample_rate:.1f} s long, "
                              f"{len(encoded.features)} usable window(s) of {window:g} s; "
                              f"at least {needed:g} s ({MIN_ADAPT_VECTORS} windows) are "
                              "needed")

    def adapt_to_files(self, paths: Iterable[str | Path], progress: bool = False) -> int:
        """Fix the adaptation statistics to those of these files (one vector each).

        What ``batch`` adaptation would use for them predicted together; fixing it
        lets a long run predict them in parts (and resume) with the same statistics.
        Unusable files are skipped (a warning names them). Fewer than
        ``MIN_ADAPT_VECTORS`` usable files fix nothing (a warning says so).

        Returns
        -------
        int
            Number of usable files.
        """
        import warnings

        if self.engine.adapter is None:
            raise ConfigError("this model was trained without speaker normalisation; "
                              "there is nothing to adapt")
        paths = [str(p) for p in paths]
        encoded, failures = self.backend.encode_files(paths, progress=progress)
        if not encoded.usable.any():
            raise ConfigError("no usable file to adapt to: " + "; ".join(
                f"{p}: {r}" for p, r in failures))
        if failures:
            warnings.warn(f"calibration left out {len(failures)} unusable file(s): "
                          + "; ".join(r for _, r in failures), UserWarning, stacklevel=2)
        used = [Path(p).name for p, ok in zip(paths, encoded.usable, strict=True) if ok]
        return self.engine.calibrate(
            encoded.features, f"{len(used)} usable file(s) ({', '.join(used)}); at least "
                              f"{MIN_ADAPT_VECTORS} files of the speaker, or one recording "
                              "of several seconds, are needed")

    # ------------------------------------------------------------------ whole recordings
    def is_long(self, seconds: float) -> bool:
        """Longer than an utterance (:data:`WHOLE_MAX_SECONDS`) or than the model's
        analysed length: answered from its timeline's windows, not encoded whole."""
        return seconds > min(self.backend.max_seconds, WHOLE_MAX_SECONDS) + 1e-6

    def _whole(self, encoded: Encoded, tuples: list[tuple[str, float, float]]
               ) -> pd.DataFrame:
        """Rows of units encoded whole, adapted together as one batch."""
        index = pd.MultiIndex.from_tuples(tuples, names=list(INDEX_NAMES))
        frame = self.engine.rows(encoded, index, self.engine.adapter_for("batch"))
        frame["basis"] = WHOLE
        return frame

    def predict_long(self, source: str | Path | np.ndarray, name: str,
                     sample_rate: int | None = None) -> pd.DataFrame:
        """One row for a recording longer than :meth:`is_long` allows: the mean
        probabilities of its timeline's speech windows (of all its windows when the
        detector finds no speech, as a short recording is answered whole without one).

        Parameters
        ----------
        source : str, Path or np.ndarray
            A file, or samples (then give ``sample_rate``).
        name : str
            ``file`` value of the row.
        sample_rate : int, optional
            Rate of array samples in Hz.

        Returns
        -------
        pandas.DataFrame
            One row; ``basis`` says how many windows it averages.
        """
        options = {"window": AGGREGATE_WINDOW, "hop": AGGREGATE_HOP, "name": name,
                   "sample_rate": sample_rate, "keep_nonspeech": False}
        frame = self.predict_timeline(source, **options)
        if not frame["emotion"].notna().any():
            frame = self.predict_timeline(source, vad=None, **options)
        return aggregate_timeline(frame, self.classes, self.uncertain_below)

    def predict_signal(self, signal: np.ndarray, sample_rate: int,
                       name: str = "<signal>") -> pd.DataFrame:
        """Emotion of one in-memory recording (any rate; resampled to the model's).

        Parameters
        ----------
        signal : np.ndarray, shape (n,) or (n, channels)
            Audio samples.
        sample_rate : int
            Rate of ``signal`` in Hz.
        name : str
            ``file`` value of the result's index.

        Returns
        -------
        pandas.DataFrame
            One row indexed by ``(name, 0.0, duration)``.

        Raises
        ------
        AudioError
            Unusable audio (empty, silent, too short, no speech in a long recording).
        """
        signal = check_signal(signal, sample_rate, name, max_duration=MAX_FILE_SECONDS)
        duration = len(signal) / sample_rate
        if self.is_long(duration):
            return self.predict_long(signal, name, sample_rate)
        encoded = self.backend.encode([signal], sample_rate)
        if not encoded.usable[0]:  # the backend's own checks refused it: say why
            check_signal(resample(signal, sample_rate, self.sample_rate), self.sample_rate,
                         name)
            raise AudioError(name, "no usable audio to classify")
        return self._whole(encoded, [(name, 0.0, round(duration, 3))])

    def predict_files(self, paths: Iterable[str | Path], progress: bool = True) -> pd.DataFrame:
        """Emotion of many files; unusable files are listed in ``result.attrs["failures"]``.

        A bad file never stops the batch: it is reported as ``(path, reason)``. Files
        up to the model's analysed length are adapted together as one batch; longer
        ones are answered from their own timeline.
        """
        durations, failures = check_durations(paths, MAX_FILE_SECONDS)
        short = [p for p, seconds in durations.items() if not self.is_long(seconds)]
        frames = []
        if short:
            encoded, failed = self.backend.encode_files(short, progress=progress)
            failures += failed
            tuples = [(p, 0.0, round(durations[p], 3))
                      for p, ok in zip(short, encoded.usable, strict=True) if ok]
            if tuples:
                frames.append(self._whole(encoded, tuples))
        for path, seconds in durations.items():
            if self.is_long(seconds):
                try:
                    frames.append(self.predict_long(path, path))
                except AudioError as error:
                    failures.append((path, str(error)))
        frame = pd.concat(frames) if frames else _empty(self.classes)
        order = {p: i for i, p in enumerate(durations)}
        frame = frame.iloc[np.argsort([order[f] for f in frame.index.get_level_values(0)],
                                      kind="stable")] if len(frame) else frame
        frame.attrs["failures"] = failures
        return frame

    # ------------------------------------------------------------------ time
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
        speakers: int | str | None = None,
        voices: str | None = None,
        progress: bool = False,
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
        speakers : int or str, optional
            A conversation: separate its voices (``"auto"``: find how many; ``"2-4"``:
            find it within a range), add a ``speaker`` column and adapt to each speaker
            on their own; see :mod:`emovox.diarization` and
            :func:`emovox.conversation.speaker_summary`.
        voices : {"campplus", "ge2e"}, optional
            With ``speakers``: the voice encoder that tells them apart (default
            CAM++; GE2E is about twice as cheap and less exact).
        progress : bool
            Progress bars over the recording (stderr) for passes that take a while.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``(file, start, end)``; columns ``emotion``, ``confidence``, one
            probability per class, ``speech`` and ``speech_ratio`` (and ``speaker``).
            ``attrs`` holds ``duration``, ``vad``, ``speech_segments``, ``window``,
            ``hop`` (and ``speakers``, ``speaker_turns``).

        Raises
        ------
        AudioError
            Unreadable or empty audio.
        """
        from emovox.timeline import timeline

        return timeline(self.engine, source, sample_rate, window=window, hop=hop, vad=vad,
                        chunk_seconds=chunk_seconds, min_speech=min_speech,
                        keep_nonspeech=keep_nonspeech, name=name, vad_options=vad_options,
                        speakers=speakers, voices=voices, progress=progress)

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

        yield from iter_timeline(self.engine, source, window=window, hop=hop, vad=vad,
                                 chunk_seconds=chunk_seconds, **options)

    def stream(self, window: float = 2.0, hop: float = 1.0, sample_rate: int = 16_000,
               **options: Any) -> Any:
        """A live stream: feed blocks of samples, get a row per completed window.

        Returns a :class:`~emovox.listen.LiveRecognizer` with its own adaptation state
        (this recogniser's other verbs are unaffected).
        """
        from emovox.listen import LiveRecognizer

        return LiveRecognizer(self, window=window, hop=hop, sample_rate=sample_rate,
                              **options)


class OnnxRecognizer(Recognizer):
    """:class:`Recognizer` on an exported ONNX folder, with ONNX Runtime only.

    Every verb of :class:`Recognizer` works, timelines and streams included, with the
    same results (probabilities within 1e-3). Whisper graphs (``whisper_waveform``,
    ``whisper_log_mel``) need neither PyTorch nor scikit-learn; ``features`` graphs
    compute their input with the emovox extractor named in the spec.

    Parameters
    ----------
    path : str or Path
        Folder written by :func:`emovox.export.export_onnx`.
    n_jobs : int
        Processes for multi-file feature extraction of ``features`` graphs.
    threads : int, optional
        ONNX Runtime intra-op threads; 1 by default, like the native extractors (the
        server runs one prediction per core); ``None``: ONNX Runtime's default.
    adapt : {"auto", "none", "batch", "stream"}
        As for :class:`Recognizer`; exports of speaker-normalised bundles carry the
        statistics and the normalised head in ``adaptation.npz``.

    Raises
    ------
    BundleError
        Not an emovox ONNX folder, of an unknown format version, or damaged.
    """

    def __init__(self, path: str | Path, n_jobs: int = 1, threads: int | None = 1,
                 adapt: str = "auto") -> None:
        from emovox.inference.onnx_backend import OnnxBackend

        super().__init__(backend=OnnxBackend(path, n_jobs=n_jobs, threads=threads),
                         adapt=adapt, n_jobs=n_jobs)

    @property
    def path(self) -> Path:
        """The export folder."""
        return self.backend.path  # type: ignore[attr-defined]

    @property
    def card(self) -> str:
        """The model card."""
        return self.backend.card  # type: ignore[attr-defined]

    def metadata(self) -> dict[str, Any]:
        """The spec of the export (``preprocessing.json``)."""
        return dict(self.backend.spec)  # type: ignore[attr-defined]


def _empty(classes: Sequence[str]) -> pd.DataFrame:
    frame = empty_rows(classes)
    frame["basis"] = pd.Series(dtype=object)
    return frame


def aggregate_timeline(frame: pd.DataFrame, classes: Sequence[str],
                       uncertain_below: float | None = None) -> pd.DataFrame:
    """The whole-recording row of a timeline: mean probabilities of its speech windows.

    Parameters
    ----------
    frame : pandas.DataFrame
        A timeline (:meth:`Recognizer.predict_timeline`), with its ``attrs``.
    classes : sequence of str
        Class names.
    uncertain_below : float, optional
        The model's "uncertain" threshold, applied to the mean.

    Returns
    -------
    pandas.DataFrame
        One row indexed by ``(file, 0.0, duration)``; ``basis`` says how many windows.

    Raises
    ------
    AudioError
        No window of the recording had enough speech to classify.
    """
    name = str(frame.index.get_level_values(0)[0]) if len(frame) else "<signal>"
    duration = float(frame.attrs.get("duration", np.nan))
    voiced = frame[frame["emotion"].notna()] if len(frame) else frame
    if not len(voiced):
        raise AudioError(name, f"no speech found in {duration:.1f} s to classify")
    proba = voiced[list(classes)].to_numpy(dtype=float).mean(axis=0, keepdims=True)
    index = pd.MultiIndex.from_tuples([(name, 0.0, round(duration, 3))],
                                      names=list(INDEX_NAMES))
    row = result_rows(proba, classes, index, uncertain_below)
    window, hop = frame.attrs.get("window"), frame.attrs.get("hop")
    kind = "speech windows" if frame.attrs.get("vad") else "windows (no speech detector)"
    row["basis"] = f"mean of {len(voiced)} {kind}, {window:g} s every {hop:g} s"
    return row
