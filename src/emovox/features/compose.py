"""Extractors built from other extractors: preprocessing in front, fusion side by side.

``preprocessed``
    Loudness normalisation and/or silence trimming (:mod:`emovox.preprocess`) of the
    whole recording, then any extractor::

        {"name": "preprocessed", "features": {"name": "whisper_encoder"},
         "loudness_lufs": -23, "trim_top_db": 30}

``fused``
    The outputs of several functional extractors concatenated (early fusion), e.g.
    hand-crafted ComParE with encoder embeddings::

        {"name": "fused", "parts": ["compare", {"name": "whisper_encoder"}]}

    :func:`emovox.features.extract_many` extracts (and caches) each part on its own,
    so a part cached for another experiment is not computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from emovox.audio import load_audio
from emovox.errors import AudioError, ConfigError
from emovox.features.base import FeatureExtractor, get_extractor, register_extractor
from emovox.preprocess import check_preprocessing, preprocess

Spec = str | Mapping[str, Any]


@register_extractor
class Preprocessed(FeatureExtractor):
    """Another extractor's features of the loudness-normalised and/or trimmed recording.

    Parameters
    ----------
    features : str or dict
        Spec of the inner extractor (its window, ``offset``/``duration``, applies to
        the preprocessed recording).
    trim_top_db : float or None
        Trim leading/trailing audio quieter than this many dB below the peak.
    loudness_lufs : float or None
        Scale every recording to this integrated loudness (ITU-R BS.1770), e.g. -23.

    Examples
    --------
    >>> Preprocessed(features="egemaps", loudness_lufs=-23).output_shape
    (88,)
    """

    name: ClassVar[str] = "preprocessed"

    def __init__(self, *, features: Spec, trim_top_db: float | None = None,
                 loudness_lufs: float | None = None) -> None:
        self.inner = get_extractor(features)
        if isinstance(self.inner, Preprocessed):
            raise ConfigError("preprocessed: the inner features are already preprocessed")
        self.features = self.inner.spec()
        check_preprocessing(trim_top_db, loudness_lufs)
        if trim_top_db is None and loudness_lufs is None:
            raise ConfigError("preprocessed: set trim_top_db and/or loudness_lufs "
                              "(otherwise use the inner features directly)")
        self.trim_top_db = trim_top_db
        self.loudness_lufs = loudness_lufs
        # The analysis rate is the inner extractor's; the window is applied by it.
        self.sample_rate = self.inner.sample_rate
        self.offset = 0.0
        self.duration = None

    @property
    def kind(self) -> Literal["functional", "sequence"]:  # type: ignore[override]
        """The inner extractor's kind."""
        return self.inner.kind

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.inner.output_shape

    def cache_superset(self) -> tuple[Preprocessed, np.ndarray] | None:
        """The inner extractor's superset, behind the same preprocessing."""
        inner = self.inner.cache_superset()
        if inner is None:
            return None
        superset = Preprocessed(features=inner[0].spec(), trim_top_db=self.trim_top_db,
                                loudness_lufs=self.loudness_lufs)
        return superset, inner[1]

    def extract_file(self, path: str | Path) -> np.ndarray:
        """Read the whole of ``path``, preprocess it, then extract the inner features."""
        return self._finish(_naming(path, self._compute, load_audio(path, self.sample_rate)),
                            path)

    def extract_signals(self, signals: Sequence[np.ndarray], sample_rate: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Each signal preprocessed alone, then the inner extractor's batch (see base)."""
        prepared, usable = self._prepare_usable(signals, sample_rate)
        features, inner_usable = self.inner.extract_signals(
            [self._preprocess(x) for x in prepared], self.sample_rate)
        usable[usable] = inner_usable
        return features, usable

    @property
    def frame_seconds(self) -> float | None:
        """The inner extractor's, unless trimming moves the frames off the clock."""
        return self.inner.frame_seconds if self.trim_top_db is None else None

    def extract_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                       ) -> tuple[list[np.ndarray], np.ndarray]:
        """Each signal preprocessed alone, then the inner extractor's frames."""
        if self.frame_seconds is None:
            return super().extract_frames(signals, sample_rate)
        prepared, usable = self._prepare_usable(signals, sample_rate)
        frames, inner_usable = self.inner.extract_frames(
            [self._preprocess(x) for x in prepared], self.sample_rate)
        usable[usable] = inner_usable
        return frames, usable

    def warm_up(self) -> None:
        """Warm up the inner extractor (see :meth:`FeatureExtractor.warm_up`)."""
        self.inner.warm_up()

    def _preprocess(self, signal: np.ndarray) -> np.ndarray:
        return preprocess(signal, self.sample_rate, trim_top_db=self.trim_top_db,
                          loudness_lufs=self.loudness_lufs)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        return self.inner.extract_signal(self._preprocess(signal), self.sample_rate)


@register_extractor
class Fused(FeatureExtractor):
    """Concatenated outputs of several functional extractors (early fusion).

    Parameters
    ----------
    parts : list of str or dict
        Specs of two or more functional extractors with the same ``sample_rate``.

    Examples
    --------
    >>> Fused(parts=["egemaps", "mfcc_chroma_mel"]).output_shape
    (268,)
    """

    name: ClassVar[str] = "fused"

    def __init__(self, *, parts: Sequence[Spec]) -> None:
        if isinstance(parts, str | Mapping) or len(parts) < 2:
            raise ConfigError(f"fused: parts must be a list of two or more feature specs, "
                              f"got {parts!r}")
        self.extractors = [get_extractor(part) for part in parts]
        for part in self.extractors:
            if part.kind != "functional":
                raise ConfigError(f"fused: {part.name} is a {part.kind} extractor; only "
                                  "functionals (one vector per file) can be concatenated")
        rates = {part.sample_rate for part in self.extractors}
        if len(rates) > 1:
            raise ConfigError(f"fused: the parts analyse different sample rates {sorted(rates)}")
        self.parts = [part.spec() for part in self.extractors]
        self.sample_rate = rates.pop()
        self.offset = 0.0
        self.duration = None

    @property
    def output_shape(self) -> tuple[int]:
        return (sum(part.output_shape[0] for part in self.extractors),)

    def cache_superset(self) -> tuple[Fused, np.ndarray] | None:
        """Each part's superset (or the part itself) fused, when any part has one."""
        supersets = [part.cache_superset() for part in self.extractors]
        if all(superset is None for superset in supersets):
            return None
        parts, columns, offset = [], [], 0
        for part, superset in zip(self.extractors, supersets, strict=True):
            whole, where = superset or (part, np.arange(part.output_shape[0]))
            parts.append(whole.spec())
            columns.append(where + offset)
            offset += whole.output_shape[0]
        return Fused(parts=parts), np.concatenate(columns)

    def extract_file(self, path: str | Path) -> np.ndarray:
        """Every part's features of ``path`` (read once), concatenated in order."""
        return self._finish(_naming(path, self._compute, load_audio(path, self.sample_rate)),
                            path)

    @property
    def frame_seconds(self) -> float | None:
        """The parts' common frame step (None unless every part has the same one)."""
        steps = {part.frame_seconds for part in self.extractors}
        return steps.pop() if len(steps) == 1 else None

    def extract_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                       ) -> tuple[list[np.ndarray], np.ndarray]:
        """Every part's frames side by side (signals usable for all parts)."""
        if self.frame_seconds is None:
            return super().extract_frames(signals, sample_rate)
        parts = [part.extract_frames(signals, sample_rate) for part in self.extractors]
        usable = np.logical_and.reduce([ok for _, ok in parts])
        # Position of each signal among a part's usable ones.
        positions = [np.cumsum(ok) - 1 for _, ok in parts]
        frames = []
        for index in np.flatnonzero(usable):
            rows = [part_frames[int(at[index])]
                    for (part_frames, _), at in zip(parts, positions, strict=True)]
            n = min(len(r) for r in rows)  # equal for encoders with the same front end
            frames.append(np.concatenate([r[:n] for r in rows], axis=1))
        return frames, usable

    def warm_up(self) -> None:
        """Warm up every part."""
        for part in self.extractors:
            part.warm_up()

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        return np.concatenate([part.extract_signal(signal, self.sample_rate)
                               for part in self.extractors])


def _naming(path: str | Path, compute: Callable[[np.ndarray], np.ndarray],
            signal: np.ndarray) -> np.ndarray:
    """``compute(signal)``, its audio errors naming ``path`` instead of ``<signal>``."""
    try:
        return compute(signal)
    except AudioError as error:
        raise AudioError(path, error.problem) from None
