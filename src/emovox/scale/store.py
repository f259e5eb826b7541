"""What a batch job keeps on disk: encoded records, group statistics and the results.

Layout (``STATE``: ``<output>/_work`` for a Parquet output, ``<output>.work`` beside a
CSV or JSON one)::

    STATE/encoded/part-000000.parquet   records of the files encoded (file, group,
                                        duration, basis, plain, proba, features, extras)
    STATE/stats.parquet                 statistics of each speaker/group (count, mean,
                                        var), from the stored features
    <output>/part-000000.parquet        result rows of encoded part 0 (Parquet output)

Every part is written whole or not at all (a temporary file renamed into place), by the
driver only; a part's files are never in another part, so each file is in the results
once. Readers of a Parquet output (``pandas.read_parquet(output)``) skip names starting
with ``_``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emovox.fileio import atomic_write_stream
from emovox.normalization import FeatureStats

#: Columns of the records holding vectors, and their Arrow element types.
VECTOR_COLUMNS = {"plain": "float64", "proba": "float64", "features": "float32",
                  "mean": "float64", "var": "float64"}
PART_GLOB = "part-*.parquet"


def state_dir(output: Path, fmt: str) -> Path:
    """Where a job writing ``output`` keeps its records and statistics."""
    return output / "_work" if fmt == "parquet" else output.with_name(output.name + ".work")


def part_name(number: int) -> str:
    """File name of part ``number``."""
    return f"part-{number:06d}.parquet"


def part_number(path: Path) -> int:
    """Number of a part file."""
    return int(path.stem.split("-")[1])


def _arrow(frame: pd.DataFrame) -> Any:
    """An Arrow table with fixed types: vectors as lists, text as strings."""
    import pyarrow as pa

    arrays, names = [], []
    for column in frame.columns:
        values = frame[column]
        if column in VECTOR_COLUMNS:
            kind = getattr(pa, VECTOR_COLUMNS[column])()
            array = pa.array([None if v is None else np.asarray(v).tolist() for v in values],
                             type=pa.list_(kind))
        elif values.dtype == object:
            array = pa.array(values.tolist(), type=pa.string())
        else:
            array = pa.array(values.to_numpy())
        arrays.append(array)
        names.append(str(column))
    return pa.Table.from_arrays(arrays, names=names)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` atomically as Parquet."""
    import pyarrow.parquet as pq

    table = _arrow(frame)
    atomic_write_stream(path, lambda stream: pq.write_table(table, stream))


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A part as a DataFrame (vector columns hold numpy arrays or None)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=list(columns) if columns else None).to_pandas()


def file_column(paths: Sequence[Path]) -> Iterator[str]:
    """The ``file`` values of parts, read column-only."""
    for path in paths:
        yield from read_parquet(path, ["file"])["file"].astype(str)


class EncodedStore:
    """The encoded records of a job, one Parquet part per batch written.

    Parameters
    ----------
    root : Path
        The job's state folder.
    fresh : bool
        Forget what an earlier run stored.
    """

    def __init__(self, root: Path, fresh: bool = False) -> None:
        self.root = root
        self.folder = root / "encoded"
        if fresh and root.exists():
            shutil.rmtree(root)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set(file_column(self.parts()))
        self.next = max((part_number(p) + 1 for p in self.parts()), default=0)

    def parts(self) -> list[Path]:
        """The part files, in the order they were written."""
        return sorted(self.folder.glob(PART_GLOB))

    def add(self, records: pd.DataFrame) -> int:
        """Store the records of files not stored yet; returns the part number (-1: none)."""
        records = records[~records["file"].isin(self.done)]
        if records.empty:
            return -1
        number = self.next
        write_parquet(self.folder / part_name(number), records)
        self.done.update(records["file"])
        self.next += 1
        return number

    def read(self, number: int) -> pd.DataFrame:
        """Part ``number``."""
        return read_parquet(self.folder / part_name(number))

    # ------------------------------------------------------------------ statistics
    def group_stats(self) -> dict[str, FeatureStats]:
        """Statistics of each group's stored features: read from ``stats.parquet`` when
        it covers every stored record, else computed part by part (no audio) and saved.
        """
        path = self.root / "stats.parquet"
        expected = self._count_with_features()
        if path.exists():
            table = read_parquet(path)
            if float(table["count"].sum()) == expected:
                return {str(r.group): FeatureStats(float(r.count), np.asarray(r.mean, float),
                                                   np.asarray(r.var, float))
                        for r in table.itertuples()}
        stats: dict[str, FeatureStats] = {}
        for part in self.parts():
            frame = read_parquet(part, ["group", "features"])
            frame = frame[frame["features"].notna()]
            for group, rows in frame.groupby("group", sort=False):
                part_stats = FeatureStats.of(np.stack(rows["features"].to_list()))
                old = stats.get(str(group))
                stats[str(group)] = part_stats if old is None else old.merged(part_stats)
        write_parquet(path, pd.DataFrame({
            "group": list(stats), "count": [s.count for s in stats.values()],
            "mean": [s.mean for s in stats.values()], "var": [s.var for s in stats.values()]}
        ))
        return stats

    def _count_with_features(self) -> float:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        total = 0
        for part in self.parts():
            column = pq.read_table(part, columns=["features"])["features"]
            total += len(column) - pc.sum(pc.is_null(column)).as_py()
        return float(total)


class ParquetResults:
    """Result rows as a partitioned Parquet dataset: results part k holds the rows of
    encoded part k, written once."""

    def __init__(self, folder: Path, fresh: bool = False) -> None:
        self.folder = folder
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder of Parquet parts")
        folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            for part in folder.glob(PART_GLOB):
                part.unlink()
        self.done: set[str] = set(file_column(sorted(folder.glob(PART_GLOB))))
        self.rows_written = 0

    def has_part(self, number: int) -> bool:
        """Whether the rows of encoded part ``number`` are written."""
        return (self.folder / part_name(number)).exists()

    def is_done(self, file: str) -> bool:
        """Whether ``file`` has its row."""
        return file in self.done

    def add(self, number: int, rows: pd.DataFrame) -> None:
        """Write the rows (index ``file, start, end``) of encoded part ``number``."""
        flat = rows.reset_index()
        write_parquet(self.folder / part_name(number), flat)
        self.done.update(flat["file"])
        self.rows_written += len(flat)

    def close(self) -> None:
        """Nothing is pending: every part is written when added."""


class TextResults:
    """Result rows in one CSV or JSON file (:class:`~emovox.timeline.ResultsFile`)."""

    def __init__(self, path: Path, fmt: str, columns: Sequence[str], fresh: bool,
                 complete: Callable[[str, pd.DataFrame], bool] | None = None) -> None:
        from emovox.timeline import ResultsFile

        self.file = ResultsFile(path, fmt, list(columns), resume=not fresh, complete=complete)
        self.added: set[str] = set()

    @property
    def done(self) -> set[str]:
        """Files with rows (found when the job started)."""
        return self.file.done

    @property
    def rows_written(self) -> int:
        """Rows written by this run."""
        return self.file.rows_written

    def has_part(self, number: int) -> bool:
        """Parts are not tracked in a text file: files are (:meth:`is_done`)."""
        return False

    def is_done(self, file: str) -> bool:
        """Whether ``file`` has its row."""
        return file in self.added or self.file.is_done(file)

    def add(self, number: int, rows: pd.DataFrame) -> None:
        """Append the rows (index ``file, start, end``)."""
        self.file.add(rows)
        self.added.update(rows.index.get_level_values(0))

    def close(self) -> None:
        """Write what is pending (JSON)."""
        self.file.close()
