"""Augmentation recipes: they change audio, keep its shape, are seeded, touch training only."""



from __future__ import annotations

import random

import numpy as np
import pytest

import emovox.augment as augment
from emovox.audio import load_audio
from emovox.augment import (
    augment_table,
    augmented_training_features,
    available_recipes,
    make_augmenter,
    parse_recipe,
)
from emovox.errors import ConfigError
from emovox.features import get_extractor

SR = 16_000


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    from conftest import tone_signal

    return tone_signal(duration=0.5, sample_rate=SR)


@pytest.fixture
def corpus(tmp_path, write_tone):
    """Six short files: train (4, two classes) and test (2)."""
    files = {}
    for i, (split, label) in enumerate([("train", "angry"), ("train", "neutral"),
                                        ("train", "angry"), ("train", "neutral"),
                                        ("test", "angry"), ("test", "neutral")]):
        path = write_tone(tmp_path / split / f"{i}.wav", duration=0.5,
                          frequency=120.0 + 20 * i, seed=i)
        files.setdefault(split, []).append((str(path), label))
    return {split: ([p for p, _ in rows], [lab for _, lab in rows])
            for split, rows in files.items()}


@pytest.fixture
def load_spy(monkeypatch):
    """Record every path augment.py reads."""
    calls: list[str] = []

    def spy(path, *args, **kwargs):
        calls.append(str(path))
        return load_audio(path, *args, **kwargs)

    monkeypatch.setattr(augment, "load_audio", spy)
    return calls


def test_recipes_are_named():
    assert available_recipes() == ["gain", "noise", "pitch", "shift", "stretch"]
    assert parse_recipe("noise+shift") == ("noise", "shift")
    assert parse_recipe(["pitch", "noise"]) == ("pitch", "noise")
    assert parse_recipe(["Pitch + noise", "gain"]) == ("pitch", "noise", "gain")
    with pytest.raises(ConfigError, match="unknown augmentation"):
        parse_recipe("reverb")
    with pytest.raises(ConfigError, match="empty"):
        parse_recipe([])


@pytest.mark.parametrize("recipe", ["noise", "shift", "pitch", "gain", "noise+shift",
                                    ["pitch", "noise"]])
def test_augmentation_changes_audio_but_keeps_length(signal, recipe):
    out = make_augmenter(recipe, seed=3)(signal, SR)
    assert out.dtype == np.float32
    assert out.shape == signal.shape
    assert not np.allclose(out, signal)
    assert np.all(np.isfinite(out))


def test_gain_is_the_dynamic_change_of_1_5_to_3_times(signal):
    for seed in range(5):
        out = make_augmenter("gain", seed=seed)(signal, SR)
        ratio = np.abs(out).max() / np.abs(signal).max()
        assert 1.5 - 1e-4 <= ratio <= 3.0 + 1e-4


def test_stretch_changes_the_length(signal):
    out = make_augmenter("stretch", seed=0)(signal, SR)
    assert out.ndim == 1 and out.size != signal.size
    assert 0.75 * signal.size <= out.size <= 1.3 * signal.size


def test_seeds_reproduce_and_global_random_state_is_untouched(signal):
    random.seed(123)
    np.random.seed(123)
    expected_python, expected_numpy = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    a = make_augmenter("pitch+noise+shift", seed=7)(signal, SR)
    b = make_augmenter("pitch+noise+shift", seed=7)(signal, SR)
    c = make_augmenter("pitch+noise+shift", seed=8)(signal, SR)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert random.random() == expected_python
    assert np.random.random() == expected_numpy


def test_probability_zero_leaves_audio_unchanged(signal):
    assert np.array_equal(make_augmenter("noise+gain", p=0.0)(signal, SR), signal)


def test_parameter_overrides(signal):
    loud = make_augmenter("noise", seed=1, params={"noise": {"min_amplitude": 0.2,
                                                             "max_amplitude": 0.2}})
    assert np.std(loud(signal, SR) - signal) == pytest.approx(0.2, rel=0.1)
    with pytest.raises(ConfigError, match="not in the recipe"):
        make_augmenter("noise", params={"pitch": {"min_semitones": 1}})


def test_augment_table_copies_and_rates(corpus, load_spy):
    paths, labels = corpus["train"]
    rows = list(augment_table(paths, labels, "noise", copies=3, seed=0))
    assert len(rows) == 3 * len(paths)
    assert [p for p, _, _ in rows] == [p for p in paths for _ in range(3)]
    assert [lab for _, lab, _ in rows] == [lab for lab in labels for _ in range(3)]
    for path, _, out in rows:
        assert out.shape == load_audio(path, SR).shape  # same length at the same rate
    copies = [out for p, _, out in rows if p == paths[0]]
    assert not np.array_equal(copies[0], copies[1])  # copies differ from each other
    assert load_spy == paths  # each file read once


def test_augment_table_resamples_to_the_requested_rate(corpus):
    paths, labels = corpus["train"]
    _, _, out = next(augment_table(paths[:1], labels[:1], "shift", sample_rate=8000))
    assert out.shape == load_audio(paths[0], 8000).shape


def test_augment_table_only_classes(corpus, load_spy):
    paths, labels = corpus["train"]
    rows = list(augment_table(paths, labels, "gain", copies=2, only_classes=["angry"]))
    assert len(rows) == 2 * labels.count("angry")
    assert {lab for _, lab, _ in rows} == {"angry"}
    assert load_spy == [p for p, lab in zip(paths, labels, strict=True) if lab == "angry"]


def test_augment_table_is_seeded_per_file(corpus):
    paths, labels = corpus["train"]
    full = {(p, i % 2): out for i, (p, _, out) in
            enumerate(augment_table(paths, labels, "pitch+noise", copies=2, seed=5))}
    alone = list(augment_table(paths[2:3], labels[2:3], "pitch+noise", copies=2, seed=5))
    assert np.array_equal(alone[0][2], full[(paths[2], 0)])
    assert np.array_equal(alone[1][2], full[(paths[2], 1)])
    other = list(augment_table(paths[2:3], labels[2:3], "pitch+noise", copies=1, seed=6))
    assert not np.array_equal(other[0][2], full[(paths[2], 0)])


def test_augmented_training_features_read_training_files_only(corpus, load_spy):
    extractor = get_extractor("mfcc_stats", n_mfcc=13)
    train_paths, train_labels = corpus["train"]
    test_paths, _ = corpus["test"]
    X_aug, y_aug, source = augmented_training_features(
        extractor, train_paths, train_labels, "noise+shift", copies=2,
        only_classes=["neutral"], seed=0)
    assert set(load_spy) <= set(train_paths)
    assert not set(load_spy) & set(test_paths)
    neutral = [i for i, lab in enumerate(train_labels) if lab == "neutral"]
    assert X_aug.shape == (2 * len(neutral), *extractor.output_shape)
    assert X_aug.dtype == np.float32
    assert list(y_aug) == ["neutral"] * len(X_aug)
    assert sorted(set(source.tolist())) == neutral
    clean = extractor.extract_file(train_paths[neutral[0]])
    assert not np.allclose(X_aug[0], clean)
    again = augmented_training_features(extractor, train_paths, train_labels, "noise+shift",
                                        copies=2, only_classes=["neutral"], seed=0)
    assert np.array_equal(again.features, X_aug)


def test_augmented_training_features_empty_selection(corpus):
    paths, labels = corpus["train"]
    out = augmented_training_features("mfcc_stats", paths, labels, "noise",
                                      only_classes=["surprised"])
    assert out.features.shape == (0, *get_extractor("mfcc_stats").output_shape)
    assert len(out.labels) == 0 and len(out.source) == 0
