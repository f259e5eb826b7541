"""Writing results so that a reader never sees half of them: the one place for atomic
file and folder writes.

A file is written to a temporary name in its own folder and renamed into place
(:func:`os.replace` is atomic on one file system); a folder is built beside its target
and moved into place whole. A killed writer leaves at most a hidden temporary file or
folder, never a truncated result.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_folder", "atomic_write", "atomic_write_stream", "atomic_write_text",
           "replace_folder"]


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], object],
                 prefix: str | None = None) -> Path:
    """Create ``target`` atomically: ``write`` fills a temporary file, then it is renamed.

    Parameters
    ----------
    target : str or PathLike
        The file to write (its folder is created if needed).
    write : callable
        Called with the temporary file's path; writes the whole content there.
    prefix : str, optional
        Name prefix of the temporary file (default ``.<name>.``: hidden).

    Returns
    -------
    Path
        ``target``, readable by everyone (0644), as a shared result should be.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=prefix or f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_stream(target: str | os.PathLike[str], write: Callable[[IO[bytes]], object],
                        prefix: str | None = None) -> Path:
    """:func:`atomic_write` for writers that take an open binary stream."""
    def to_path(tmp: Path) -> None:
        with tmp.open("wb") as stream:
            write(stream)

    return atomic_write(target, to_path, prefix)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], replace: bool = True) -> Iterator[Path]:
    """Build a folder beside ``target`` and move it into place only when complete.

    Parameters
    ----------
    target : str or PathLike
        The folder to create.
    replace : bool
        Replace an existing ``target`` (see :func:`replace_folder`); otherwise it must
        not exist.

    Yields
    ------
    Path
        The work folder to fill (readable by everyone).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; results are meant to be shared
    try:
        yield work
        if replace:
            replace_folder(work, target)
        else:
            os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def replace_folder(work: Path, target: Path) -> None:
    """Move a completed folder ``work`` to ``target``, replacing any old ``target``.

    The old folder is renamed aside first and removed only once the new one is in
    place, so ``target`` is always either the complete old or the complete new folder.
    """
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(work, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, target)

