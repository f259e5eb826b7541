"""CSV/TSV manifests: one row per utterance with ``path``, ``emotion`` and optional fields.

Columns ``path`` and ``emotion`` are required; ``speaker``, ``gender`` and ``corpus``
are optional; every other column is kept as an extra. The delimiter follows the
extension (``.tsv``/``.tab``: tab, otherwise comma). Relative paths resolve against
the manifest's folder. Rows whose file is missing or whose emotion is not
recognised go to ``failures`` with their line number (the header is line 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emovox.corpora.base import (
    AUDIO_EXTENSIONS,
    REQUIRED_COLUMNS,
    Adapter,
    Corpus,
    make_table,
    register,
)
from emovox.corpora.names import known_emotion_names, normalise_emotion, normalise_gender
from emovox.errors import CorpusError

NAME = "manifest"
SUFFIXES: dict[str, str] = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
REQUIRED: tuple[str, ...] = ("path", "emotion")
OPTIONAL: tuple[str, ...] = ("speaker", "gender", "corpus")


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest as strings, with the known column names in lower case.

    Parameters
    ----------
    path : Path
        ``.csv`` or ``.tsv`` file.

    Returns
    -------
    pd.DataFrame
        All cells as ``str`` (empty cells are ``""``).

    Raises
    ------
    CorpusError
        When the file cannot be parsed or lacks a required column.
    """
    sep = SUFFIXES.get(path.suffix.lower(), ",")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise CorpusError(f"{path}: empty manifest (needs a header with path, emotion)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorpusError(f"{path}: cannot read manifest ({reason})") from None
    renamed = {}
    for column in frame.columns:
        key = str(column).strip()
        renamed[column] = key.lower() if key.lower() in REQUIRED + OPTIONAL else key
    frame = frame.rename(columns=renamed)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        delimiter = "tab" if sep == "\t" else "comma"
        raise CorpusError(
            f"{path}: manifest lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, frame.columns)) or 'none'}; {delimiter}-separated)"
        )
    return frame


def parse_row(row: dict, folder: Path) -> dict:
    """Utterance fields of one manifest row.

    Parameters
    ----------
    row : dict
        Column -> string value.
    folder : Path
        Folder relative paths are resolved against.

    Returns
    -------
    dict
        ``path`` (absolute), ``emotion``, ``speaker`` (prefixed with the corpus name
        unless it already is), ``gender``, ``corpus`` and the extra columns.

    Raises
    ------
    ValueError
        For a missing or non-audio file, an empty path or an unknown emotion.
    """
    raw_path = row["path"].strip()
    if not raw_path:
        raise ValueError("empty path")
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = folder / path
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"file not found: {raw_path}")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise ValueError(f"not an audio file soundfile reads: {raw_path}")
    emotion = normalise_emotion(row["emotion"])
    if emotion is None:
        raise ValueError(f"unknown emotion {row['emotion']!r}; known: {known_emotion_names()}")
    corpus = (row.get("corpus") or "").strip() or NAME
    speaker = (row.get("speaker") or "").strip() or "unknown"
    if not speaker.startswith(f"{corpus}:"):
        speaker = f"{corpus}:{speaker}"
    extras = {
        k: (v if v != "" else None)
        for k, v in row.items()
        if k not in REQUIRED_COLUMNS
    }
    return {
        "path": str(path),
        "emotion": emotion,
        "speaker": speaker,
        "gender": normalise_gender(row.get("gender")),
        "corpus": corpus,
        **extras,
    }


def parse_name(row: dict, folder: Path) -> dict:
    """Alias of :func:`parse_row` (adapters expose ``parse_name``; a manifest row is the name)."""
    return parse_row(row, folder)


def load(manifest: Path) -> Corpus:
    """Read the utterances listed in a manifest file.

    Parameters
    ----------
    manifest : Path
        ``.csv`` or ``.tsv`` file.

    Returns
    -------
    Corpus
        ``corpus`` is the row's ``corpus`` value when the manifest has one, else
        ``"manifest"``; ``gender`` is normalised (``M``/``F``/``male``/``female`` ...),
        other values become ``None``.

    Raises
    ------
    CorpusError
        When the manifest cannot be read or lacks ``path`` or ``emotion``.
    """
    manifest = Path(manifest)
    frame = read_manifest(manifest)
    folder = manifest.resolve().parent
    rows, failures = [], []
    first_line: dict[str, int] = {}
    for index, row in enumerate(frame.to_dict(orient="records")):
        line = index + 2  # header is line 1
        try:
            fields = parse_row(row, folder)
        except ValueError as error:
            failures.append((row["path"], f"{manifest.name} line {line}: {error}"))
            continue
        if fields["path"] in first_line:
            failures.append(
                (
                    fields["path"],
                    f"{manifest.name} line {line}: duplicate of line {first_line[fields['path']]}",
                )
            )
            continue
        first_line[fields["path"]] = line
        rows.append(fields)
    corpora = [r.pop("corpus") for r in rows]
    table = make_table(rows, NAME)
    if rows:
        order = {r["path"]: c for r, c in zip(rows, corpora, strict=True)}
        table["corpus"] = table["path"].map(order)
    return Corpus(table, failures)


def detect(path: Path) -> bool:
    """A ``.csv``/``.tsv`` file whose header has ``path`` and ``emotion`` columns."""
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return False
    sep = SUFFIXES[path.suffix.lower()]
    names = {c.strip().strip('"').strip().lower() for c in header.split(sep)}
    return all(c in names for c in REQUIRED)


register(Adapter(NAME, detect, load))
