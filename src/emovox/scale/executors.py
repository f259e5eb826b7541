"""Where the per-file work runs: this process, a local process pool, or Ray actors.

Every executor runs the job's work (:func:`emovox.scale.work.encode_batch`, or a
:class:`~emovox.scale.work.TimelineWork`) in workers that load the model once (a
process initializer; a Ray actor's constructor), keeps a bounded number of batches in
flight (so the input is pulled as workers free up, never listed whole) and survives a
worker that dies: its batches are given to a new worker. Results come back to the
driver, the only writer, which drops a batch's records it already has (a batch retried
after a crash may have been done), so each file is written once.
"""

from __future__ import annotations

import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from emovox.scale.cluster import connect_ray
from emovox.scale.work import (
    ModelRef,
    PackedModel,
    Record,
    Work,
    encode_batch,
    load_recognizer,
)

Batch = list[str]
#: Batches in flight per worker: one running, one queued, so a worker never idles.
IN_FLIGHT_PER_WORKER = 2
#: Times a local pool is rebuilt after a worker died before the job gives up.
MAX_POOL_RESTARTS = 3


class Executor(ABC):
    """Runs batches of files through the job's work (default
    :func:`~emovox.scale.work.encode_batch`)."""

    #: Number of worker processes.
    workers: int = 1

    @abstractmethod
    def imap_unordered(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, list[Record]]]:
        """Each batch with its records, as they complete."""

    def pids(self) -> list[int]:
        """Process ids of the workers (this process for an in-process executor)."""
        return [os.getpid()]

    def close(self) -> None:  # noqa: B027 (nothing to stop in this process)
        """Stop the workers this executor started."""


class InProcess(Executor):
    """Runs batches here, with the driver's own recogniser (no start-up cost)."""

    def __init__(self, recognizer: Any, work: Work = encode_batch) -> None:
        self.recognizer, self.work = recognizer, work

    def imap_unordered(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, list[Record]]]:
        for batch in batches:
            yield batch, self.work(self.recognizer, batch)


# ----------------------------------------------------------------------------- local pool
_WORKER: dict[str, Any] = {}


def _init_local(model: ModelRef, adapt: str, parent: int, work: Work) -> None:
    """Process-pool initializer: load the model once; exit with the driver."""
    from emovox.features.extract import exit_with_parent

    exit_with_parent(parent)
    _WORKER["recognizer"] = load_recognizer(model, adapt)
    _WORKER["work"] = work


def _local_batch(batch: Batch) -> tuple[Batch, list[Record]]:
    return batch, _WORKER["work"](_WORKER["recognizer"], batch)


class LocalPool(Executor):
    """``jobs`` worker processes on this machine (spawned: no inherited threads)."""

    def __init__(self, model: ModelRef, adapt: str, jobs: int, work: Work = encode_batch
                 ) -> None:
        self.model, self.adapt, self.workers, self.work = model, adapt, jobs, work
        self.restarts = 0
        self._pool = self._start()

    def _start(self) -> Any:
        # loky (joblib's) rather than multiprocessing: spawned workers that never
        # re-run the caller's __main__, as the feature extraction's workers.
        from joblib.externals.loky import ProcessPoolExecutor

        pool = ProcessPoolExecutor(self.workers, initializer=_init_local,
                                   initargs=(self.model, self.adapt, os.getpid(), self.work))
        for _ in range(self.workers):  # start every worker now: they load while we do
            pool.submit(time.sleep, 0)
        return pool

    def pids(self) -> list[int]:
        return [p.pid for p in (self._pool._processes or {}).values()]

    def imap_unordered(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, list[Record]]]:
        pending: dict[Future, Batch] = {}
        retry: list[Batch] = []
        limit = IN_FLIGHT_PER_WORKER * self.workers
        exhausted = False
        while True:
            broken = False
            while len(pending) < limit and (retry or not exhausted):
                batch = retry.pop() if retry else next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                try:
                    pending[self._pool.submit(_local_batch, batch)] = batch
                except BrokenProcessPool:
                    retry.append(batch)
                    broken = True
                    break
            if pending and not broken:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = pending.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        retry.append(batch)
                        broken = True
            if broken:  # a worker died: every batch in flight goes to a new pool
                retry += list(pending.values())
                pending.clear()
                self.restarts += 1
                if self.restarts > MAX_POOL_RESTARTS:
                    raise RuntimeError(f"worker processes died {self.restarts} times; "
                                       "stopping (done files are kept: --resume goes on)")
                self._pool.shutdown(wait=False, kill_workers=True)
                self._pool = self._start()
            elif not pending:
                return

    def close(self) -> None:
        self._pool.shutdown(wait=True, kill_workers=True)


# ----------------------------------------------------------------------------- Ray
class _RayWorker:
    """A Ray actor holding one loaded model (the class is made remote lazily)."""

    def __init__(self, model: ModelRef, adapt: str, work: Work) -> None:
        self.recognizer, self.work = load_recognizer(model, adapt), work

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: Batch) -> tuple[Batch, list[Record]]:
        return batch, self.work(self.recognizer, batch)


class RayPool(Executor):
    """``workers`` Ray actors, one CPU each; an actor that dies is restarted by Ray and
    its batches retried (``max_restarts``/``max_task_retries``).

    A model folder is shipped to the actors through the object store (it is small: the
    encoder weights come from the emovox installation of each node).
    """

    def __init__(self, model: ModelRef, adapt: str, workers: int | None = None,
                 address: str | None = None, work: Work = encode_batch) -> None:
        ray = self.ray = connect_ray(address)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers is None or workers < 1:
            workers = cpus
        elif workers > cpus:  # an actor needs a CPU: more would wait for one forever
            warnings.warn(f"the Ray cluster has {cpus} CPU(s): running {cpus} worker(s), "
                          f"not {workers}", UserWarning, stacklevel=2)
            workers = cpus
        self.workers = workers
        if isinstance(model, str | os.PathLike):
            model = PackedModel.of(model)
        remote = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)(_RayWorker)
        # The model goes with each actor's arguments (not a shared object-store
        # reference, which a restarted actor could find gone: ray issue 53727).
        self.actors = [remote.remote(model, adapt, work) for _ in range(workers)]

    def pids(self) -> list[int]:
        return list(self.ray.get([actor.pid.remote() for actor in self.actors]))

    def imap_unordered(self, batches: Iterator[Batch]) -> Iterator[tuple[Batch, list[Record]]]:
        ray = self.ray
        load = dict.fromkeys(range(len(self.actors)), 0)
        pending: dict[Any, tuple[int, Batch]] = {}
        retry: list[Batch] = []
        exhausted = False
        while True:
            for actor in sorted(load, key=load.get):  # least busy first
                while load[actor] < IN_FLIGHT_PER_WORKER and (retry or not exhausted):
                    batch = retry.pop() if retry else next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    pending[self.actors[actor].run.remote(batch)] = (actor, batch)
                    load[actor] += 1
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, batch = pending.pop(ready[0])
            load[actor] -= 1
            try:
                yield ray.get(ready[0])
            except ray.exceptions.RayActorError:  # retries exhausted: another actor redoes it
                retry.append(batch)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
