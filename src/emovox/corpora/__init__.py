"""Corpus adapters: each returns the same utterance table (see :mod:`emovox.corpora.base`).

Importing this package registers the adapters. Auto-detection tries them in
registration order: the specific corpora first, then manifests, then the generic
folder-per-label layout last.
"""

from importlib import import_module

from emovox.corpora.base import (
    REQUIRED_COLUMNS,
    Corpus,
    adapters,
    detect_corpus,
    load_corpora,
    load_corpus,
)

#: Adapter modules in detection order (imported one by one so the order is explicit).
ADAPTER_MODULES: tuple[str, ...] = (
    "ravdess",
    "cremad",
    "emodb",
    "tess",
    "savee",
    "manifest",
    "folder",
)
for _module in ADAPTER_MODULES:
    import_module(f"emovox.corpora.{_module}")
del _module

from emovox.corpora.describe import describe, plot_counts  # noqa: E402
from emovox.corpora.names import normalise_emotion  # noqa: E402

__all__ = [
    "ADAPTER_MODULES",
    "REQUIRED_COLUMNS",
    "Corpus",
    "adapters",
    "describe",
    "detect_corpus",
    "load_corpora",
    "load_corpus",
    "normalise_emotion",
    "plot_counts",
]
