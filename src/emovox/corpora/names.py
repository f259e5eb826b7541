"""Shared name handling for corpus adapters: emotion and gender synonyms, detection.

Every adapter that reads emotion *words* (TESS folders, folder-per-label trees,
manifests) normalises them here, so the same spelling means the same emotion
everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from emovox.corpora.base import iter_audio_files
from emovox.labels import CANONICAL_EMOTIONS

#: Spelling (lower case, words joined by ``_``) -> canonical emotion.
EMOTION_SYNONYMS: dict[str, str] = {
    **{name: name for name in CANONICAL_EMOTIONS},
    # nouns and adjectives
    "neutrality": "neutral",
    "calmness": "calm",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "fear": "fearful",
    "afraid": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "pleasantly_surprised": "surprised",
    "bored": "boredom",
    # three-letter codes common in manifests (CREMA-D, IEMOCAP style)
    "neu": "neutral",
    "hap": "happy",
    "ang": "angry",
    "fea": "fearful",
    "dis": "disgust",
    "sur": "surprised",
}

GENDER_SYNONYMS: dict[str, str] = {
    "male": "male",
    "m": "male",
    "man": "male",
    "female": "female",
    "f": "female",
    "woman": "female",
}

_SEPARATORS = re.compile(r"[\s\-]+")


def _key(name: object) -> str:
    return _SEPARATORS.sub("_", str(name).strip().lower()).strip("_")


def normalise_emotion(name: object, extra: dict[str, str] | None = None) -> str | None:
    """Canonical emotion for a label spelling, or ``None`` if it is not recognised.

    Parameters
    ----------
    name : object
        A label such as ``"Anger"``, ``"happiness"``, ``"Pleasant surprise"``; case,
        surrounding spaces and ``-``/space versus ``_`` do not matter.
    extra : dict, optional
        Corpus-specific spellings (already in lower case with ``_``), e.g.
        ``{"ps": "surprised"}`` for TESS, consulted before the shared synonyms.

    Returns
    -------
    str or None
        One of :data:`emovox.labels.CANONICAL_EMOTIONS`, or ``None``.
    """
    if name is None:
        return None
    key = _key(name)
    if extra and key in extra:
        return extra[key]
    return EMOTION_SYNONYMS.get(key)


def normalise_gender(value: object) -> str | None:
    """``"male"``, ``"female"`` or ``None`` for a gender spelling (``M``, ``Female``, ...).

    Parameters
    ----------
    value : object
        Gender as written in a manifest; empty or unrecognised values give ``None``.

    Returns
    -------
    str or None
    """
    if value is None:
        return None
    return GENDER_SYNONYMS.get(_key(value))


def known_emotion_names() -> str:
    """One-line list of accepted emotion names, for error messages."""
    synonyms = [k for k, v in EMOTION_SYNONYMS.items() if k != v and len(k) > 3]
    return f"{', '.join(CANONICAL_EMOTIONS)} (or synonyms: {', '.join(synonyms)})"


def mostly_matching(
    root: Path, predicate: Callable[[Path], bool], sample: int = 20
) -> bool:
    """Whether most of the first audio files under ``root`` satisfy ``predicate``.

    Parameters
    ----------
    root : Path
        Folder to look in (a file gives ``False``).
    predicate : callable
        Test applied to each audio file's path.
    sample : int
        Number of audio files (in sorted order) to examine.

    Returns
    -------
    bool
        True when at least one file was found and more than half of those
        examined match.
    """
    if not root.is_dir():
        return False
    paths = list(islice(iter_audio_files(root), sample))
    if not paths:
        return False
    return sum(bool(predicate(p)) for p in paths) * 2 > len(paths)
