"""Folder-per-label corpora: ``root/<label>/*.wav`` or ``root/<label>/<speaker>/*.wav``.

Label folder names are normalised with :func:`~emovox.corpora.names.normalise_emotion`
(``Anger``, ``happiness``, ``fear``, ``bored`` ... are accepted). Files in a folder
that is not an emotion name, or not inside a label folder at all, go to ``failures``.
Without speaker sub-folders every file gets the speaker ``folder:unknown`` (and a
``note`` saying so), so speaker-disjoint protocols correctly refuse to split it.
"""

from __future__ import annotations

from pathlib import Path

from emovox.corpora.base import Adapter, Corpus, iter_audio_files, make_table, register
from emovox.corpora.names import known_emotion_names, normalise_emotion

NAME = "folder"
UNKNOWN_SPEAKER = f"{NAME}:unknown"
NO_SPEAKER_NOTE = "no speaker sub-folder: speaker unknown"


def parse_name(relative: Path) -> dict:
    """Fields of a file from its path relative to the corpus root.

    Parameters
    ----------
    relative : Path
        ``<label>/<file>`` or ``<label>/<speaker>/.../<file>``.

    Returns
    -------
    dict
        ``emotion``, ``speaker`` (``folder:<speaker>`` or ``folder:unknown``),
        ``gender`` (``None``), ``label_folder`` (the folder name as written) and
        ``note`` (``None``, or why the speaker is unknown).

    Raises
    ------
    ValueError
        When the file is not inside a label folder or the folder is not an emotion.
    """
    parts = relative.parts
    if len(parts) < 2:
        raise ValueError("file is not inside a label folder (expected root/<label>/<file>)")
    label = parts[0]
    emotion = normalise_emotion(label)
    if emotion is None:
        raise ValueError(
            f"label folder {label!r} is not a known emotion name; known: {known_emotion_names()}"
        )
    if len(parts) >= 3:
        speaker, note = f"{NAME}:{parts[1]}", None
    else:
        speaker, note = UNKNOWN_SPEAKER, NO_SPEAKER_NOTE
    return {
        "emotion": emotion,
        "speaker": speaker,
        "gender": None,
        "label_folder": label,
        "note": note,
    }


def load(root: Path) -> Corpus:
    """Read a folder-per-label corpus.

    Parameters
    ----------
    root : Path
        Folder whose sub-folders are emotion names.

    Returns
    -------
    Corpus
    """
    rows, failures = [], []
    for path in iter_audio_files(root):
        try:
            rows.append({"path": str(path), **parse_name(path.relative_to(root))})
        except ValueError as error:
            failures.append((str(path), str(error)))
    return Corpus(make_table(rows, NAME), failures)


def detect(root: Path) -> bool:
    """A folder where most sub-folders holding audio are named after an emotion."""
    if not root.is_dir():
        return False
    with_audio = [
        child
        for child in root.iterdir()
        if child.is_dir() and next(iter_audio_files(child), None) is not None
    ]
    named = [child for child in with_audio if normalise_emotion(child.name)]
    return bool(named) and len(named) * 2 >= len(with_audio)


register(Adapter(NAME, detect, load))
