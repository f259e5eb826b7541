"""Extracting features of many files: cache first, then the misses in parallel.

The unit of work is :func:`process_file`, a pure, idempotent function of
(file, extractor spec): it reads the cache, extracts on a miss and writes the entry.
:func:`extract_many` runs it over batches of files in joblib's loky worker processes
(the same function can be shipped to Ray or any other executor unchanged).
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from tqdm.auto import tqdm

from emovox.errors import AudioError, ConfigError
from emovox.features.base import FeatureExtractor, get_extractor
from emovox.features.cache import FeatureCache, file_key, resolve_cache_dir
from emovox.features.compose import Fused

# Extractors rebuilt from specs in this process, by key (cheap, but keeps one object).
_EXTRACTORS: dict[str, FeatureExtractor] = {}
#: Fewest files to extract per worker process: starting one (which imports the
#: feature code) costs more than a file takes, so a handful of files stays here.
MIN_FILES_PER_WORKER = 2
#: Seconds between a worker's checks that the process that started it is alive.
PARENT_CHECK_SECONDS = 0.5


def exit_with_parent(parent: int, interval: float = PARENT_CHECK_SECONDS) -> None:
    """Make this (worker) process exit as soon as process ``parent`` is gone.

    Run as a worker initializer: a daemon thread watches the parent pid, so workers
    and, through them, loky's resource tracker never outlive a killed run (SIGKILL
    runs no cleanup in the parent, and idle loky workers otherwise wait minutes).

    Parameters
    ----------
    parent : int
        Pid of the process that starts the workers (given by it, not read here: a
        parent killed while the worker was starting up has already been replaced).
    interval : float
        Seconds between checks.
    """

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:  # re-parented: the parent is gone
                os._exit(1)

    threading.Thread(target=watch, name="emovox-parent-watch", daemon=True).start()


@dataclass
class ExtractionResult:
    """Features of the files that worked, and why the others did not.

    Attributes
    ----------
    features : np.ndarray, float32, shape (n_ok, *output_shape)
        One row per successful file, in the order of the input paths.
    ok : np.ndarray of bool, shape (n_paths,)
        Which input paths have a row in ``features``.
    failures : list of (str, str)
        ``(path, one-line reason)`` for every failed file, in input order.
    seconds : float
        Wall-clock time of the call.
    n_cached : int
        How many files came from the cache.
    paths : list of str
        The input paths, as given.
    """

    features: np.ndarray
    ok: np.ndarray
    failures: list[tuple[str, str]]
    seconds: float
    n_cached: int = 0
    paths: list[str] = field(default_factory=list)

    @property
    def ok_paths(self) -> list[str]:
        """Paths of the rows of ``features``."""
        return [p for p, good in zip(self.paths, self.ok, strict=True) if good]


def process_file(
    path: str | Path,
    extractor: FeatureExtractor | str | Mapping[str, Any],
    cache_dir: str | Path | None = None,
    *,
    read_cache: bool = True,
) -> np.ndarray:
    """Features of one file, through the cache.

    A pure function of (file, extractor spec): safe to run in any process, any
    number of times (the cache write is atomic and idempotent).

    Parameters
    ----------
    path : str or Path
        Audio file.
    extractor : FeatureExtractor, str or dict
        Extractor or its spec.
    cache_dir : None, "default", str or Path
        Cache folder (see :func:`~emovox.features.cache.resolve_cache_dir`).
    read_cache : bool
        Look the file up first (``False`` when the caller already knows it is a miss).

    Returns
    -------
    np.ndarray, float32, shape ``extractor.output_shape``

    Raises
    ------
    AudioError
        Unreadable or unusable audio; other exceptions from feature code propagate.
    """
    ext = _extractor(extractor)
    root = resolve_cache_dir(cache_dir)
    cache = FeatureCache(root) if root is not None else None
    key = None
    if cache is not None:
        try:
            key = file_key(path)  # identity before reading: a file changed meanwhile misses
        except OSError:
            key = None  # missing file: extract_file raises a clear AudioError below
        if read_cache and key is not None:
            hit = cache.load(path, ext, key)
            if hit is not None:
                return hit
    features = ext.extract_file(path)
    if cache is not None and key is not None:
        try:
            cache.save(path, ext, features, key)
        except OSError as error:  # a full or read-only cache must not lose the result
            warnings.warn(f"could not write feature cache under {cache.root}: {error}",
                          RuntimeWarning, stacklevel=2)
    return features


def extract_many(
    paths: Iterable[str | Path],
    extractor: FeatureExtractor | str | Mapping[str, Any],
    cache_dir: str | Path | None = None,
    n_jobs: int = -1,
    progress: bool = True,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
) -> ExtractionResult:
    """Extract features of many files, using and filling the cache, in parallel.

    Cached files are read in this process; the others are extracted in batches by
    joblib's loky worker processes, which also write their cache entries. A file that
    fails is recorded in ``failures`` and the others go on.

    Parameters
    ----------
    paths : iterable of str or Path
        Audio files.
    extractor : FeatureExtractor, str or dict
        Extractor or its spec.
    cache_dir : None, "default", str or Path
        ``None``: no cache; ``"default"``: ``$EMOVOX_CACHE`` or
        ``~/.cache/emovox/features``; else the cache folder.
    n_jobs : int
        Worker processes, joblib-style (-1: all cores). 1 runs everything in this
        process, without any worker.
    progress : bool
        Show a tqdm progress bar over files.
    batch_size : int
        Most files per worker task (tasks are made smaller when there are few files,
        so every worker gets several).
    engine : {"local", "ray"}
        ``local``: loky processes on this machine; ``ray``: the same batches as Ray
        tasks on the cluster at ``address`` (a new one on this machine without it).
        On a cluster, every node must see the audio and the cache folder at the same
        paths (a shared file system); ``n_jobs`` is then the cluster's business.
    address : str, optional
        Ray cluster address (``HOST:PORT``), with ``engine="ray"``.

    Returns
    -------
    ExtractionResult
    """
    start = time.perf_counter()
    ext = get_extractor(extractor)
    path_list = [str(p) for p in paths]
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(ext, Fused):
        return _extract_fused(ext, path_list, cache_dir, n_jobs, progress, batch_size, start,
                              engine, address)
    root = resolve_cache_dir(cache_dir)
    cache = FeatureCache(root) if root is not None else None

    results: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    misses: list[int] = []
    for index, path in enumerate(path_list):
        hit = cache.load(path, ext) if cache is not None else None
        if hit is None:
            misses.append(index)
        else:
            results[index] = hit
    n_cached = len(results)

    n_workers = min(joblib.effective_n_jobs(n_jobs), len(misses) // MIN_FILES_PER_WORKER)
    if engine == "ray" and misses:
        n_workers = 0  # the cluster's workers, below
    with tqdm(
        total=len(path_list), initial=n_cached, desc=ext.name, unit="file",
        disable=not progress, dynamic_ncols=True,
    ) as bar:
        if engine == "ray" and misses:
            batches = [[(i, path_list[i]) for i in misses[k:k + batch_size]]
                       for k in range(0, len(misses), batch_size)]
            for batch_results in _ray_batches(batches, ext, root, address):
                for i, features, reason in batch_results:
                    _collect(i, features, reason, results, errors)
                bar.update(len(batch_results))
        elif n_workers <= 1:
            for index in misses:
                for i, features, reason in _process_batch(
                    [(index, path_list[index])], ext.spec(), root
                ):
                    _collect(i, features, reason, results, errors)
                bar.update(1)
        else:
            ext.warm_up()  # compile/cache numba code once, before workers start
            chunk = max(1, min(batch_size, math.ceil(len(misses) / (4 * n_workers))))
            batches = [
                [(i, path_list[i]) for i in misses[k : k + chunk]]
                for k in range(0, len(misses), chunk)
            ]
            parallel = joblib.Parallel(
                n_jobs=n_workers, backend="loky", return_as="generator_unordered",
                initializer=exit_with_parent, initargs=(os.getpid(),),
            )
            spec, module = ext.spec(), type(ext).__module__
            try:
                for batch_results in parallel(
                    joblib.delayed(_process_batch)(batch, spec, root, module) for batch in batches
                ):
                    for i, features, reason in batch_results:
                        _collect(i, features, reason, results, errors)
                    bar.update(len(batch_results))
            except BrokenProcessPool as error:
                raise RuntimeError(
                    f"a feature worker process died while extracting {ext.name} "
                    f"({type(error).__name__}); files finished so far are cached, so a "
                    "re-run resumes. A crash (segfault) in librosa code can come from a "
                    "corrupt numba cache: delete the *.nbi/*.nbc files in librosa's "
                    "__pycache__ folders, or try n_jobs=1 to find the file."
                ) from error

    ok = np.zeros(len(path_list), dtype=bool)
    ok[list(results)] = True
    features = np.empty((int(ok.sum()), *ext.output_shape), dtype=np.float32)
    for row, index in enumerate(np.flatnonzero(ok)):
        features[row] = results[int(index)]
    failures = [(path_list[i], errors[i]) for i in sorted(errors)]
    return ExtractionResult(
        features=features,
        ok=ok,
        failures=failures,
        seconds=time.perf_counter() - start,
        n_cached=n_cached,
        paths=path_list,
    )


def _extract_fused(ext: Fused, paths: list[str], cache_dir: str | Path | None, n_jobs: int,
                   progress: bool, batch_size: int, start: float, engine: str = "local",
                   address: str | None = None) -> ExtractionResult:
    """Each part through the cache on its own, then concatenated on the files all parts have."""
    parts = [extract_many(paths, part, cache_dir, n_jobs, progress, batch_size, engine,
                          address) for part in ext.extractors]
    ok = np.logical_and.reduce([part.ok for part in parts])
    # A part's rows are its ok files; keep those every part has, in input order.
    columns = [part.features[ok[part.ok]] for part in parts]
    reasons: dict[str, str] = {}
    for part in parts:
        for path, reason in part.failures:
            reasons.setdefault(path, reason)
    return ExtractionResult(
        features=np.concatenate(columns, axis=1).astype(np.float32, copy=False),
        ok=ok,
        failures=[(p, reasons[p]) for p in paths if p in reasons],
        seconds=time.perf_counter() - start,
        n_cached=min(part.n_cached for part in parts),
        paths=paths,
    )


def _ray_batches(batches: list[list[tuple[int, str]]], ext: FeatureExtractor,
                 root: Path | None, address: str | None
                 ) -> Iterator[list[tuple[int, np.ndarray | None, str | None]]]:
    """:func:`_process_batch` of every batch as a Ray task (one CPU each), as they finish.

    Ray retries a task whose worker died; a worker process keeps its loaded encoder for
    the next task, so the model loads once per worker.
    """
    from emovox.scale.cluster import connect_ray

    ray = connect_ray(address)
    task = ray.remote(num_cpus=1, max_retries=3)(_process_batch)
    spec, module = ext.spec(), type(ext).__module__
    pending = [task.remote(batch, spec, root, module) for batch in batches]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def _process_batch(
    batch: Sequence[tuple[int, str]],
    spec: dict[str, Any],
    cache_root: Path | None,
    module: str | None = None,
) -> list[tuple[int, np.ndarray | None, str | None]]:
    """Run :func:`process_file` over ``(index, path)`` pairs, catching per-file errors.

    ``module`` defines the extractor class: importing it registers the extractor in a
    fresh worker process.
    """
    if module:
        importlib.import_module(module)
    out: list[tuple[int, np.ndarray | None, str | None]] = []
    for index, path in batch:
        try:
            features = process_file(path, spec, cache_root, read_cache=False)
        except Exception as error:  # one bad file must not stop the batch
            out.append((index, None, failure_reason(path, error)))
        else:
            out.append((index, features, None))
    return out


def _collect(
    index: int,
    features: np.ndarray | None,
    reason: str | None,
    results: dict[int, np.ndarray],
    errors: dict[int, str],
) -> None:
    if features is None:
        errors[index] = reason or "unknown error"
    else:
        results[index] = features


def failure_reason(path: str | Path, error: BaseException) -> str:
    """One-line description of why ``path`` failed, naming the file.

    Parameters
    ----------
    path : str or Path
        The file.
    error : BaseException
        What was raised.

    Returns
    -------
    str
    """
    if isinstance(error, AudioError) and error.source == str(path):
        text = str(error)  # already "<path>: <problem>"
    else:
        detail = str(error).strip() or "(no message)"
        text = f"{path}: {type(error).__name__}: {detail}"
    return " ".join(text.split())


def _extractor(spec: FeatureExtractor | str | Mapping[str, Any]) -> FeatureExtractor:
    if isinstance(spec, FeatureExtractor):
        return spec
    ext = get_extractor(spec)
    return _EXTRACTORS.setdefault(ext.key(), ext)
