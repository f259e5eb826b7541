"""TESS (Toronto Emotional Speech Set): ``OAF_back_angry.wav`` in 14 speaker/emotion folders.

The folder names are not consistent (``OAF_Fear``, ``OAF_Pleasant_surprise``,
``YAF_pleasant_surprised`` ...) and a few public copies misname files (a speaker
prefix cut short, an emotion word that disagrees with the folder). The folder is
therefore authoritative for speaker and emotion; disagreements are kept, marked in
``name_mismatch`` and explained in ``name_issue``. Audio is decoded by content
elsewhere, so a ``.wav`` file that is really AIFF is fine here.
"""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Adapter, Corpus, parse_files, register
from emovox.corpora.names import mostly_matching, normalise_emotion

NAME = "tess"
#: Speaker -> age group (both speakers are women).
SPEAKERS: dict[str, str] = {"OAF": "older", "YAF": "younger"}
#: TESS spellings not in the shared synonym table.
EMOTION_EXTRA: dict[str, str] = {"ps": "surprised"}
_FOLDER = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)
_STRICT_NAME = re.compile(r"^(OAF|YAF)_[A-Za-z]+_[A-Za-z]+$")


def parse_folder(name: str) -> tuple[str, str] | None:
    """Speaker and canonical emotion of a TESS folder name, or ``None``.

    Parameters
    ----------
    name : str
        Folder name such as ``OAF_Pleasant_surprise`` or ``YAF_fear``.

    Returns
    -------
    tuple of (str, str) or None
        ``("OAF", "surprised")``; ``None`` when the name is not a TESS folder.
    """
    match = _FOLDER.match(name)
    if not match:
        return None
    emotion = normalise_emotion(match.group(2), extra=EMOTION_EXTRA)
    if emotion is None:
        return None
    return match.group(1).upper(), emotion


def parse_name(stem: str, folder: str | None = None) -> dict:
    """Fields of a TESS file, from its stem and (when given) its folder name.

    Parameters
    ----------
    stem : str
        File name without extension, e.g. ``OAF_back_angry``.
    folder : str, optional
        Name of the TESS folder holding the file, e.g. ``OAF_angry``. When it is a
        recognised TESS folder it decides speaker and emotion.

    Returns
    -------
    dict
        ``emotion``, ``speaker`` (``tess:OAF``), ``gender`` (``female``),
        ``age_group``, ``word``, ``name_mismatch`` (bool) and ``name_issue``
        (``None`` or what disagreed).

    Raises
    ------
    ValueError
        When neither the folder nor the name gives speaker, emotion and word.
    """
    parts = [p for p in stem.split("_") if p]
    name_speaker: str | None = None
    name_emotion: str | None = None
    emotion_word: str | None = None
    word: str | None = None
    if len(parts) >= 3:
        name_speaker, word, emotion_word = parts[0], "_".join(parts[1:-1]), parts[-1]
    elif len(parts) == 2:
        if parts[0].upper() in SPEAKERS:
            name_speaker, word = parts
        elif normalise_emotion(parts[1], EMOTION_EXTRA):
            word, emotion_word = parts
    if emotion_word is not None:
        name_emotion = normalise_emotion(emotion_word, EMOTION_EXTRA)
    if name_speaker is not None:
        name_speaker = name_speaker.upper()
    from_folder = parse_folder(folder) if folder else None
    issues = []
    if from_folder:
        speaker, emotion = from_folder
        if name_speaker != speaker:
            issues.append(f"speaker {name_speaker or '(missing)'} in name, {speaker} in folder")
        if name_emotion != emotion:
            issues.append(
                f"emotion {emotion_word or '(missing)'!r} in name, {emotion} from folder"
            )
    else:
        if name_speaker not in SPEAKERS:
            raise ValueError(
                f"speaker {name_speaker or '(missing)'} is not OAF or YAF and the folder "
                f"{folder!r} is not a TESS speaker_emotion folder"
            )
        if name_emotion is None:
            raise ValueError(
                f"emotion {emotion_word or '(missing)'!r} in name not recognised and the "
                f"folder {folder!r} is not a TESS speaker_emotion folder"
            )
        speaker, emotion = name_speaker, name_emotion
    if not word:
        raise ValueError("name is not SPEAKER_WORD_EMOTION like OAF_back_angry (no word)")
    return {
        "emotion": emotion,
        "speaker": f"{NAME}:{speaker}",
        "gender": "female",
        "age_group": SPEAKERS[speaker],
        "word": word,
        "name_mismatch": bool(issues),
        "name_issue": "; ".join(issues) or None,
    }


def _tess_folder(path: Path, root: Path) -> str | None:
    """Name of the nearest folder (up to and including ``root``) that is a TESS folder."""
    for folder in path.parents:
        if parse_folder(folder.name):
            return folder.name
        if folder == root:
            break
    return None


def load(root: Path) -> Corpus:
    """Read every TESS file under ``root`` (the corpus folder or one speaker_emotion folder).

    Parameters
    ----------
    root : Path
        Corpus folder.

    Returns
    -------
    Corpus
    """
    return parse_files(root, lambda path: parse_name(path.stem, _tess_folder(path, root)), NAME)


def detect(root: Path) -> bool:
    """A folder whose audio files mostly sit in TESS folders or follow TESS naming."""
    return mostly_matching(
        root,
        lambda p: parse_folder(p.parent.name) is not None or bool(_STRICT_NAME.match(p.stem)),
    )


register(Adapter(NAME, detect, load))
