"""RAVDESS speech and song: every field of ``03-01-05-02-01-02-12.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from emovox.corpora.base import Adapter, Corpus, iter_audio_files, parse_files, register

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
MODALITY = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
CHANNEL = {"01": "speech", "02": "song"}
EMOTION = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITY = {"01": "normal", "02": "strong"}
STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def parse_name(stem: str) -> dict:
    """Fields of a RAVDESS file stem; raises ValueError naming the bad field."""
    match = _NAME.match(stem)
    if not match:
        raise ValueError("name is not 7 two-digit fields like 03-01-05-02-01-02-12")
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    for value, table, field in (
        (modality, MODALITY, "modality"),
        (channel, CHANNEL, "vocal channel"),
        (emotion, EMOTION, "emotion"),
        (intensity, INTENSITY, "intensity"),
        (statement, STATEMENT, "statement"),
    ):
        if value not in table:
            raise ValueError(f"unknown {field} code {value}")
    if repetition not in {"01", "02"}:
        raise ValueError(f"unknown repetition code {repetition}")
    actor_number = int(actor)
    if not 1 <= actor_number <= 24:
        raise ValueError(f"actor {actor} outside 01-24")
    return {
        "emotion": EMOTION[emotion],
        "speaker": f"ravdess:{actor}",
        "gender": "male" if actor_number % 2 else "female",
        "actor": actor_number,
        "modality": MODALITY[modality],
        "channel": CHANNEL[channel],
        "intensity": INTENSITY[intensity],
        "statement": int(statement),
        "statement_text": STATEMENT[statement],
        "repetition": int(repetition),
    }


def load(root: Path) -> Corpus:
    """Read every RAVDESS file under ``root`` (speech, song, or both)."""
    return parse_files(root, lambda path: parse_name(path.stem), "ravdess")


def detect(root: Path) -> bool:
    """A folder whose audio files follow the RAVDESS naming."""
    if not root.is_dir():
        return False
    for n, path in enumerate(iter_audio_files(root)):
        return bool(_NAME.match(path.stem)) if n == 0 else False
    return False


register(Adapter("ravdess", detect, load))
