"""Exceptions that carry a one-line, user-facing message."""

from __future__ import annotations

from pathlib import Path


class EmovoxError(Exception):
    """Base class of every error emovox raises on purpose."""


class AudioError(EmovoxError, ValueError):
    """An audio file or signal that cannot be used, with the file named in the message.

    Parameters
    ----------
    source : str or Path
        The file (or a description of an in-memory signal) that failed.
    problem : str
        What is wrong, phrased so the user knows what to do.
    """

    def __init__(self, source: str | Path, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class ConfigError(EmovoxError, ValueError):
    """An experiment configuration or command-line override that is not valid."""


class CorpusError(EmovoxError, ValueError):
    """A corpus folder or manifest that cannot be read."""


class BundleError(EmovoxError, ValueError):
    """A model bundle that is missing, incomplete or of an unknown version."""


class StoppedError(Exception):
    """A pass stopped because the work it served was abandoned (its ``stop`` event was
    set): not an error of the input."""
