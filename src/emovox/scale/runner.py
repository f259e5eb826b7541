"""A batch job: stream the inputs, encode each file once (locally or on Ray), write the
records and the result rows per batch, resume where a run stopped.

Two steps, both idempotent:

1. **encode**: every input file not stored yet goes through
   :func:`~emovox.scale.work.encode_batch` in an executor; the driver stores each
   batch's records (:class:`~emovox.scale.store.EncodedStore`).
2. **rows**: records become result rows. A speaker-normalised model adapting to the
   files (``--adapt auto|batch``) needs the statistics of each group (``--group-by``; by
   default all files are one speaker, as a folder predicted together): they are
   computed once from the stored features after step 1 and saved with the results.
   Other models and modes write each batch's rows as soon as it is encoded.

Timelines (:func:`run_timelines`) need nothing from other files: each worker makes
whole timelines and the driver writes their rows as they come, without a store.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from emovox.cores import usable_cores
from emovox.errors import ConfigError
from emovox.scale.executors import Executor, InProcess, LocalPool, RayPool
from emovox.scale.store import (
    PART_GLOB,
    EncodedStore,
    ParquetResults,
    TextResults,
    part_number,
    state_dir,
)
from emovox.scale.work import (
    ModelRef,
    Record,
    TimelineWork,
    Work,
    encode_batch,
    load_recognizer,
)

if TYPE_CHECKING:
    from emovox.normalization import FeatureStats
    from emovox.recognizer import Recognizer

#: Fewest files worth a local process pool. Measured (benchmarks/scale.py, 2 cores):
#: a worker starts in ~5 s (imports and the model) and a 3 s file takes ~0.05 s, so
#: a second worker saves time from ~200 files on.
POOL_MIN_FILES = 200
#: Files per batch sent to a worker (fewer when the job is small, so all workers work).
BATCH_FILES = 16
ENGINES = ("local", "ray")
#: Group of every file when the job has no --group-by.
ALL = "all"


def auto_jobs(n_files: int | None) -> int:
    """Local worker processes for ``n_files`` files: one (this process) for a handful,
    every core for many (:data:`POOL_MIN_FILES`); unknown counts get the pool."""
    if n_files is not None and n_files < POOL_MIN_FILES:
        return 1
    return usable_cores()


@dataclass
class JobSummary:
    """What a job did.

    Attributes
    ----------
    files : int
        Distinct input files seen.
    done_before : int
        Files whose rows an earlier run wrote (skipped).
    encoded_before : int
        Files an earlier run encoded (never encoded again; their rows are made from
        the stored records when missing).
    encoded : int
        Files encoded by this run.
    rows_written : int
        Result rows written by this run.
    duplicates : int
        Input rows naming a file seen before (each file is predicted once).
    failures : list of (str, str)
        Files this run could not predict, with the reason.
    seconds : float
        Wall time.
    audio_seconds : float
        Audio encoded by this run, in seconds.
    first_result_seconds : float or None
        Seconds until the first batch was stored.
    rows_before_first_result : int or None
        Input rows read when the first batch was stored: far fewer than the input's
        when inputs are streamed rather than listed first.
    workers : int
        Worker processes.
    engine : str
        ``"local"`` or ``"ray"``.
    """

    files: int = 0
    done_before: int = 0
    encoded_before: int = 0
    encoded: int = 0
    rows_written: int = 0
    duplicates: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    first_result_seconds: float | None = None
    rows_before_first_result: int | None = None
    workers: int = 1
    engine: str = "local"

    def result_came(self, started: float) -> None:
        """Note the first result's time (``started``: the job's ``perf_counter``)."""
        if self.first_result_seconds is None:
            self.first_result_seconds = time.perf_counter() - started
            self.rows_before_first_result = self.files + self.duplicates

    @property
    def files_per_second(self) -> float:
        """Files encoded per second of wall time."""
        return self.encoded / self.seconds if self.seconds else math.nan

    @property
    def real_time_factor(self) -> float:
        """Wall time over encoded audio time (below 1: faster than real time)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else math.nan


def output_format(output: Path, fmt: str | None = None) -> str:
    """``fmt``, else what the extension of ``output`` says (a folder: Parquet)."""
    if fmt is not None:
        return fmt
    suffix = output.suffix.lower().lstrip(".")
    if suffix in ("csv", "json"):
        return suffix
    return "parquet"


def run_job(
    items: Iterable[dict[str, Any]],
    output: str | Path,
    fmt: str | None = None,
    *,
    model: ModelRef = None,
    engine: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    adapt: str = "auto",
    group_by: str | None = None,
    resume: bool = True,
    total: int | None = None,
    progress: bool = True,
    batch_files: int | None = None,
    setup: Callable[[Recognizer], None] | None = None,
    on_batch: Callable[[JobSummary, Executor], None] | None = None,
) -> JobSummary:
    """Predict every input file into ``output``, once, resuming an earlier run.

    Parameters
    ----------
    items : iterable of dict
        ``{"file": path, **extra columns}`` (see :func:`emovox.scale.inputs.iter_items`);
        read lazily, as workers free up. A file named again is counted as a duplicate.
    output : str or Path
        A Parquet folder (partitioned: one part per batch), or a .csv / .json file.
    fmt : {"parquet", "csv", "json"}, optional
        Default: from the extension of ``output`` (anything but .csv/.json: Parquet).
    model : str, Path or None
        Bundle or ONNX folder (None: the packaged default bundle).
    engine : {"local", "ray"}
        Local worker processes, or Ray actors.
    jobs : int, optional
        Workers: local processes (default :func:`auto_jobs` of the work) or Ray actors
        (default: the cluster's CPUs).
    address : str, optional
        Ray cluster to join (default: start one on this machine).
    adapt : {"auto", "batch", "none"}
        Speaker adaptation of a speaker-normalised model (``stream`` depends on the
        order of files, which a parallel job does not keep: refused).
    group_by : str, optional
        Extra column naming each file's speaker or group (``"folder"``: the file's
        folder when there is no such column); default: all files are one group.
    resume : bool
        Keep what an earlier run wrote (False: start afresh).
    total : int, optional
        Number of input rows, when known (progress ETA, the default ``jobs``).
    progress : bool
        Show a progress bar (throughput and ETA) on stderr.
    batch_files : int, optional
        Files per worker batch.
    setup : callable, optional
        Called with the driver's recogniser before rows are made (e.g. to calibrate).
    on_batch : callable, optional
        Called after each stored batch with the summary so far and the executor.

    Returns
    -------
    JobSummary
    """
    started = time.perf_counter()
    output, fmt = _check_job(output, fmt, engine, adapt)
    store = EncodedStore(state_dir(output, fmt), fresh=not resume)
    summary = JobSummary(engine=engine, encoded_before=len(store.done))
    items, extras = _peek(items)

    todo_estimate = None if total is None else max(0, total - len(store.done))
    executor, recognizer = _start(model, adapt, engine, jobs, address, todo_estimate,
                                  encode_batch, setup)
    summary.workers = executor.workers
    columns = ["file", "start", "end", "emotion", "confidence", *recognizer.classes, "basis",
               *extras]
    results = (ParquetResults(output, fresh=not resume) if fmt == "parquet"
               else TextResults(output, fmt, columns, fresh=not resume))
    summary.done_before = len(results.done)
    needs_stats = (recognizer.backend.reference is not None and not recognizer.calibrated
                   and adapt in ("auto", "batch"))
    group_of = _grouper(group_by, extras)
    size = batch_files or BATCH_FILES
    if batch_files is None and total is not None:  # small jobs: several batches per worker
        size = max(1, min(size, math.ceil(max(1, todo_estimate or 0) / (4 * executor.workers))))

    pending: dict[str, dict[str, Any]] = {}  # items of batches in flight
    bar = _bar("predict", engine, executor, total, progress)
    batches = _batches(items, store.done.__contains__, size, pending,
                       summary, bar)
    try:
        for batch, records in executor.imap_unordered(batches):
            frame = _records_frame(records, pending, group_of, extras, summary)
            number = store.add(frame) if len(frame) else -1
            if number >= 0:
                summary.result_came(started)
                summary.encoded += len(frame)
                summary.audio_seconds += float(frame["duration"].sum())
                if not needs_stats:
                    results.add(number, _rows(recognizer, frame, None))
            for file in batch:
                pending.pop(file, None)
            bar.update(len(batch))
            bar.set_postfix(failed=len(summary.failures), refresh=False)
            if on_batch is not None:
                on_batch(summary, executor)
    finally:
        bar.close()
        executor.close()
    # Rows of every stored part not written yet (all of them when statistics were
    # needed; after a resume, those a stopped run had encoded but not written).
    stats = store.group_stats() if needs_stats else None
    for part in store.parts():
        number = int(part.stem.split("-")[1])
        if results.has_part(number):
            continue
        frame = store.read(number)
        frame = frame[[not results.is_done(f) for f in frame["file"]]]
        if len(frame):
            results.add(number, _rows(recognizer, frame, stats))
    results.close()
    summary.rows_written = results.rows_written
    summary.seconds = time.perf_counter() - started
    return summary


def run_timelines(
    items: Iterable[dict[str, Any]],
    output: str | Path,
    fmt: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    model: ModelRef = None,
    engine: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    adapt: str = "auto",
    resume: bool = True,
    total: int | None = None,
    progress: bool = True,
    batch_files: int | None = None,
) -> JobSummary:
    """The timeline of every input file into ``output``, once, resuming an earlier run.

    Each worker makes whole timelines (:class:`~emovox.scale.work.TimelineWork`): a
    long recording or a conversation (``options={"speakers": "auto"}``) is one file's
    work, its adaptation its own (per speaker in a conversation), so files need nothing
    from each other and the driver writes each batch's rows as they come.

    Parameters
    ----------
    items, output, fmt, model, engine, jobs, address, total, progress, batch_files
        As for :func:`run_job`.
    options : dict, optional
        Keyword arguments of :meth:`~emovox.recognizer.Recognizer.predict_timeline`
        (``window``, ``hop``, ``vad``, ``speakers``, ``voices``).
    adapt : {"auto", "batch", "none"}
        Adaptation of a speaker-normalised model within each recording.
    resume : bool
        Keep the files an earlier run wrote completely (False: start afresh).

    Returns
    -------
    JobSummary
    """
    from emovox.timeline import SPEECH_COLUMNS, timeline_complete

    started = time.perf_counter()
    output, fmt = _check_job(output, fmt, engine, adapt)
    options = dict(options or {})
    summary = JobSummary(engine=engine)
    items, extras = _peek(items)
    work = TimelineWork(tuple(sorted(options.items())))
    executor, recognizer = _start(model, adapt, engine, jobs, address, total, work, None)
    summary.workers = executor.workers
    columns = ["file", "start", "end", "emotion", "confidence", *recognizer.classes,
               *SPEECH_COLUMNS, *(["speaker"] if options.get("speakers") else []), *extras]
    if fmt == "parquet":
        results: ParquetResults | TextResults = ParquetResults(output, fresh=not resume)
        number = 1 + max((part_number(p) for p in output.glob(PART_GLOB)), default=-1)
    else:
        results = TextResults(output, fmt, columns, fresh=not resume,
                              complete=timeline_complete)
        number = 0
    summary.done_before = len(results.done)
    pending: dict[str, dict[str, Any]] = {}
    bar = _bar("timelines", engine, executor, total, progress)
    batches = _batches(items, results.is_done, batch_files or 1, pending,
                       summary, bar)
    try:
        for batch, records in executor.imap_unordered(batches):
            frames = []
            for record in records:
                item = pending.get(record["file"])
                if item is None or results.is_done(record["file"]):
                    continue  # a retried batch already written
                if record["error"] is not None:
                    summary.failures.append((record["file"], record["error"]))
                    continue
                rows = record["rows"].assign(**{k: item.get(k) for k in extras})
                frames.append(rows.reindex(columns=columns[3:]))
                summary.encoded += 1
                summary.audio_seconds += record["duration"]
            if frames:
                summary.result_came(started)
                results.add(number, pd.concat(frames))
                number += 1
            for file in batch:
                pending.pop(file, None)
            bar.update(len(batch))
            bar.set_postfix(failed=len(summary.failures), refresh=False)
    finally:
        bar.close()
        executor.close()
    results.close()
    summary.rows_written = results.rows_written
    summary.seconds = time.perf_counter() - started
    return summary


def _check_job(output: str | Path, fmt: str | None, engine: str, adapt: str
               ) -> tuple[Path, str]:
    """A job's output and its format, its engine and adaptation checked (ConfigError)."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt not in ("parquet", "csv", "json"):
        raise ConfigError(f"output format must be parquet, csv or json, not {fmt!r}")
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be local or ray, not {engine!r}")
    if adapt == "stream":
        raise ConfigError("--adapt stream follows the order of a stream, which a parallel "
                          "job does not keep: use batch (statistics per --group-by group) "
                          "or none")
    return output, fmt


def _start(model: ModelRef, adapt: str, engine: str, jobs: int | None,
           address: str | None, todo: int | None, work: Work,
           setup: Callable[[Recognizer], None] | None) -> tuple[Executor, Recognizer]:
    """The job's executor and the driver's recogniser. Workers start first: they load
    the model while this process loads its own."""
    if engine == "ray":
        executor: Executor | None = RayPool(model, adapt, jobs, address, work)
    else:
        jobs = jobs if jobs and jobs > 0 else auto_jobs(todo)
        executor = LocalPool(model, adapt, jobs, work) if jobs > 1 else None
    recognizer = load_recognizer(model, adapt)
    if setup is not None:
        setup(recognizer)
    return executor or InProcess(recognizer, work), recognizer


def _bar(what: str, engine: str, executor: Executor, total: int | None,
         progress: bool) -> Any:
    """The job's progress bar over input files (stderr)."""
    return tqdm(total=total, unit="file", desc=f"{what} ({engine}, {executor.workers} "
                f"worker{'s' if executor.workers > 1 else ''})", disable=not progress,
                dynamic_ncols=True, file=sys.stderr, smoothing=0.1)


def _batches(items: Iterator[dict[str, Any]], done: Callable[[str], bool], size: int,
             pending: dict[str, dict[str, Any]], summary: JobSummary, bar: Any
             ) -> Iterator[list[str]]:
    """Batches of ``size`` input files, each file once, skipping those ``done``; the
    items of files handed out are kept in ``pending`` (the driver pops them)."""
    seen: set[str] = set()
    batch: list[str] = []
    for item in items:
        file = str(item["file"])
        if file in seen:
            summary.duplicates += 1
            bar.update(1)
            continue
        seen.add(file)
        summary.files += 1
        if done(file):
            bar.update(1)
            continue
        pending[file] = item
        batch.append(file)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _peek(items: Iterable[dict[str, Any]]) -> tuple[Iterator[dict[str, Any]], list[str]]:
    """The items (whole again after a look at the first) and the first one's extra columns."""
    stream = iter(items)
    first = next(stream, None)
    extras = [k for k in (first or {}) if k != "file"]
    return (stream if first is None else itertools.chain([first], stream)), extras


def _grouper(group_by: str | None, extras: list[str]) -> Callable[[dict[str, Any]], str]:
    """The group of an item: its ``group_by`` column, its folder, or :data:`ALL`."""
    if group_by is None:
        return lambda item: ALL
    if group_by in extras:
        return lambda item: str(item.get(group_by))
    if group_by == "folder":
        return lambda item: str(Path(item["file"]).parent)
    raise ConfigError(f"--group-by {group_by}: no such input column (columns: "
                      f"{', '.join(extras) or 'none'}; 'folder' groups by folder)")


def _records_frame(records: list[Record], pending: dict[str, dict[str, Any]],
                   group_of: Callable[[dict[str, Any]], str], extras: list[str],
                   summary: JobSummary) -> pd.DataFrame:
    """The usable records of a batch with their group and extra columns; failures are
    counted in the summary."""
    rows = []
    for record in records:
        item = pending.get(record["file"])
        if item is None:  # a retried batch already stored: drop the duplicate
            continue
        if record["error"] is not None:
            summary.failures.append((record["file"], record["error"]))
            continue
        rows.append({**{k: v for k, v in record.items() if k != "error"},
                     "group": group_of(item), **{k: item.get(k) for k in extras}})
    return pd.DataFrame(rows, columns=["file", "duration", "basis", "plain", "features",
                                       "proba", "group", *extras])


def _rows(recognizer: Recognizer, frame: pd.DataFrame,
          stats: dict[str, FeatureStats] | None) -> pd.DataFrame:
    """Result rows of stored records (index ``file, start, end``; extras after ``basis``).

    Long recordings carry their final probabilities; the others go through the engine,
    standardised by their group's statistics when ``stats`` is given.
    """
    from emovox.inference.engine import Encoded
    from emovox.inference.rows import INDEX_NAMES, result_rows

    engine, classes = recognizer.engine, recognizer.classes
    extras = [c for c in frame.columns if c not in
              ("file", "duration", "basis", "plain", "features", "proba", "group")]
    frames = []
    final = frame["proba"].notna().to_numpy()

    def index(rows: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays(
            [rows["file"].astype(str), np.zeros(len(rows)), rows["duration"].astype(float)],
            names=list(INDEX_NAMES))

    if final.any():
        rows = frame[final]
        out = result_rows(np.stack(rows["proba"].to_list()), classes, index(rows),
                          recognizer.uncertain_below)
        frames.append((rows, out))
    for group, rows in frame[~final].groupby("group", sort=False):
        adapter = engine.adapter_for("batch")
        if stats is not None and adapter is not None:
            adapter.calibration = stats[str(group)]  # the group's own, fixed statistics
        features = (np.stack(rows["features"].to_list()) if rows["features"].notna().all()
                    else np.zeros((len(rows), 0), np.float32))
        plain = np.stack(rows["plain"].to_list()) if rows["plain"].notna().all() else None
        encoded = Encoded(features, plain, np.ones(len(rows), bool))
        frames.append((rows, engine.rows(encoded, index(rows), adapter)))
    parts = []
    for rows, out in frames:
        out = out.copy()
        out["basis"] = rows["basis"].to_numpy()
        for column in extras:
            out[column] = rows[column].to_numpy()
        parts.append(out)
    return pd.concat(parts)


def read_results(output: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """The result rows of a job (a Parquet folder, or a CSV/JSON file), flat."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt == "csv":
        return pd.read_csv(output)
    if fmt == "json":
        return pd.read_json(output, orient="records")
    parts = sorted(output.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
