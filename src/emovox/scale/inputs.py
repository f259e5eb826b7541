"""Inputs of a batch job, streamed: audio files, folders, glob patterns and manifests.

A manifest is a CSV/TSV or Parquet table with a path column (``path`` by default) and
any other columns, which are carried through to the results. It is read in chunks
(``MANIFEST_CHUNK_ROWS`` rows at a time), so a manifest of millions of rows never sits
in memory whole.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emovox.errors import ConfigError

#: Rows of a manifest read at a time.
MANIFEST_CHUNK_ROWS = 4096
#: Extensions read as manifests (the rest are audio files).
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
#: Column names an item uses itself (a manifest column of that name is refused).
RESERVED = ("file", "start", "end", "emotion", "confidence", "basis", "group", "seq")

Item = dict[str, Any]


def is_manifest(source: str | Path) -> bool:
    """Whether ``source`` names a manifest (by its extension) rather than audio."""
    return Path(source).suffix.lower() in MANIFEST_SUFFIXES


def is_glob(source: str | Path) -> bool:
    """Whether ``source`` is a glob pattern (``*``, ``?`` or ``[``) naming no existing file."""
    text = str(source)
    return any(c in text for c in "*?[") and not Path(text).exists()


def manifest_rows(path: str | Path) -> int | None:
    """Row count of a manifest, read cheaply (Parquet metadata; CSV lines), for the ETA."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as stream:  # newline count, without parsing: a few ms per 100k
        lines = sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 20), b""))
    return max(0, lines - 1)


def _normalised(chunk: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the chunk: numbers as float64, the rest as text
    (a column typed differently in two chunks would break a partitioned dataset)."""
    out = {}
    for column in chunk.columns:
        values = chunk[column]
        if pd.api.types.is_bool_dtype(values):
            out[column] = values.astype(object).where(values.notna(), None)
        elif pd.api.types.is_numeric_dtype(values):
            out[column] = values.astype(np.float64)
        else:
            out[column] = values.astype(object).where(values.notna(), None).map(
                lambda v: v if v is None else str(v))
    return pd.DataFrame(out, index=chunk.index)


def iter_manifest(path: str | Path, path_column: str = "path") -> Iterator[pd.DataFrame]:
    """Chunks of a manifest as DataFrames with a ``file`` column and the extra columns.

    Relative paths are taken relative to the manifest's folder.

    Raises
    ------
    ConfigError
        No ``path_column``, or an extra column named like a result column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        chunks: Iterable[pd.DataFrame] = (
            batch.to_pandas() for batch in parquet.iter_batches(MANIFEST_CHUNK_ROWS))
        columns = list(parquet.schema_arrow.names)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        columns = list(pd.read_csv(path, sep=sep, nrows=0).columns)
        chunks = pd.read_csv(path, sep=sep, chunksize=MANIFEST_CHUNK_ROWS, dtype=str,
                             keep_default_na=False, na_values=[""])
    if path_column not in columns:
        raise ConfigError(f"{path}: no {path_column!r} column (columns: {', '.join(columns)})")
    clash = sorted(set(columns) & set(RESERVED) - {path_column})
    if clash:
        raise ConfigError(f"{path}: columns {clash} are names of result columns; rename them")
    base = path.parent
    for chunk in chunks:
        files = chunk.pop(path_column).astype(str)
        files = files.map(lambda p: p if os.path.isabs(p) else str(base / p))
        chunk = _normalised(chunk)  # CSV values stay text: a chunk cannot guess types
        chunk.insert(0, "file", files.to_numpy())
        yield chunk


def iter_items(sources: Iterable[str | Path], path_column: str = "path",
               listed: Iterable[str] | None = None) -> Iterator[Item]:
    """Every input item, in order: ``{"file": path, **extra columns}``.

    Parameters
    ----------
    sources : iterable of str or Path
        Manifests (by extension) and glob patterns; other entries are audio files.
    path_column : str
        Path column of manifests.
    listed : iterable of str, optional
        Files already gathered by the caller (folders listed by
        :func:`emovox.corpora.base.list_audio_files`), yielded first.
    """
    for file in listed or ():
        yield {"file": str(file)}
    for source in sources:
        if is_manifest(source):
            for chunk in iter_manifest(source, path_column):
                yield from chunk.to_dict("records")
        elif is_glob(source):
            for file in glob.iglob(str(source), recursive=True):
                if os.path.isfile(file):
                    yield {"file": file}
        else:
            yield {"file": str(source)}
