"""The per-file work of a batch job, the same in every executor (this process, a local
process pool, Ray actors): encode files into records, or make their timelines
(:class:`TimelineWork`).

A record is a pure function of (file, model): the file's duration, its pooled features
(kept only when a speaker-normalised model needs them for adaptation) and the
probabilities of the model that needs no adaptation, or, for recordings longer than
the model analyses at once, the final answer from their timeline. Turning records into
result rows (with the statistics of each speaker or group) is done afterwards, from the
stored records, so a resumed job never encodes a file twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emovox.audio import check_durations
from emovox.features.extract import failure_reason

if TYPE_CHECKING:
    from emovox.recognizer import Recognizer

Record = dict[str, Any]
#: The work a worker does on a batch of files: ``work(recognizer, files)`` -> records.
Work = Callable[["Recognizer", list[str]], list[Record]]


@dataclass(frozen=True)
class PackedModel:
    """A model folder (bundle or ONNX export) as bytes, to ship to machines that do not
    share the driver's disk; unpacked once per worker process.

    Attributes
    ----------
    name : str
        The folder's name.
    files : tuple of (str, bytes)
        Relative path and content of every file.
    """

    name: str
    files: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, folder: str | Path) -> PackedModel:
        """Read every file under ``folder``."""
        folder = Path(folder)
        files = tuple((str(p.relative_to(folder)), p.read_bytes())
                      for p in sorted(folder.rglob("*")) if p.is_file())
        return cls(folder.name, files)

    @property
    def digest(self) -> str:
        """Content hash: the same model unpacks to the same folder."""
        sha = hashlib.sha256()
        for name, data in self.files:
            sha.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return sha.hexdigest()[:16]

    def unpack(self) -> Path:
        """The folder rebuilt under the temporary directory (once per content)."""
        root = Path(tempfile.gettempdir()) / f"emovox-model-{self.digest}" / self.name
        if not root.is_dir():
            from emovox.fileio import atomic_write_stream

            root.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(dir=root.parent))
            for name, data in self.files:
                atomic_write_stream(work / name, lambda stream, data=data: stream.write(data))
            try:
                os.rename(work, root)  # whole or not at all
            except OSError:  # another worker of this machine unpacked it first
                shutil.rmtree(work, ignore_errors=True)
        return root


ModelRef = str | Path | PackedModel | None


def load_recognizer(model: ModelRef, adapt: str = "auto") -> Recognizer:
    """A one-process recogniser of ``model`` (None: the packaged default bundle)."""
    from emovox.recognizer import Recognizer

    if isinstance(model, PackedModel):
        model = model.unpack()
    return Recognizer(model, n_jobs=1, adapt=adapt)


def encode_records(recognizer: Recognizer, files: list[str]) -> list[Record]:
    """The per-file engine function: one record per file, in order.

    Parameters
    ----------
    recognizer : Recognizer
        A loaded model (its backend encodes; nothing is adapted here).
    files : list of str
        Audio files.

    Returns
    -------
    list of dict
        ``file``, ``duration``, ``basis``, ``plain`` (probabilities of the model that
        needs no adaptation, or None), ``features`` (pooled features when the model is
        speaker-normalised, else None), ``proba`` (the final answer of a long
        recording, else None) and ``error`` (a one-line reason, or None).
    """
    from emovox.errors import AudioError
    from emovox.recognizer import MAX_FILE_SECONDS, WHOLE

    keep_features = recognizer.backend.reference is not None
    durations, failed = check_durations(files, MAX_FILE_SECONDS)
    out: dict[str, Record] = {p: _record(p, error=reason) for p, reason in failed}
    short = [p for p, seconds in durations.items() if not recognizer.is_long(seconds)]
    if short:
        encoded, failed = recognizer.backend.encode_files(short)
        out.update({p: _record(p, error=reason) for p, reason in failed})
        usable = [p for p, ok in zip(short, encoded.usable, strict=True) if ok]
        for row, path in enumerate(usable):
            out[path] = _record(
                path, duration=durations[path], basis=WHOLE,
                plain=None if encoded.plain is None else encoded.plain[row],
                features=encoded.features[row] if keep_features else None)
    for path, seconds in durations.items():
        if recognizer.is_long(seconds):
            try:
                row = recognizer.predict_long(path, path)
            except AudioError as error:
                out[path] = _record(path, error=failure_reason(path, error))
                continue
            out[path] = _record(path, duration=seconds, basis=str(row["basis"].iloc[0]),
                                proba=row[recognizer.classes].to_numpy(float)[0])
    return [out.get(p) or _record(p, error=f"{p}: not processed") for p in files]


def encode_batch(recognizer: Recognizer, files: list[str]) -> list[Record]:
    """:func:`encode_records`, isolating a file whose failure escapes the per-file
    checks (the batch is redone file by file, so only that file fails)."""
    try:
        return encode_records(recognizer, files)
    except Exception:
        if len(files) == 1:
            raise
    records = []
    for path in files:
        try:
            records += encode_records(recognizer, [path])
        except Exception as error:  # one bad file must not stop the job
            records.append(_record(path, error=failure_reason(path, error)))
    return records


def _record(path: str, duration: float | None = None, basis: str | None = None,
            plain: np.ndarray | None = None, features: np.ndarray | None = None,
            proba: np.ndarray | None = None, error: str | None = None) -> Record:
    def vector(x: np.ndarray | None, dtype: type) -> np.ndarray | None:
        return None if x is None else np.asarray(x, dtype=dtype).ravel()

    # Probabilities stay float64 (rows equal to the in-memory path's); features are
    # float32, as extractors make them.
    return {"file": path, "duration": None if duration is None else round(float(duration), 3),
            "basis": basis, "plain": vector(plain, np.float64),
            "features": vector(features, np.float32), "proba": vector(proba, np.float64),
            "error": error}


@dataclass(frozen=True)
class TimelineWork:
    """The per-file work of a timeline job: each file's whole timeline, a file at a
    time (a conversation's speakers and their statistics are the file's own, so a
    timeline needs nothing from other files).

    Attributes
    ----------
    options : tuple of (str, Any)
        Keyword arguments of :meth:`~emovox.recognizer.Recognizer.predict_timeline`
        (window, hop, vad, speakers, voices), as pairs so the work pickles and hashes.
    """

    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, recognizer: Recognizer, files: list[str]) -> list[Record]:
        """Records ``file``, ``duration``, ``rows`` (the timeline, indexed ``file,
        start, end``, or None) and ``error`` (a one-line reason, or None)."""
        records = []
        for path in files:
            try:
                rows = recognizer.predict_timeline(path, **dict(self.options))
            except Exception as error:  # one bad file must not stop the job
                records.append({"file": path, "duration": None, "rows": None,
                                "error": failure_reason(path, error)})
                continue
            records.append({"file": path, "duration": float(rows.attrs.get("duration", 0.0)),
                            "rows": rows, "error": None})
        return records
