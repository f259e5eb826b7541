"""Corpus adapters: each returns the same utterance table (see :mod:`emovox.corpora.base`)."""

from emovox.corpora.base import (
    REQUIRED_COLUMNS,
    Corpus,
    adapters,
    detect_corpus,
    load_corpora,
    load_corpus,
)

__all__ = [
    "REQUIRED_COLUMNS",
    "Corpus",
    "adapters",
    "detect_corpus",
    "load_corpora",
    "load_corpus",
]
