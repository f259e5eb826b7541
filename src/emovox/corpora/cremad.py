"""CREMA-D: ``1001_DFA_ANG_XX.wav`` plus speaker demographics from VideoDemographics.csv."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from emovox.corpora.base import Adapter, Corpus, iter_audio_files, make_table, register
from emovox.corpora.names import mostly_matching
from emovox.errors import CorpusError

NAME = "crema-d"
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

#: Sentence code -> the sentence the actors read.
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTION: dict[str, str] = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
LEVEL: dict[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
_DEMOGRAPHIC_COLUMNS = ("ActorID", "Age", "Sex", "Race", "Ethnicity")
#: Actor ids of the full corpus.
ACTOR_RANGE = range(1001, 1092)


def parse_name(stem: str) -> dict:
    """Fields of a CREMA-D file stem such as ``1001_DFA_ANG_XX``.

    Parameters
    ----------
    stem : str
        File name without extension.

    Returns
    -------
    dict
        ``emotion``, ``speaker`` (``crema-d:1001``), ``actor``, ``sentence``,
        ``sentence_text``, ``level``. Gender is added by :func:`load` from the
        demographics table.

    Raises
    ------
    ValueError
        Naming the field that does not parse.
    """
    match = _NAME.match(stem)
    if not match:
        raise ValueError("name is not ACTOR_SENTENCE_EMOTION_LEVEL like 1001_DFA_ANG_XX")
    actor, sentence, emotion, level = match.groups()
    if int(actor) not in ACTOR_RANGE:
        raise ValueError(f"actor {actor} outside 1001-1091")
    if sentence not in SENTENCES:
        raise ValueError(f"unknown sentence code {sentence}")
    if emotion not in EMOTION:
        raise ValueError(f"unknown emotion code {emotion}")
    if level not in LEVEL:
        raise ValueError(f"unknown emotion level {level} (expected LO, MD, HI or XX)")
    return {
        "emotion": EMOTION[emotion],
        "speaker": f"{NAME}:{actor}",
        "actor": int(actor),
        "sentence": sentence,
        "sentence_text": SENTENCES[sentence],
        "level": LEVEL[level],
    }


def find_demographics(root: Path) -> Path | None:
    """VideoDemographics.csv in ``root`` or its parent (the audio sits in AudioWAV/)."""
    for folder in (root, root.parent):
        candidate = folder / DEMOGRAPHICS_FILE
        if candidate.is_file():
            return candidate
    return None


def read_demographics(path: Path) -> dict[int, dict]:
    """Actor id -> ``gender``, ``age``, ``race``, ``ethnicity`` from VideoDemographics.csv.

    Parameters
    ----------
    path : Path
        The CSV file (columns ActorID, Age, Sex, Race, Ethnicity).

    Returns
    -------
    dict

    Raises
    ------
    CorpusError
        When the file cannot be read or lacks a column.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CorpusError(f"{path}: cannot read demographics ({error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in _DEMOGRAPHIC_COLUMNS if c not in frame.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)}")
    result: dict[int, dict] = {}
    for row in frame.itertuples(index=False):
        try:
            actor = int(row.ActorID)
        except ValueError:
            continue
        sex = row.Sex.strip().lower()
        age = row.Age.strip()
        result[actor] = {
            "gender": sex if sex in ("male", "female") else None,
            "age": int(age) if age.isdigit() else None,
            "race": row.Race.strip() or None,
            "ethnicity": row.Ethnicity.strip() or None,
        }
    return result


def load(root: Path) -> Corpus:
    """Read every CREMA-D file under ``root`` (the corpus folder or its AudioWAV/).

    When ``root`` holds an ``AudioWAV`` folder only that folder is read (the full
    distribution also has AudioMP3/ with the same utterances). Gender, age, race
    and ethnicity come from VideoDemographics.csv in ``root`` or its parent; without
    it they are ``None``. A second file with the same name stem (another format of
    the same utterance) goes to ``failures``.

    Parameters
    ----------
    root : Path
        Corpus folder.

    Returns
    -------
    Corpus
    """
    audio_root = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    csv = find_demographics(root)
    demographics = read_demographics(csv) if csv else {}
    empty = {"gender": None, "age": None, "race": None, "ethnicity": None}
    rows, failures = [], []
    seen: dict[str, Path] = {}
    for path in iter_audio_files(audio_root):
        try:
            fields = parse_name(path.stem)
        except ValueError as error:
            failures.append((str(path), str(error)))
            continue
        if path.stem in seen:
            failures.append((str(path), f"duplicate utterance: same name as {seen[path.stem]}"))
            continue
        seen[path.stem] = path
        rows.append({"path": str(path), **fields, **demographics.get(fields["actor"], empty)})
    return Corpus(make_table(rows, NAME), failures)


def detect(root: Path) -> bool:
    """A folder whose audio files mostly follow the CREMA-D naming."""
    return mostly_matching(root, lambda p: bool(_NAME.match(p.stem)))


register(Adapter(NAME, detect, load))
