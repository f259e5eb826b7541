"""On-disk cache of features: one ``.npy`` per (audio file, extractor).

Layout::

    <root>/<extractor key>/spec.json                       # the extractor spec, for humans
    <root>/<extractor key>/<file key[:2]>/<file key>.npy   # features of one file

The file key hashes the file's identity (resolved absolute path, size, mtime in ns),
so an edited or replaced file misses the cache. Writes go to a temporary file in the
destination folder and are renamed into place (atomic on POSIX), so concurrent
workers and interrupted runs never leave a half-written entry under the final name;
an unreadable entry is treated as a miss and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from emovox.features.base import FEATURE_CODE_VERSION, FeatureExtractor
from emovox.fileio import atomic_write_stream

#: Environment variable overriding the default cache folder.
CACHE_ENV_VAR = "EMOVOX_CACHE"
_TMP_PREFIX = ".tmp-"


def default_cache_root() -> Path:
    """Return ``$EMOVOX_CACHE`` if set, else ``~/.cache/emovox/features``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "emovox" / "features"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """Interpret a ``cache_dir`` argument.

    Parameters
    ----------
    cache_dir : None, "default", str or Path
        ``None``: no cache; ``"default"``: :func:`default_cache_root`; else a folder.

    Returns
    -------
    Path or None
    """
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == "default":
        return default_cache_root()
    return Path(cache_dir).expanduser()


def file_key(path: str | Path) -> str:
    """Hash of a file's identity: resolved absolute path, size and mtime (ns).

    Raises
    ------
    OSError
        If the file cannot be stat'ed.
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    identity = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class FeatureCache:
    """Features of (file, extractor) pairs stored as ``.npy`` files under ``root``.

    Parameters
    ----------
    root : str or Path
        Cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    def extractor_dir(self, extractor: FeatureExtractor) -> Path:
        """Folder holding all entries of ``extractor``."""
        return self.root / extractor.key()

    def entry_path(self, extractor: FeatureExtractor, key: str) -> Path:
        """Path of the entry for file key ``key`` (see :func:`file_key`)."""
        return self.extractor_dir(extractor) / key[:2] / f"{key}.npy"

    def load(
        self, path: str | Path, extractor: FeatureExtractor, key: str | None = None
    ) -> np.ndarray | None:
        """Return the cached features of ``path``, or ``None`` on a miss.

        A missing file, a corrupt entry, or an entry of the wrong shape or dtype all
        count as misses. On a miss, an entry of the extractor's
        :meth:`~emovox.features.base.FeatureExtractor.cache_superset` answers instead
        (its columns; e.g. three encoder states out of an entry holding all five).

        Parameters
        ----------
        path : str or Path
            The audio file.
        extractor : FeatureExtractor
            Extractor whose features are wanted.
        key : str, optional
            Precomputed :func:`file_key` of ``path``.
        """
        try:
            key = key or file_key(path)
        except OSError:
            return None
        entry = self.entry_path(extractor, key)
        try:
            features = np.load(entry, allow_pickle=False)
        except Exception:  # absent, truncated or garbage: a miss (overwritten on save)
            features = None
        if (features is not None and features.shape == extractor.output_shape
                and features.dtype == np.float32):
            return features
        superset = extractor.cache_superset()
        if superset is None:
            return None
        whole = self.load(path, superset[0], key)
        return None if whole is None else np.ascontiguousarray(whole[superset[1]])

    def save(
        self,
        path: str | Path,
        extractor: FeatureExtractor,
        features: np.ndarray,
        key: str | None = None,
    ) -> Path:
        """Store ``features`` of ``path`` atomically; return the entry path.

        Parameters
        ----------
        path : str or Path
            The audio file.
        extractor : FeatureExtractor
            Extractor that computed ``features``.
        features : np.ndarray
            Stored as float32.
        key : str, optional
            :func:`file_key` of ``path`` taken *before* reading it, so a file changed
            during extraction is not cached under its new identity.
        """
        key = key or file_key(path)
        self.write_spec(extractor)
        entry = self.entry_path(extractor, key)
        array = np.ascontiguousarray(features, dtype=np.float32)
        atomic_write_stream(entry, lambda fh: np.save(fh, array, allow_pickle=False),
                            prefix=_TMP_PREFIX)
        return entry

    def write_spec(self, extractor: FeatureExtractor) -> None:
        """Write ``<root>/<key>/spec.json`` describing the extractor, if not there yet."""
        target = self.extractor_dir(extractor) / "spec.json"
        if target.exists():
            return
        text = json.dumps(
            {
                "key": extractor.key(),
                "spec": extractor.spec(),
                "feature_code_version": FEATURE_CODE_VERSION,
                "output_shape": list(extractor.output_shape),
            },
            indent=2,
        )
        atomic_write_stream(target, lambda fh: fh.write(text.encode() + b"\n"),
                            prefix=_TMP_PREFIX)
