"""Logging helpers shared by modules that call chatty libraries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Errors only on the root logger for the duration.

    ONNX Runtime's quantisation logs its advice (run pre-processing first) on the root
    logger on every call; a user has nothing to do about it.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
