"""The ONNX Runtime backend: an exported folder (``emovox export --onnx``), no torch and
no scikit-learn.

The folder holds ``model.onnx``, ``preprocessing.json`` (how audio becomes the graph's
input, the classes, the "uncertain" threshold) and, for speaker-normalised models,
``adaptation.npz`` (the reference statistics and the normalised linear head; see
:mod:`emovox.export_adaptation`). Every fault in them is one
:class:`~emovox.errors.BundleError` line naming the file.

A ``whisper_waveform`` graph gets each recording (decoded, mono, 16 kHz, checked for
silence and length here) and does the rest itself; equal-length recordings (a
timeline's windows) go through it in one ``session.run``. A ``whisper_log_mel`` graph
(earlier exports) gets the log-mel computed here after the loudness scaling.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emovox.audio import check_signal, load_audio, resample
from emovox.errors import AudioError, BundleError
from emovox.export_adaptation import AdaptedHead, LinearHead
from emovox.inference.engine import Backend, Encoded, flat
from emovox.inference.frontend import whisper_log_mel_numpy
from emovox.preprocess import preprocess

FORMAT = "emovox-onnx"
FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
SPEC_FILE = "preprocessing.json"
CARD_FILE = "MODEL_CARD.md"
#: The graph kinds this runtime runs (see :mod:`emovox.export`).
GRAPH_KINDS = ("whisper_waveform", "whisper_log_mel", "features")
#: Most equal-length recordings given to a waveform graph in one run (bounds memory).
BATCH_SIZE = 32


def missing_onnx(package: str, error: ImportError) -> ImportError:
    """The error for a missing ONNX package, saying what to install."""
    return ImportError(f"ONNX export and inference need {package} ({error}); "
                       "pip install onnx onnxruntime skl2onnx")


def read_spec(folder: Path) -> dict[str, Any]:
    """``preprocessing.json`` of an export folder, checked for format and version."""
    spec_file = folder / SPEC_FILE
    if not spec_file.is_file():
        raise BundleError(f"{folder}: not an emovox ONNX export (missing {SPEC_FILE})")
    try:
        spec = json.loads(spec_file.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise BundleError(f"{spec_file}: invalid JSON ({error})") from None
    if not isinstance(spec, dict):
        raise BundleError(f"{spec_file}: expected a JSON object")
    if spec.get("format") != FORMAT or spec.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{folder}: unsupported format {spec.get('format')!r} "
                          f"v{spec.get('format_version')} (this emovox reads {FORMAT} "
                          f"v{FORMAT_VERSION})")
    return spec


class OnnxBackend(Backend):
    """An exported model on ONNX Runtime.

    Parameters
    ----------
    path : str or Path
        The export folder.
    n_jobs : int
        Processes for the feature extraction of ``features`` graphs.
    threads : int, optional
        ONNX Runtime intra-op threads (None: its default).
    model_file : str, optional
        Another graph file of the folder to run instead of the spec's ``model_file``
        (e.g. the float32 graph beside an int8 one).
    """

    name = "onnx"

    def __init__(self, path: str | Path, n_jobs: int = 1, threads: int | None = 1,
                 model_file: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise missing_onnx("onnxruntime", error) from None
        self.path = Path(path)
        self.n_jobs = n_jobs
        self.spec = read_spec(self.path)
        try:
            self._read(self.spec, threads, ort, model_file)
        except BundleError:
            raise
        except Exception as error:  # a missing key, a wrong type, damaged side files
            raise BundleError(f"{self.path / SPEC_FILE}: missing or invalid field "
                              f"({error!r})") from None

    def _read(self, spec: dict[str, Any], threads: int | None, ort: Any,
              model_file: str | None = None) -> None:
        """Take the fields of ``preprocessing.json`` and open the graph."""
        from emovox.labels import LabelSet

        self.kind = str(spec["graph"]["kind"])
        if self.kind not in GRAPH_KINDS:
            raise BundleError(f"{self.path}: unknown graph kind {self.kind!r}")
        self.classes = [str(c) for c in spec["classes"]]
        self.labels = LabelSet.from_dict(spec["labels"])
        self.features: dict[str, Any] = spec["features"]
        self.training: dict[str, Any] = spec.get("training", {})
        threshold = spec.get("uncertain_below")
        self.uncertain_below = None if threshold is None else float(threshold)
        card = self.path / CARD_FILE
        self.card = card.read_text(errors="replace") if card.is_file() else ""
        audio = spec["preprocessing"]["audio"]
        self.sample_rate = int(audio["sample_rate"])
        self.offset = float(audio.get("offset") or 0.0)
        self.duration = None if audio.get("duration") is None else float(audio["duration"])
        self.max_seconds = float(audio.get("max_seconds") or math.inf)
        if self.duration is not None:
            self.max_seconds = min(self.max_seconds, self.duration)
        #: Loudness normalisation / trimming of the whole unit (None: none).
        self.signal_steps: dict[str, Any] | None = None
        if "signal" in spec["preprocessing"]:
            steps = spec["preprocessing"]["signal"]
            self.signal_steps = {"trim_top_db": steps.get("trim_top_db"),
                                 "loudness_lufs": steps.get("loudness_lufs")}
        #: A waveform graph measures loudness on its whole input: send it whole.
        self.graph_loudness = "loudness" in spec["preprocessing"]
        model_file = str(spec["model_file"]) if model_file is None else model_file
        if Path(model_file).name != model_file:  # no path out of the export folder
            raise BundleError(f"{self.path}: model_file {model_file!r} must be a file name")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path / model_file), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own errors: damaged or foreign graph
            raise BundleError(f"{self.path / model_file}: not a loadable ONNX model "
                              f"({' '.join(str(error).split())[:200]})") from None
        self._input = str(spec["graph"]["input"]["name"])
        self.head: AdaptedHead | None = None
        if "adaptation" in spec:
            self.head = AdaptedHead.load(self.path)
            self.reference = self.head.reference
            self.prior_weight = self.head.prior_weight
        #: The graph's own head, for windows pooled from its frames (None: no frames).
        self.plain_head: LinearHead | None = None
        frames = spec["graph"].get("frames_output")
        if (frames is not None and self.kind == "whisper_waveform" and self.offset == 0
                and self.duration is None and self.signal_steps is None):
            head_file = str(frames["head"]["file"])
            if Path(head_file).name != head_file:
                raise BundleError(f"{self.path}: head file {head_file!r} must be a file name")
            try:
                self.plain_head = LinearHead.load(self.path / head_file)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                raise BundleError(f"{self.path / head_file}: not a valid head file "
                                  f"({error})") from None
            if self.plain_head.order.size != len(self.classes):
                raise BundleError(f"{self.path / head_file}: {self.plain_head.order.size} "
                                  f"classes, the export has {len(self.classes)}")
            self.frame_seconds = float(frames["frame_seconds"])
            if "frames" not in [o.name for o in self.session.get_outputs()]:
                raise BundleError(f"{self.path}: the graph has no 'frames' output")
        self.extractor = None
        if self.kind == "features":
            from emovox.features import get_extractor

            self.extractor = get_extractor(self.features)

    # ------------------------------------------------------------------ the analysed unit
    def _window(self, signal: np.ndarray, source: str, offset_done: bool = False
                ) -> np.ndarray:
        """The analysed part of a 16 kHz mono signal (offset, duration, max_seconds).

        ``offset_done``: the signal was read from its offset already (``load_audio``).
        """
        start = 0 if offset_done else round(self.offset * self.sample_rate)
        if start >= signal.size:
            raise AudioError(source, f"offset {self.offset:g} s is past the end of the audio "
                                     f"({signal.size / self.sample_rate:.3f} s)")
        stop = None if self.duration is None else start + round(self.duration *
                                                                 self.sample_rate)
        window = check_signal(signal[start:stop], self.sample_rate, source)
        return window[: round(self.max_seconds * self.sample_rate)] \
            if math.isfinite(self.max_seconds) else window

    def _prepared(self, signal: np.ndarray, source: str) -> np.ndarray:
        """The graph input of a whole 16 kHz mono unit, after its Python signal steps:
        the analysed window (log-mel graphs), or the unit checked and cut no further
        than the window's end (waveform graphs cut the window themselves, after
        measuring the loudness of all they are given)."""
        if self.signal_steps is not None:
            signal = preprocess(signal, self.sample_rate, **self.signal_steps)
        window = self._window(signal, source)  # the checks (silent, too short, offset)
        if self.kind == "whisper_log_mel" or (self.offset == 0 and window.size == signal.size):
            return window
        if self.graph_loudness:
            return signal
        return signal[: round(self.offset * self.sample_rate) + window.size]

    def _file_window(self, path: str) -> np.ndarray:
        """The graph input of an audio file (read whole when the graph or the signal
        steps need it)."""
        if self.signal_steps is not None or self.kind == "whisper_waveform":
            return self._prepared(load_audio(path, self.sample_rate), path)
        return self._window(load_audio(path, self.sample_rate, offset=self.offset,
                                       duration=self.duration), path, offset_done=True)

    def _run_mel(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of one analysed window, and its pooled features (empty when the
        graph has none)."""
        mel = whisper_log_mel_numpy(window)[None]
        outputs = self.session.run(None, {self._input: mel})
        features = outputs[1][0] if len(outputs) > 1 else np.zeros(0, np.float32)
        return np.asarray(outputs[0][0], np.float64), features

    def _run_waveforms(self, inputs: Sequence[np.ndarray]
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`_run_mel` of waveform graph inputs, equal lengths in one run each."""
        names = [o.name for o in self.session.get_outputs()][:2]
        out = self._run_batched(inputs, names)
        return [(np.asarray(o[0], np.float64),
                 o[1] if len(o) > 1 else np.zeros(0, np.float32)) for o in out]

    def _run_batched(self, inputs: Sequence[np.ndarray], names: list[str]
                     ) -> list[list[np.ndarray]]:
        """The outputs ``names`` of each waveform graph input, equal lengths batched."""
        groups: dict[int, list[int]] = {}
        for i, signal in enumerate(inputs):
            groups.setdefault(signal.size, []).append(i)
        out: list[list[np.ndarray]] = [[] for _ in inputs]
        for members in groups.values():
            for begin in range(0, len(members), BATCH_SIZE):
                part = members[begin:begin + BATCH_SIZE]
                batch = np.stack([inputs[i] for i in part]).astype(np.float32, copy=False)
                outputs = self.session.run(names, {self._input: batch})
                for j, i in enumerate(part):
                    out[i] = [output[j] for output in outputs]
        return out

    def _run_features(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(flat(features), dtype=np.float32)
        return np.asarray(self.session.run(None, {self._input: x})[0], np.float64)

    def _from_windows(self, windows: Sequence[np.ndarray | None]) -> Encoded:
        """Encode analysed windows (None: unusable)."""
        usable = np.array([w is not None for w in windows], dtype=bool)
        kept = [w for w in windows if w is not None]
        outputs = self._run_waveforms(kept) if self.kind == "whisper_waveform" else [
            self._run_mel(w) for w in kept]
        n = len(self.classes)
        plain = np.stack([o[0] for o in outputs]) if outputs else np.zeros((0, n))
        features = np.stack([o[1] for o in outputs]) if outputs else np.zeros((0, 0))
        return Encoded(features=flat(features), plain=plain, usable=usable)

    # ------------------------------------------------------------------ Backend
    def encode(self, signals: Sequence[np.ndarray], sample_rate: int) -> Encoded:
        """Features and probabilities of in-memory units (any rate)."""
        if self.extractor is not None:
            features, usable = self.extractor.extract_signals(list(signals), sample_rate)
            X = flat(features)
            plain = self._run_features(X) if len(X) else np.zeros((0, len(self.classes)))
            return Encoded(features=X, plain=plain, usable=usable)
        return self._from_windows(self._units(signals, sample_rate))

    def _units(self, signals: Sequence[np.ndarray], sample_rate: int
               ) -> list[np.ndarray | None]:
        """Graph inputs of in-memory units (None: silent or too short)."""
        windows: list[np.ndarray | None] = []
        for signal in signals:
            try:
                unit = resample(check_signal(signal, sample_rate, "<signal>"), sample_rate,
                                self.sample_rate)
                windows.append(self._prepared(unit, "<signal>"))
            except AudioError:
                windows.append(None)  # left out, as the mask says
        return windows

    def encode_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                      ) -> tuple[list[np.ndarray], np.ndarray]:
        """The graph's ``frames`` output of each usable unit (see
        :meth:`Backend.encode_frames`)."""
        if self.plain_head is None:
            return super().encode_frames(signals, sample_rate)
        units = self._units(signals, sample_rate)
        usable = np.array([u is not None for u in units], dtype=bool)
        outputs = self._run_batched([u for u in units if u is not None], ["frames"])
        return [o[0] for o in outputs], usable

    def encode_pooled(self, features: np.ndarray) -> Encoded:
        """Rows of pooled features, with the graph head's probabilities (in NumPy)."""
        if self.plain_head is None:
            return super().encode_pooled(features)
        X = flat(features)
        plain = self.plain_head.probabilities(X) if len(X) else np.zeros((0, len(self.classes)))
        return Encoded(features=X, plain=plain, usable=np.ones(len(X), bool))

    def encode_files(self, paths: Sequence[str], progress: bool = False
                     ) -> tuple[Encoded, list[tuple[str, str]]]:
        """Features and probabilities of audio files, failures as ``(path, reason)``."""
        if self.extractor is not None:
            from emovox.features import extract_many

            result = extract_many(list(paths), self.extractor, cache_dir=None,
                                  n_jobs=self.n_jobs, progress=progress)
            X = flat(result.features)
            plain = self._run_features(X) if len(X) else np.zeros((0, len(self.classes)))
            return Encoded(features=X, plain=plain,
                           usable=np.asarray(result.ok, bool)), list(result.failures)
        from tqdm import tqdm

        windows: list[np.ndarray | None] = []
        failures: list[tuple[str, str]] = []
        for path in tqdm(paths, desc="onnx", unit="file", disable=not progress):
            try:
                windows.append(self._file_window(str(path)))
            except AudioError as error:
                windows.append(None)
                failures.append((str(path), str(error)))
        return self._from_windows(windows), failures

    def adapted(self, standardised: np.ndarray) -> np.ndarray:
        """The exported normalised head (linear, in NumPy) on standardised features."""
        if self.head is None:
            return super().adapted(standardised)
        return self.head.probabilities(standardised)
