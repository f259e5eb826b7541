"""The utterance table every corpus adapter returns, and the adapter registry."""

from __future__ import annotations

import errno
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from emovox.errors import CorpusError

#: Columns every utterance table has, in this order; adapters add extras after them.
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "emotion", "speaker", "gender", "corpus")

#: File extensions soundfile can decode (lower case, with the dot).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    "." + ext.lower() for ext in sf.available_formats()
) | {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}


@dataclass
class Corpus:
    """An utterance table plus the files that could not be parsed.

    Attributes
    ----------
    table : pd.DataFrame
        One row per utterance: ``path, emotion, speaker, gender, corpus`` and extras.
        ``speaker`` is prefixed with the corpus name (``ravdess:01``) so speakers of
        different corpora never collide.
    failures : list of (str, str)
        ``(path, reason)`` for every audio file the adapter found but could not parse.
    """

    table: pd.DataFrame
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __add__(self, other: Corpus) -> Corpus:
        table = pd.concat([self.table, other.table], ignore_index=True, sort=False)
        return Corpus(table, self.failures + other.failures)


def make_table(rows: list[dict], corpus: str) -> pd.DataFrame:
    """Build an utterance table from row dicts, with the required columns first."""
    if not rows:
        return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    table = pd.DataFrame(rows)
    table["corpus"] = corpus
    extras = [c for c in table.columns if c not in REQUIRED_COLUMNS]
    table = table[list(REQUIRED_COLUMNS) + extras]
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def corpus_of(speakers: np.ndarray) -> np.ndarray:
    """The corpus of each speaker id (``"emodb:03"`` -> ``"emodb"``; the part before the
    first colon, the whole id when it has none).

    Parameters
    ----------
    speakers : array-like, shape (n,)

    Returns
    -------
    np.ndarray of str, shape (n,)
    """
    return np.array([str(s).split(":", 1)[0] for s in np.asarray(speakers)])


@dataclass
class AudioListing:
    """The audio files found under a folder, and what was left out and why.

    Attributes
    ----------
    files : list of Path
        Files taken, sorted: an audio extension, or content soundfile decodes.
    skipped : list of (Path, str)
        Everything else met on the way, with a short reason (``"not audio"``,
        ``"symlink loop"``, ``"broken symlink"``, ``"unreadable folder"``).
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _is_audio(path: Path) -> bool:
    """Taken into a folder listing: an audio extension, or a header soundfile reads.

    A file named like audio is kept even when broken, so the batch reports why it
    failed; other files are probed, so a misnamed recording (an MP3 saved as .m4a)
    is predicted as it would be when given alone.
    """
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return True
    try:
        info = sf.info(str(path))
    except Exception:  # any decoder complaint means "not audio"
        return False
    return info.frames > 0


def _link_problem(error: OSError, otherwise: str) -> str:
    return "symlink loop" if error.errno == errno.ELOOP else otherwise


def list_audio_files(root: Path) -> AudioListing:
    """Every audio file under ``root`` (recursively, following symlinks), sorted.

    The one place that decides which files of a folder are audio (see
    :func:`_is_audio`); symlinks are followed, each real folder once, so a link
    back up the tree is reported as a loop instead of recursing forever.

    Parameters
    ----------
    root : Path
        Folder to walk.

    Returns
    -------
    AudioListing
    """
    listing = AudioListing()
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        try:
            stat = folder.stat()
            entries = sorted(folder.iterdir())
        except OSError as error:
            listing.skipped.append((folder, _link_problem(error, "unreadable folder")))
            return
        if (stat.st_dev, stat.st_ino) in seen:
            listing.skipped.append((folder, "symlink loop"))
            return
        seen.add((stat.st_dev, stat.st_ino))
        for path in entries:
            try:
                mode = path.stat().st_mode
            except OSError as error:  # a dangling link, or links pointing at each other
                listing.skipped.append((path, _link_problem(error, "broken symlink")))
                continue
            if stat_module.S_ISDIR(mode):
                walk(path)
            elif not stat_module.S_ISREG(mode):
                listing.skipped.append((path, "not a regular file"))
            elif _is_audio(path):
                listing.files.append(path)
            else:
                listing.skipped.append((path, "not audio"))

    walk(Path(root))
    listing.files.sort()
    return listing


def iter_audio_files(root: Path) -> Iterator[Path]:
    """Every audio file under ``root``, sorted (see :func:`list_audio_files`)."""
    yield from list_audio_files(root).files


def parse_files(root: Path, parse: Callable[[Path], dict], corpus: str) -> Corpus:
    """Parse every audio file under ``root`` with ``parse(path) -> fields``.

    A file whose ``parse`` raises ValueError is reported in ``failures`` with the
    reason, never silently dropped.
    """
    rows, failures = [], []
    for path in iter_audio_files(root):
        try:
            rows.append({"path": str(path), **parse(path)})
        except ValueError as error:
            failures.append((str(path), str(error)))
    return Corpus(make_table(rows, corpus), failures)


@dataclass(frozen=True)
class Adapter:
    """A corpus reader: a name, a detector and a loader."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path], Corpus]


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Add an adapter to the registry; :func:`detect_corpus` tries them in this order."""
    _REGISTRY[adapter.name] = adapter
    return adapter


def adapters() -> dict[str, Adapter]:
    """Registered adapters by name."""
    return dict(_REGISTRY)


def detect_corpus(path: Path) -> str:
    """Name of the adapter that recognises ``path``; raises CorpusError if none does."""
    for adapter in _REGISTRY.values():
        if adapter.detect(path):
            return adapter.name
    raise CorpusError(
        f"{path}: cannot tell which corpus this is; pass its kind explicitly "
        f"(one of {', '.join(_REGISTRY)})"
    )


def load_corpus(path: str | Path, kind: str | None = None) -> Corpus:
    """Read a corpus folder (or manifest file) into a :class:`Corpus`.

    Parameters
    ----------
    path : str or Path
        Corpus root folder, or a CSV/TSV manifest.
    kind : str, optional
        Adapter name (``ravdess``, ``crema-d``, ``tess``, ``savee``, ``emodb``,
        ``folder``, ``manifest``); detected from the content when omitted.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    kind = kind or detect_corpus(path)
    if kind not in _REGISTRY:
        raise CorpusError(f"unknown corpus kind {kind!r}; known: {', '.join(_REGISTRY)}")
    corpus = _REGISTRY[kind].load(path)
    if corpus.table.empty:
        raise CorpusError(
            f"{path}: no utterances found as {kind} "
            f"({len(corpus.failures)} files could not be parsed)"
        )
    return corpus


def load_corpora(specs: Iterable[str | Path | tuple[str | Path, str | None]]) -> Corpus:
    """Read several corpora into one table (see :func:`load_corpus`)."""
    result: Corpus | None = None
    for spec in specs:
        path, kind = spec if isinstance(spec, tuple) else (spec, None)
        corpus = load_corpus(path, kind)
        result = corpus if result is None else result + corpus
    if result is None:
        raise CorpusError("no corpus given")
    return result
