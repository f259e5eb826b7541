"""EmoDB (Berlin Database of Emotional Speech): ``03a01Fa.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Adapter, Corpus, parse_files, register
from emovox.corpora.names import mostly_matching

NAME = "emodb"
_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")

#: Speaker -> gender (from the corpus documentation).
SPEAKERS: dict[str, str] = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}
#: Text codes of the ten sentences. The corpus uses a01, a02, a04, a05, a07, b01,
#: b02, b03, b09 and b10 (not a contiguous a01-a07/b01-b03 range).
TEXTS: frozenset[str] = frozenset(
    {"a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10"}
)
#: German emotion letter -> canonical emotion.
EMOTION: dict[str, str] = {
    "W": "angry",  # Ärger
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}


def parse_name(stem: str) -> dict:
    """Fields of an EmoDB file stem such as ``03a01Fa``.

    Parameters
    ----------
    stem : str
        File name without extension.

    Returns
    -------
    dict
        ``emotion``, ``speaker`` (``emodb:03``), ``gender``, ``text`` (``a01``) and
        ``version`` (``a``).

    Raises
    ------
    ValueError
        Naming the field that does not parse.
    """
    match = _NAME.match(stem)
    if not match:
        raise ValueError("name is not SPEAKER TEXT EMOTION VERSION like 03a01Fa")
    speaker, text, emotion, version = match.groups()
    if speaker not in SPEAKERS:
        raise ValueError(f"unknown speaker {speaker} (EmoDB has {', '.join(SPEAKERS)})")
    if text not in TEXTS:
        raise ValueError(f"unknown text code {text}")
    if emotion not in EMOTION:
        raise ValueError(f"unknown emotion letter {emotion} (expected one of W L E A F T N)")
    return {
        "emotion": EMOTION[emotion],
        "speaker": f"{NAME}:{speaker}",
        "gender": SPEAKERS[speaker],
        "text": text,
        "version": version,
    }


def load(root: Path) -> Corpus:
    """Read every EmoDB file under ``root``.

    Parameters
    ----------
    root : Path
        Corpus folder (``emodb/`` or ``emodb/wav/``).

    Returns
    -------
    Corpus
    """
    return parse_files(root, lambda path: parse_name(path.stem), NAME)


def detect(root: Path) -> bool:
    """A folder whose audio files mostly follow the EmoDB naming."""
    return mostly_matching(root, lambda p: bool(_NAME.match(p.stem)))


register(Adapter(NAME, detect, load))
