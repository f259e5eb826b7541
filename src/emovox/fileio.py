"""Small helpers for writing results so that a reader never sees half of them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
