"""The feature-extractor interface, the registry of extractors by name, parameter checks.

An extractor is a small immutable object described completely by its *spec*, a
JSON-serialisable ``{"name": ..., **params}`` dict. The spec (plus
:data:`FEATURE_CODE_VERSION`) determines the features of a file, which is what makes
the per-file work cacheable and safe to run in any process.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from emovox.audio import MIN_DURATION, check_signal, load_audio, resample
from emovox.errors import AudioError, ConfigError

#: Version of the feature code. Bump it whenever a change to emovox makes an existing
#: extractor produce different numbers for the same spec: every cache key changes.
FEATURE_CODE_VERSION = 1

_SIGNAL_SOURCE = "<signal>"


class FeatureExtractor(ABC):
    """Base class of all feature extractors.

    Subclasses follow scikit-learn conventions: every hyperparameter is an explicit
    keyword argument of ``__init__`` stored under the same attribute name. Values are
    checked in ``__init__`` so a bad configuration fails before any audio is read.

    Every extractor has the parameters ``sample_rate`` (rate the audio is analysed
    at), ``offset`` (seconds skipped at the start) and ``duration`` (seconds analysed;
    ``None`` for the whole recording, only allowed for functionals).
    """

    #: Registry name, e.g. ``"mfcc_sequence"``.
    name: ClassVar[str] = ""
    #: ``"functional"``: one vector per file, shape (dim,);
    #: ``"sequence"``: one vector per frame, shape (frames, dim).
    kind: ClassVar[Literal["functional", "sequence"]] = "functional"

    sample_rate: int
    offset: float
    duration: float | None

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Names of the hyperparameters, read from the signature of ``__init__``."""
        signature = inspect.signature(cls.__init__)
        return tuple(
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    @property
    def params(self) -> dict[str, Any]:
        """All hyperparameters, defaults included, as JSON-serialisable values."""
        return {name: _jsonable(getattr(self, name)) for name in self.param_names()}

    def spec(self) -> dict[str, Any]:
        """Return ``{"name": ..., **params}``; ``get_extractor(spec)`` rebuilds an equal one."""
        return {"name": self.name, **self.params}

    def key(self) -> str:
        """Return a stable short identifier of the spec and the feature-code version.

        Returns
        -------
        str
            ``"<name>-<16 hex digits>"``, safe as a folder name. Equal extractors have
            equal keys; any parameter change or a bump of
            :data:`FEATURE_CODE_VERSION` gives a new key.
        """
        payload = json.dumps(
            {"spec": self.spec(), "feature_code_version": FEATURE_CODE_VERSION},
            sort_keys=True,
            separators=(",", ":"),
        )
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureExtractor):
            return NotImplemented
        return type(self) is type(other) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ shapes
    @property
    @abstractmethod
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the array one file yields, known without extracting anything."""

    def cache_superset(self) -> tuple[FeatureExtractor, np.ndarray] | None:
        """A larger extractor whose features hold this one's exactly, and where.

        Returns ``(superset, columns)`` with ``superset features[columns]`` equal to
        this extractor's features (e.g. some hidden states of an encoder among all of
        them), or None. The feature cache answers a miss from a cached entry of the
        superset instead of extracting again.
        """
        return None

    # ------------------------------------------------------------------ extraction
    def extract_signal(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        """Compute the features of an in-memory recording.

        ``signal`` is the whole recording: it is checked, converted to mono, resampled
        to :attr:`sample_rate`, then ``offset``/``duration`` select the analysed part,
        exactly as :meth:`extract_file` does for a file.

        Parameters
        ----------
        signal : np.ndarray, shape (n,) or (n, channels)
            Audio samples.
        sample_rate : int
            Rate of ``signal`` in Hz.

        Returns
        -------
        np.ndarray, float32, shape :attr:`output_shape`

        Raises
        ------
        AudioError
            Unusable audio (empty, too short, silent, offset past the end...).
        """
        return self._finish(self._compute(self._prepare(signal, sample_rate)), _SIGNAL_SOURCE)

    def extract_signals(self, signals: Sequence[np.ndarray], sample_rate: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Features of several in-memory recordings, skipping the unusable ones.

        Each signal gets exactly what :meth:`extract_signal` gives it; extractors that
        can (the Whisper encoder) compute equal-length signals together in one batch.

        Parameters
        ----------
        signals : sequence of np.ndarray
            Audio samples, each as :meth:`extract_signal` takes them.
        sample_rate : int
            Rate of every signal in Hz.

        Returns
        -------
        features : np.ndarray, float32, shape (n_usable, *output_shape)
            Features of the usable signals, in order.
        usable : np.ndarray of bool, shape (len(signals),)
            Which signals have features (the others raised :class:`AudioError`).
        """
        features, usable = [], np.zeros(len(signals), dtype=bool)
        for i, signal in enumerate(signals):
            try:
                features.append(self.extract_signal(signal, sample_rate))
                usable[i] = True
            except AudioError:
                pass  # silent or too short: left out, as the mask says
        return self._stack(features), usable

    @property
    def frame_seconds(self) -> float | None:
        """Step of :meth:`extract_frames`'s frames, in seconds; None (the default): these
        features are not a mean over frames."""
        return None

    def extract_frames(self, signals: Sequence[np.ndarray], sample_rate: int
                       ) -> tuple[list[np.ndarray], np.ndarray]:
        """Frame-level features whose mean over a recording's frames is its features.

        Only for extractors with a :attr:`frame_seconds`; the mean over a run of frames
        is then the features of that stretch heard in the context of its recording (how
        a timeline encodes each second once: :mod:`emovox.inference.frames`).

        Parameters
        ----------
        signals : sequence of np.ndarray
            Audio samples, each as :meth:`extract_signal` takes them.
        sample_rate : int
            Rate of every signal in Hz.

        Returns
        -------
        frames : list of np.ndarray, float32, each shape (n_frames, n_features)
            One array per usable signal, in order.
        usable : np.ndarray of bool, shape (len(signals),)
            Which signals have frames (the others were refused as :meth:`extract_signal`
            refuses them).

        Raises
        ------
        NotImplementedError
            The extractor has no frame-level form.
        """
        raise NotImplementedError(f"{self.name}: these features are not a mean over frames")

    def _stack(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Feature arrays stacked, or an empty ``(0, *output_shape)`` array."""
        if not features:
            return np.zeros((0, *self.output_shape), np.float32)
        return np.stack(features)

    def _prepare_usable(self, signals: Sequence[np.ndarray], sample_rate: int
                        ) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`_prepare` of each signal, leaving out those it refuses, and the mask."""
        prepared, usable = [], np.zeros(len(signals), dtype=bool)
        for i, signal in enumerate(signals):
            try:
                prepared.append(self._prepare(signal, sample_rate))
                usable[i] = True
            except AudioError:
                pass
        return prepared, usable

    def _prepare(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        """The analysed part of a signal: checked, mono, resampled, ``offset``/``duration``."""
        x = check_signal(signal, sample_rate, _SIGNAL_SOURCE)
        x = resample(x, int(sample_rate), self.sample_rate)
        start = round(self.offset * self.sample_rate)
        if start >= x.size:
            raise AudioError(
                _SIGNAL_SOURCE,
                f"offset {self.offset:g} s is past the end of the audio "
                f"({x.size / self.sample_rate:.3f} s)",
            )
        stop = None if self.duration is None else start + self._window_samples()
        return check_signal(x[start:stop], self.sample_rate, _SIGNAL_SOURCE)

    def extract_file(self, path: str | Path) -> np.ndarray:
        """Read ``path`` (only the ``offset``/``duration`` window) and compute its features.

        Parameters
        ----------
        path : str or Path
            Any audio file :func:`emovox.audio.load_audio` reads.

        Returns
        -------
        np.ndarray, float32, shape :attr:`output_shape`

        Raises
        ------
        AudioError
            Unreadable or unusable audio, with the path in the message.
        """
        path = Path(path)
        x = load_audio(path, self.sample_rate, offset=self.offset, duration=self.duration)
        if self.duration is not None:
            x = x[: self._window_samples()]  # resampling may add a sample
        return self._finish(self._compute(x), path)

    def warm_up(self) -> None:
        """Run the extractor once on a synthetic signal.

        Triggers one-off costs (imports, numba compilation and its on-disk cache) in
        the calling process. :func:`~emovox.features.extract_many` calls it before
        starting worker processes so they never compile numba code concurrently, which
        can corrupt numba's cache (numba issue #10128).
        """
        seconds = self.offset + (self.duration if self.duration is not None else 1.0) + 0.5
        t = np.arange(int(seconds * self.sample_rate)) / self.sample_rate
        rng = np.random.default_rng(0)
        signal = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.01 * rng.standard_normal(t.size)
        self.extract_signal(signal.astype(np.float32), self.sample_rate)

    @abstractmethod
    def _compute(self, signal: np.ndarray) -> np.ndarray:
        """Features of the analysed window (mono float32 at :attr:`sample_rate`)."""

    # ------------------------------------------------------------------ helpers
    def _window_samples(self) -> int:
        assert self.duration is not None
        return round(self.duration * self.sample_rate)

    def _init_window(
        self,
        sample_rate: int,
        offset: float,
        duration: float | None,
        *,
        duration_required: bool = False,
    ) -> None:
        self.sample_rate = check_int(self, "sample_rate", sample_rate, minimum=1000)
        self.offset = check_float(self, "offset", offset, minimum=0.0)
        if duration is None and duration_required:
            raise ConfigError(
                f"{self.name}: duration must be a number of seconds (sequences need a "
                "fixed length), got None"
            )
        # Shorter windows would be refused as "too short" for every file.
        self.duration = check_float(self, "duration", duration, minimum=MIN_DURATION,
                                    optional=True)

    def _finish(self, features: np.ndarray, source: str | Path) -> np.ndarray:
        out = np.ascontiguousarray(features, dtype=np.float32)
        if out.shape != self.output_shape:
            raise RuntimeError(
                f"{self.name} produced shape {out.shape}, expected {self.output_shape}"
            )
        if not np.all(np.isfinite(out)):
            raise AudioError(source, f"{self.name} features contain NaN or infinite values")
        return out


class SequenceExtractor(FeatureExtractor):
    """Frame-level features cropped or zero-padded to a fixed number of frames.

    Frames are computed on the ``duration``-second window starting at ``offset``
    (librosa's centred framing); a shorter recording yields fewer frames and the rest
    are filled with zeros at the end, so the shape depends only on the parameters:
    ``frames = 1 + round(duration * sample_rate) // hop_length``.
    """

    kind: ClassVar[Literal["functional", "sequence"]] = "sequence"
    hop_length: int

    @property
    def n_frames(self) -> int:
        """Number of frames of every output."""
        return 1 + self._window_samples() // self.hop_length

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Values per frame."""

    @property
    def output_shape(self) -> tuple[int, int]:
        return (self.n_frames, self.n_features)

    def _fix_length(self, frames: np.ndarray) -> np.ndarray:
        """Crop or zero-pad (at the end) ``frames`` of shape (t, dim) to :attr:`n_frames`."""
        out = np.zeros((self.n_frames, frames.shape[1]), dtype=np.float32)
        n = min(self.n_frames, frames.shape[0])
        out[:n] = frames[:n]
        return out


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[FeatureExtractor]] = {}
#: Extractors registered by a module imported on first use of their name (so their
#: dependencies are not imported with emovox.features).
_LAZY_MODULES: dict[str, str] = {"whisper_encoder": "emovox.features.whisper"}

E = TypeVar("E", bound=type[FeatureExtractor])


def register_extractor(cls: E) -> E:
    """Class decorator adding a :class:`FeatureExtractor` subclass to the registry."""
    if not cls.name or not cls.name.replace("_", "").isalnum() or cls.name != cls.name.lower():
        raise ValueError(f"extractor name must be lower-case [a-z0-9_], got {cls.name!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an extractor named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available_extractors() -> list[str]:
    """Return the names :func:`get_extractor` accepts, sorted."""
    return sorted(set(_REGISTRY) | set(_LAZY_MODULES))


def _lookup(name: str) -> type[FeatureExtractor] | None:
    cls = _REGISTRY.get(name)
    if cls is None and name in _LAZY_MODULES:
        module = _LAZY_MODULES[name]
        try:
            importlib.import_module(module)  # registers the extractor
        except ImportError as error:
            raise ConfigError(
                f"feature extractor {name!r} needs {module}, which cannot be imported: {error}"
            ) from None
        cls = _REGISTRY.get(name)
    return cls


def get_extractor(
    spec: str | Mapping[str, Any] | FeatureExtractor, /, **params: Any
) -> FeatureExtractor:
    """Build an extractor from a name, a spec dict or an existing extractor.

    Parameters
    ----------
    spec : str, dict or FeatureExtractor
        ``"compare"``, ``{"name": "mfcc_sequence", "n_mfcc": 40}`` or an extractor
        (returned unchanged when no ``params`` are given).
    **params
        Parameters overriding those in ``spec``.

    Returns
    -------
    FeatureExtractor

    Raises
    ------
    ConfigError
        Unknown extractor name, unknown parameter or invalid value.

    Examples
    --------
    >>> get_extractor("logmel_sequence", n_mels=64).output_shape
    (94, 64)
    """
    if isinstance(spec, FeatureExtractor):
        if not params:
            return spec
        name, merged = spec.name, {**spec.params, **params}
    elif isinstance(spec, str):
        name, merged = spec, dict(params)
    elif isinstance(spec, Mapping):
        merged = {**spec, **params}
        name = merged.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"feature spec needs a 'name' (one of {available_extractors()}), "
                              f"got {dict(spec)!r}")
    else:
        raise ConfigError(
            f"feature spec must be a name, a dict or a FeatureExtractor, got {type(spec).__name__}"
        )
    cls = _lookup(name)
    if cls is None:
        raise ConfigError(
            f"unknown feature extractor {name!r}; available: {', '.join(available_extractors())}"
        )
    unknown = sorted(set(merged) - set(cls.param_names()))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for feature extractor "
            f"{name!r}; its parameters are: {', '.join(cls.param_names())}"
        )
    return cls(**merged)


# ---------------------------------------------------------------------- checks
def check_int(
    owner: FeatureExtractor | str,
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Return ``value`` as an int, or raise ConfigError naming the extractor and parameter."""
    label = owner if isinstance(owner, str) else owner.name
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{label}: {name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{label}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{label}: {name} must be <= {maximum}, got {value}")
    return value


def check_float(
    owner: FeatureExtractor | str,
    name: str,
    value: Any,
    minimum: float | None = None,
    *,
    strict: bool = False,
    optional: bool = False,
) -> float | None:
    """Return ``value`` as a float (``None`` allowed if ``optional``), or raise ConfigError.

    ``strict=True`` requires ``value > minimum`` instead of ``>=``.
    """
    label = owner if isinstance(owner, str) else owner.name
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        kind = "a number or None" if optional else "a number"
        raise ConfigError(f"{label}: {name} must be {kind}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{label}: {name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{label}: {name} must be {'>' if strict else '>='} {minimum:g}, "
                          f"got {value:g}")
    return value


def check_bool(owner: FeatureExtractor | str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, or raise ConfigError."""
    label = owner if isinstance(owner, str) else owner.name
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{label}: {name} must be true or false, got {value!r}")
    return bool(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
