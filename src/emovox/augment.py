"""Audio augmentation recipes of the published SER experiments, through audiomentations.

A *recipe* names one transform or a combination applied in order:

========== ======================================================================
name       audiomentations transform (parameters drawn per call)
========== ======================================================================
noise      ``AddGaussianNoise``, amplitude 0.001–0.015
shift      ``Shift``, ±0.25 s with rollover (the signal is rotated, like np.roll)
pitch      ``PitchShift``, ±2 semitones
gain       ``Gain`` of +3.52 to +9.54 dB, i.e. the "dynamic change" ×1.5 to ×3
           (not clipped: peaks may exceed 1, as in the original recipe)
stretch    ``TimeStretch``, rate 0.8–1.25, **length changes** (rate 1.25 gives a
           signal 1/1.25 as long)
========== ======================================================================

Combinations are written ``"noise+shift"`` or as a list ``["pitch", "noise"]``.
Every transform keeps the sample rate, and all but ``stretch`` keep the length.
(Sequence extractors crop or pad to a fixed number of frames, so stretched audio
still gives features of the usual shape.)

**Only training data is augmented.** :func:`augmented_training_features` takes the
training paths of a fold and returns extra rows to add to *that fold's training
set*; nothing here takes a test split, and the features of test files always come
from the unmodified audio.

Reproducibility: audiomentations draws from Python's ``random`` and NumPy's global
generator. An :class:`Augmenter` keeps its own states of both and swaps them in only
while it runs, so its output depends only on its seed and the global generators are
left as they were. Each augmented copy in :func:`augment_table` is seeded from
``(seed, path, copy)``, so a file's copies are the same whatever else is in the list.
(The swap is not thread-safe: use one augmenter per thread or process.)
"""

from __future__ import annotations

import hashlib
import math
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from audiomentations import AddGaussianNoise, Compose, Gain, PitchShift, Shift, TimeStretch

from emovox.audio import DEFAULT_SAMPLE_RATE, load_audio
from emovox.errors import AudioError, ConfigError
from emovox.features import FeatureExtractor, get_extractor

__all__ = [
    "RECIPES",
    "AugmentedFeatures",
    "Augmenter",
    "augment_table",
    "augmented_training_features",
    "available_recipes",
    "make_augmenter",
    "parse_recipe",
]

#: Transform class and default parameters of each named recipe.
RECIPES: dict[str, tuple[type, dict[str, Any]]] = {
    "noise": (AddGaussianNoise, {"min_amplitude": 0.001, "max_amplitude": 0.015}),
    "shift": (Shift, {"min_shift": -0.25, "max_shift": 0.25, "shift_unit": "seconds",
                      "rollover": True}),
    "pitch": (PitchShift, {"min_semitones": -2.0, "max_semitones": 2.0}),
    "gain": (Gain, {"min_gain_db": 20 * math.log10(1.5), "max_gain_db": 20 * math.log10(3.0)}),
    "stretch": (TimeStretch, {"min_rate": 0.8, "max_rate": 1.25,
                              "leave_length_unchanged": False}),
}

Recipe = str | Sequence[str]


def available_recipes() -> list[str]:
    """Names of the single transforms a recipe combines, sorted."""
    return sorted(RECIPES)


def parse_recipe(recipe: Recipe) -> tuple[str, ...]:
    """Split a recipe into transform names, checking each.

    Parameters
    ----------
    recipe : str or sequence of str
        ``"noise"``, ``"noise+shift"`` or ``["pitch", "noise"]`` (list items may also
        contain ``+``).

    Returns
    -------
    tuple of str
        Transform names in the order they are applied.

    Raises
    ------
    ConfigError
        Empty recipe or unknown name.
    """
    parts = [recipe] if isinstance(recipe, str) else list(recipe)
    names = tuple(n.strip().lower() for part in parts for n in str(part).split("+") if n.strip())
    if not names:
        raise ConfigError(f"empty augmentation recipe {recipe!r}; "
                          f"use names from {available_recipes()}")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; known: "
                          f"{', '.join(available_recipes())} (combine with '+')")
    return names


def _seed_int(*parts: Any) -> int:
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Augmenter:
    """A seeded chain of audiomentations transforms: ``augmenter(signal, rate)``.

    Build it with :func:`make_augmenter`.

    Parameters
    ----------
    names : tuple of str
        Transform names (see :data:`RECIPES`), applied in order.
    p : float
        Probability that each transform is applied.
    seed : int
        Seed of the augmenter's private random state.
    params : mapping, optional
        ``{name: {parameter: value}}`` overriding a transform's defaults, e.g.
        ``{"pitch": {"min_semitones": -4, "max_semitones": 4}}``.
    """

    def __init__(self, names: Sequence[str], p: float = 1.0, seed: int = 0,
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.names = parse_recipe(list(names))
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"augmentation probability p must be in [0, 1], got {p}")
        self.p = float(p)
        params = dict(params or {})
        stray = sorted(set(params) - set(self.names))
        if stray:
            raise ConfigError(f"augmentation parameters for {stray}, which are not in the "
                              f"recipe {'+'.join(self.names)}")
        transforms = []
        for name in self.names:
            cls, defaults = RECIPES[name]
            try:
                transforms.append(cls(**{**defaults, **params.get(name, {})}, p=self.p))
            except (TypeError, ValueError, AssertionError) as error:
                raise ConfigError(f"augmentation {name!r}: {error}") from None
        self.transform = Compose(transforms, p=1.0, shuffle=False)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the private random state, as if built with ``seed``.

        Parameters
        ----------
        seed : int
        """
        python_rng = random.Random(seed)
        numpy_rng = np.random.RandomState(_seed_int("numpy", seed) % 2**32)
        self._python_state = python_rng.getstate()
        self._numpy_state = numpy_rng.get_state()

    def __call__(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        """Augment a mono signal.

        Parameters
        ----------
        signal : np.ndarray, shape (n,)
            Mono samples.
        sample_rate : int
            Rate of ``signal`` in Hz (kept).

        Returns
        -------
        np.ndarray, shape (n,) (other length for ``stretch``), float32
        """
        samples = np.ascontiguousarray(signal, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"expected a non-empty mono signal, got shape {samples.shape}")
        saved_python, saved_numpy = random.getstate(), np.random.get_state()
        random.setstate(self._python_state)
        np.random.set_state(self._numpy_state)
        try:
            out = self.transform(samples=samples, sample_rate=int(sample_rate))
        finally:
            self._python_state, self._numpy_state = random.getstate(), np.random.get_state()
            random.setstate(saved_python)
            np.random.set_state(saved_numpy)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Augmenter({'+'.join(self.names)!r}, p={self.p:g})"


def make_augmenter(names: Recipe, p: float = 1.0, seed: int = 0,
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> Augmenter:
    """Build a seeded augmenter from a recipe.

    Parameters
    ----------
    names : str or sequence of str
        ``"noise"``, ``"noise+shift"``, ``["pitch", "noise"]``...
    p : float
        Probability that each transform is applied (1: always).
    seed : int
        Seed; equal seeds give equal outputs for equal inputs.
    params : mapping, optional
        Per-transform parameter overrides, ``{"noise": {"max_amplitude": 0.03}}``.

    Returns
    -------
    Augmenter
        ``augmenter(signal, sample_rate) -> signal``.

    Examples
    --------
    >>> augment = make_augmenter("noise+shift", seed=1)
    >>> augment(np.ones(16000, dtype=np.float32) * 0.1, 16000).shape
    (16000,)
    """
    return Augmenter(parse_recipe(names), p=p, seed=seed, params=params)


def _augmented_items(
    paths: Sequence[str | Path],
    labels: Sequence[Any],
    recipe: Recipe,
    copies: int,
    only_classes: Iterable[Any] | None,
    seed: int,
    sample_rate: int,
    p: float,
    params: Mapping[str, Mapping[str, Any]] | None,
) -> Iterator[tuple[int, str, Any, np.ndarray]]:
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ConfigError(f"copies must be an int >= 0, got {copies!r}")
    paths, labels = list(paths), list(labels)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    wanted = None if only_classes is None else set(only_classes)
    augmenter = make_augmenter(recipe, p=p, seed=seed, params=params)
    recipe_name = "+".join(augmenter.names)
    for position, (path, label) in enumerate(zip(paths, labels, strict=True)):
        if copies == 0 or (wanted is not None and label not in wanted):
            continue
        signal = load_audio(path, sample_rate)
        for copy in range(copies):
            augmenter.reseed(_seed_int(seed, recipe_name, str(path), copy))
            yield position, str(path), label, augmenter(signal, sample_rate)


def augment_table(
    paths: Sequence[str | Path],
    labels: Sequence[Any],
    recipe: Recipe,
    copies: int = 1,
    only_classes: Iterable[Any] | None = None,
    seed: int = 0,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    p: float = 1.0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[tuple[str, Any, np.ndarray]]:
    """Yield ``copies`` augmented versions of each (selected) file.

    Files are read lazily, one at a time, with :func:`emovox.audio.load_audio`;
    files whose label is not in ``only_classes`` are not read at all.

    Parameters
    ----------
    paths : sequence of str or Path
        Audio files (training files only).
    labels : sequence
        Label of each file.
    recipe : str or sequence of str
        See :func:`parse_recipe`.
    copies : int
        Augmented versions per file.
    only_classes : iterable, optional
        Augment only files with these labels (e.g. the minority class of a
        2-class task, to rebalance it); default: all.
    seed : int
        Copy ``c`` of file ``path`` is seeded from ``(seed, recipe, path, c)``.
    sample_rate : int
        Rate the audio is read and augmented at.
    p : float
        Probability that each transform is applied.
    params : mapping, optional
        Per-transform parameter overrides (see :func:`make_augmenter`).

    Yields
    ------
    source_path : str
    label
    signal : np.ndarray, float32, at ``sample_rate``
    """
    for _, path, label, signal in _augmented_items(paths, labels, recipe, copies, only_classes,
                                                   seed, sample_rate, p, params):
        yield path, label, signal


class AugmentedFeatures(NamedTuple):
    """Extra training rows computed from augmented audio.

    Attributes
    ----------
    features : np.ndarray, shape (m, *extractor.output_shape), float32
    labels : np.ndarray, shape (m,)
        Label of each row (of its source file).
    source : np.ndarray of int, shape (m,)
        Position of each row's source file in ``train_paths`` (to look up its
        speaker, e.g. ``groups=train_speakers[source]``).
    """

    features: np.ndarray
    labels: np.ndarray
    source: np.ndarray


def augmented_training_features(
    extractor: FeatureExtractor | str | Mapping[str, Any],
    train_paths: Sequence[str | Path],
    train_labels: Sequence[Any],
    recipe: Recipe,
    copies: int = 1,
    only_classes: Iterable[Any] | None = None,
    seed: int = 0,
    p: float = 1.0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> AugmentedFeatures:
    """Features of augmented copies of a fold's **training** files, to add to its training set.

    Each training file (of the chosen classes) is read with
    :func:`emovox.audio.load_audio` at the extractor's rate, augmented ``copies``
    times, and its features computed with ``extractor.extract_signal`` (which applies
    the extractor's offset/duration window). Augmented features are not cached.
    Copies whose audio the extractor refuses (e.g. a stretch leaving too little
    audio after the offset) are skipped, with one warning giving the count.

    Parameters
    ----------
    extractor : FeatureExtractor, name or spec
        The fold's feature extractor.
    train_paths, train_labels : sequences
        The training files of the fold and their labels. Never pass test files.
    recipe, copies, only_classes, seed, p, params
        As in :func:`augment_table`.

    Returns
    -------
    AugmentedFeatures
        ``(features, labels, source)``; empty arrays when nothing was augmented.

    Examples
    --------
    >>> X_aug, y_aug, source = augmented_training_features(  # doctest: +SKIP
    ...     "mfcc_stats", paths[train], y[train], "noise+shift", copies=2)
    >>> model.fit(np.concatenate([X[train], X_aug]), np.concatenate([y[train], y_aug]),
    ...           groups=np.concatenate([speakers[train], speakers[train][source]]),
    ...           augmented=np.r_[np.zeros(len(train), bool), np.ones(len(y_aug), bool)])
    """
    extractor = get_extractor(extractor)
    rows, labels, sources, failed = [], [], [], 0
    for position, _, label, signal in _augmented_items(
            train_paths, train_labels, recipe, copies, only_classes, seed,
            extractor.sample_rate, p, params):
        try:
            rows.append(extractor.extract_signal(signal, extractor.sample_rate))
        except AudioError:
            failed += 1
            continue
        labels.append(label)
        sources.append(position)
    if failed:
        warnings.warn(f"{failed} augmented signal(s) could not be featurised and were skipped",
                      UserWarning, stacklevel=2)
    shape = tuple(extractor.output_shape)
    features = (np.stack(rows).astype(np.float32, copy=False) if rows
                else np.zeros((0, *shape), dtype=np.float32))
    label_array = np.asarray(list(train_labels))
    label_values = (np.asarray(labels, dtype=label_array.dtype) if labels
                    else label_array[:0])
    return AugmentedFeatures(features, label_values, np.asarray(sources, dtype=int))
