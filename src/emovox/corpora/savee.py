"""SAVEE (Surrey Audio-Visual Expressed Emotion): ``DC_a01.wav`` or ``DC/a01.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Adapter, Corpus, parse_files, register
from emovox.corpora.names import mostly_matching

NAME = "savee"
#: The four speakers, all male.
SPEAKERS: tuple[str, ...] = ("DC", "JE", "JK", "KL")
#: Emotion code -> canonical emotion ("sa"/"su" are tried before single letters).
EMOTION: dict[str, str] = {
    "sa": "sad",
    "su": "surprised",
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "n": "neutral",
}
_CODE = "sa|su|a|d|f|h|n"
_FLAT = re.compile(rf"^([A-Za-z]{{2}})_({_CODE})(\d{{1,3}})$")
_NESTED = re.compile(rf"^({_CODE})(\d{{1,3}})$")


def parse_name(stem: str, folder: str | None = None) -> dict:
    """Fields of a SAVEE file: ``DC_a01`` anywhere, or ``a01`` inside a speaker folder.

    Parameters
    ----------
    stem : str
        File name without extension.
    folder : str, optional
        Name of the folder holding the file (``DC`` in the ``DC/a01.wav`` layout).

    Returns
    -------
    dict
        ``emotion``, ``speaker`` (``savee:DC``), ``gender`` (``male``), ``take`` (int).

    Raises
    ------
    ValueError
        Naming what does not parse.
    """
    flat = _FLAT.match(stem)
    if flat:
        speaker, code, take = flat.groups()
        speaker = speaker.upper()
    else:
        nested = _NESTED.match(stem)
        if not nested:
            raise ValueError(
                "name is not SPEAKER_CODE+NUMBER like DC_a01 (or CODE+NUMBER like a01 "
                "in a speaker folder); codes: a d f h n sa su"
            )
        if folder is None or folder.upper() not in SPEAKERS:
            raise ValueError(
                f"name {stem} has no speaker and its folder {folder!r} is not one of "
                f"{', '.join(SPEAKERS)}"
            )
        speaker = folder.upper()
        code, take = nested.groups()
    if speaker not in SPEAKERS:
        raise ValueError(f"unknown speaker {speaker} (SAVEE has {', '.join(SPEAKERS)})")
    return {
        "emotion": EMOTION[code],
        "speaker": f"{NAME}:{speaker}",
        "gender": "male",
        "take": int(take),
    }


def load(root: Path) -> Corpus:
    """Read every SAVEE file under ``root`` (flat ``DC_a01`` or per-speaker folders).

    Parameters
    ----------
    root : Path
        Corpus folder.

    Returns
    -------
    Corpus
    """
    return parse_files(root, lambda path: parse_name(path.stem, path.parent.name), NAME)


def _matches(path: Path) -> bool:
    flat = _FLAT.match(path.stem)
    if flat:
        return flat.group(1).upper() in SPEAKERS
    return bool(_NESTED.match(path.stem)) and path.parent.name.upper() in SPEAKERS


def detect(root: Path) -> bool:
    """A folder whose audio files mostly follow either SAVEE layout."""
    return mostly_matching(root, _matches)


register(Adapter(NAME, detect, load))
