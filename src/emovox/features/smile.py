"""openSMILE functionals: eGeMAPSv02 (88 values) and ComParE_2016 (6373 values).

``opensmile`` is imported and each ``Smile`` object built on first use, once per
process (building one takes a noticeable fraction of a second).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from emovox.audio import DEFAULT_SAMPLE_RATE
from emovox.features.base import FeatureExtractor, register_extractor

_SMILES: dict[str, Any] = {}
_SMILES_LOCK = threading.Lock()


def get_smile(feature_set: str) -> Any:
    """Return this process's ``opensmile.Smile`` for ``feature_set`` functionals.

    Parameters
    ----------
    feature_set : str
        Name of an ``opensmile.FeatureSet`` member, e.g. ``"eGeMAPSv02"``.

    Returns
    -------
    opensmile.Smile
    """
    smile = _SMILES.get(feature_set)
    if smile is None:
        with _SMILES_LOCK:
            smile = _SMILES.get(feature_set)
            if smile is None:
                import opensmile

                smile = opensmile.Smile(
                    feature_set=opensmile.FeatureSet[feature_set],
                    feature_level=opensmile.FeatureLevel.Functionals,
                )
                _SMILES[feature_set] = smile
    return smile


class SmileFunctionals(FeatureExtractor):
    """Base of the openSMILE functional extractors (one vector per recording).

    Parameters
    ----------
    sample_rate : int
        Rate the audio is given to openSMILE at.
    offset : float
        Seconds skipped at the start.
    duration : float or None
        Seconds analysed; ``None``: the whole recording.
    """

    feature_set: ClassVar[str] = ""
    n_features: ClassVar[int] = 0

    def __init__(
        self,
        *,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float | None = None,
    ) -> None:
        self._init_window(sample_rate, offset, duration)

    @property
    def output_shape(self) -> tuple[int]:
        return (self.n_features,)

    def feature_names(self) -> list[str]:
        """Names of the output values, in order (builds the Smile object if needed)."""
        return list(get_smile(self.feature_set).feature_names)

    def warm_up(self) -> None:
        """Nothing to compile: openSMILE is native code; the Smile is built per process."""

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        frame = get_smile(self.feature_set).process_signal(signal, self.sample_rate)
        return frame.to_numpy(dtype=np.float32).reshape(-1)


@register_extractor
class Egemaps(SmileFunctionals):
    """openSMILE eGeMAPSv02 functionals: 88 values per recording."""

    name: ClassVar[str] = "egemaps"
    feature_set: ClassVar[str] = "eGeMAPSv02"
    n_features: ClassVar[int] = 88


@register_extractor
class Compare(SmileFunctionals):
    """openSMILE ComParE_2016 functionals: 6373 values per recording."""

    name: ClassVar[str] = "compare"
    feature_set: ClassVar[str] = "ComParE_2016"
    n_features: ClassVar[int] = 6373
