"""The cores this process may use, and work beside the calling thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def beside(function: Callable[..., T], *args: Any, thread_name: str = "emovox",
           **kwargs: Any) -> Future[T]:
    """Run ``function(*args, **kwargs)`` in a daemon thread; its result or error in the
    returned future.

    Not a :class:`~concurrent.futures.ThreadPoolExecutor`, whose work the interpreter
    waits for at exit: work given here stops at its caller's signal (a ``stop``
    event), and the caller waits for that, a block of work at most. Without that
    wait, an exit while the thread is inside ONNX Runtime aborted the process
    ("terminate called without an active exception").
    """
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as error:  # handed to whoever waits for the result
            future.set_exception(error)

    threading.Thread(target=run, name=thread_name, daemon=True).start()
    return future
