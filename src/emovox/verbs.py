"""The file verbs every recogniser shares, built on its own ``predict_files``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from emovox.errors import AudioError


class FileVerbs:
    """``predict_file`` and ``predict_folder`` for a class that has ``predict_files``.

    Kept free of heavy imports so the ONNX recogniser can use it without torch.
    """

    def predict_files(self, paths: Iterable[str | Path], progress: bool = True) -> pd.DataFrame:
        raise NotImplementedError

    def predict_file(self, path: str | Path) -> pd.DataFrame:
        """Emotion of one file; raises AudioError (one line, naming it) if unusable."""
        frame = self.predict_files([path], progress=False)
        failures = frame.attrs.get("failures", [])
        if failures:
            path, reason = failures[0]
            raise AudioError(path, reason.removeprefix(f"{path}: "))
        return frame

    def predict_folder(self, folder: str | Path, progress: bool = True) -> pd.DataFrame:
        """Emotion of every audio file under ``folder`` (recursively)."""
        from emovox.corpora.base import iter_audio_files

        return self.predict_files(iter_audio_files(Path(folder)), progress=progress)
