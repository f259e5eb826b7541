"""Canonical emotion vocabulary and declarative label sets (task class definitions).

Corpus adapters translate their own codes into the canonical vocabulary; a
:class:`LabelSet` then maps canonical emotions (optionally crossed with gender)
onto the classes of a task. Rows whose emotion maps to nothing are dropped and
counted, never silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from emovox.errors import ConfigError

#: Every emotion name a corpus adapter may emit.
CANONICAL_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)

GENDERS: tuple[str, ...] = ("male", "female")


@dataclass(frozen=True)
class LabelSet:
    """A task's classes, each defined as a group of canonical emotions.

    Parameters
    ----------
    name : str
        Identifier, e.g. ``"common6"``.
    groups : Mapping[str, Sequence[str]]
        Class name -> canonical emotions it contains. Class order is the order here.
    by_gender : bool
        If true every class is split by speaker gender (``male_angry`` ...), and
        rows of unknown gender are dropped.
    description : str
        One line shown in tables and model cards.
    """

    name: str
    groups: Mapping[str, Sequence[str]]
    by_gender: bool = False
    description: str = ""
    _lookup: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[str, str] = {}
        if not self.groups:
            raise ConfigError(f"label set {self.name!r} defines no classes")
        for label, members in self.groups.items():
            if isinstance(members, str):
                raise ConfigError(
                    f"label set {self.name!r}: class {label!r} must list emotions, "
                    f"e.g. [{members!r}]"  # repr: a value from a file stays one line
                )
            for emotion in members:
                if emotion not in CANONICAL_EMOTIONS:
                    raise ConfigError(
                        f"label set {self.name!r}: unknown emotion {emotion!r} in class "
                        f"{label!r}; known: {', '.join(CANONICAL_EMOTIONS)}"
                    )
                if emotion in lookup:
                    raise ConfigError(
                        f"label set {self.name!r}: emotion {emotion!r} is in both "
                        f"{lookup[emotion]!r} and {label!r}"
                    )
                lookup[emotion] = label
        object.__setattr__(self, "_lookup", lookup)

    @property
    def classes(self) -> list[str]:
        """Class names in their fixed order."""
        if self.by_gender:
            return [f"{g}_{label}" for g in GENDERS for label in self.groups]
        return list(self.groups)

    def map_row(self, emotion: str, gender: str | None = None) -> str | None:
        """Class of one utterance, or ``None`` when the task does not use it."""
        label = self._lookup.get(emotion)
        if label is None:
            return None
        if self.by_gender:
            if gender not in GENDERS:
                return None
            return f"{gender}_{label}"
        return label

    def apply(self, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """Add a ``label`` column and drop rows the task does not use.

        Returns
        -------
        table : pd.DataFrame
            Kept rows (index reset), with ``label`` as an ordered categorical.
        dropped : dict
            Number of dropped rows per original emotion (or ``"unknown gender"``).
        """
        genders = table["gender"] if "gender" in table else pd.Series(None, index=table.index)
        labels = [
            self.map_row(e, g) for e, g in zip(table["emotion"], genders, strict=True)
        ]
        keep = pd.Series([label is not None for label in labels], index=table.index)
        dropped: dict[str, int] = {}
        for emotion, gender in zip(table.loc[~keep, "emotion"], genders[~keep], strict=True):
            reason = (
                "unknown gender"
                if self.by_gender and emotion in self._lookup and gender not in GENDERS
                else str(emotion)
            )
            dropped[reason] = dropped.get(reason, 0) + 1
        out = table.loc[keep].copy()
        out["label"] = pd.Categorical(
            [label for label in labels if label is not None], categories=self.classes
        )
        return out.reset_index(drop=True), dropped

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for YAML configs and model bundles."""
        return {
            "name": self.name,
            "classes": {k: list(v) for k, v in self.groups.items()},
            "by_gender": self.by_gender,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSet:
        """Build a label set from its plain-data form (see :meth:`to_dict`)."""
        if "classes" not in data:
            raise ConfigError("a label set needs 'classes': {class: [emotions, ...]}")
        classes = data["classes"]
        if isinstance(classes, list):  # shorthand: each emotion is its own class
            classes = {c: [c] for c in classes}
        if not isinstance(classes, Mapping):
            raise ConfigError("label set 'classes' must be a mapping or a list")
        return cls(
            name=str(data.get("name", "custom")),
            groups={str(k): list(v) if not isinstance(v, str) else v for k, v in classes.items()},
            by_gender=bool(data.get("by_gender", False)),
            description=str(data.get("description", "")),
        )


def _identity(*emotions: str) -> dict[str, list[str]]:
    return {e: [e] for e in emotions}


_FIVE = _identity("angry", "calm", "fearful", "happy", "sad")

BUILTIN_LABEL_SETS: dict[str, LabelSet] = {
    s.name: s
    for s in (
        LabelSet(
            "ravdess8",
            _identity("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                      "surprised"),
            description="the 8 RAVDESS emotions",
        ),
        LabelSet(
            "common6",
            _identity("angry", "disgust", "fearful", "happy", "neutral", "sad"),
            description="the 6 emotions common to RAVDESS, CREMA-D, TESS, SAVEE and EmoDB",
        ),
        LabelSet(
            "emodb7",
            _identity("angry", "boredom", "disgust", "fearful", "happy", "neutral", "sad"),
            description="the 7 EmoDB emotions",
        ),
        LabelSet("four", _identity("angry", "sad", "disgust", "happy"),
                 description="angry, sad, disgust, happy"),
        LabelSet("five", _FIVE, description="angry, calm, fearful, happy, sad"),
        LabelSet(
            "valence2",
            {"positive": ["happy", "calm"], "negative": ["angry", "fearful", "sad"]},
            description="valence: positive (happy, calm) / negative (angry, fearful, sad)",
        ),
        LabelSet(
            "valence3",
            {
                "positive": ["happy"],
                "neutral": ["calm", "neutral"],
                "negative": ["angry", "fearful", "sad"],
            },
            description="valence: positive / neutral (calm, neutral) / negative",
        ),
        LabelSet(
            "gender_emotion10",
            _FIVE,
            by_gender=True,
            description="gender x {angry, calm, fearful, happy, sad}: 10 classes",
        ),
        LabelSet(
            "all",
            _identity(*CANONICAL_EMOTIONS),
            description="every canonical emotion, unchanged",
        ),
    )
}


def get_label_set(spec: str | Mapping[str, Any] | LabelSet) -> LabelSet:
    """Resolve a label set from a built-in name, a YAML file path, or a mapping.

    Parameters
    ----------
    spec : str, Mapping or LabelSet
        ``"common6"`` (built-in name), ``"my_labels.yaml"`` (file with ``classes:``),
        or the mapping itself.
    """
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, Mapping):
        return LabelSet.from_dict(spec)
    if spec in BUILTIN_LABEL_SETS:
        return BUILTIN_LABEL_SETS[spec]
    path = Path(spec)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"{path}: label-set file not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: a label-set file must hold a mapping with 'classes'")
        data = {"name": path.stem, **data}
        return LabelSet.from_dict(data)
    raise ConfigError(
        f"unknown label set {spec!r}; built-in: {', '.join(BUILTIN_LABEL_SETS)}, "
        "or a path to a YAML file"
    )
