"""Per-group normalisation: batch, stream and MAP statistics, and that labels never enter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emovox.config import load_config
from emovox.experiment import Dataset, balance_weights, normalised_features
from emovox.labels import get_label_set
from emovox.normalization import (
    FeatureStats,
    RunningStats,
    group_stats,
    standardise_by_group,
)
from emovox.protocols import corpus_domains, make_splits


def _grouped(seed: int = 0, n_groups: int = 4, per_group: int = 30, dim: int = 5):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 5, size=(n_groups, dim))
    scales = rng.uniform(0.5, 3, size=(n_groups, dim))
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    X = np.concatenate([offsets[i] + scales[i] * rng.standard_normal((per_group, dim))
                        for i in range(n_groups)])
    return X, groups


def test_each_group_is_standardised_by_its_own_statistics():
    X, groups = _grouped()
    Z = standardise_by_group(X, groups)
    for g in np.unique(groups):
        block = Z[groups == g]
        np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(block.std(axis=0), 1, atol=1e-3)


def test_running_statistics_converge_to_the_batch_statistics():
    X, _ = _grouped(n_groups=1, per_group=500)
    running = RunningStats(X.shape[1])
    errors = []
    for n, x in enumerate(X, start=1):
        running.update(x)
        if n in (10, 100, 500):
            batch = FeatureStats.of(X[:n])
            stream = running.stats()
            np.testing.assert_allclose(stream.mean, batch.mean, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(stream.var, batch.var, rtol=1e-8, atol=1e-10)
            errors.append(np.abs(stream.mean - FeatureStats.of(X).mean).max())
    assert errors[-1] < 1e-9 < errors[0]  # the stream reaches the whole recording's mean


def test_running_statistics_accept_blocks_and_refuse_when_empty():
    X, _ = _grouped(n_groups=1, per_group=40)
    one_by_one = RunningStats(X.shape[1])
    for x in X:
        one_by_one.update(x)
    blocks = RunningStats(X.shape[1]).update(X[:15]).update(X[15:])
    np.testing.assert_allclose(blocks.stats().var, one_by_one.stats().var)
    with pytest.raises(ValueError, match="no vectors"):
        RunningStats(3).stats()


def test_map_statistics_move_from_the_reference_to_the_group_as_it_grows():
    X, groups = _grouped()
    reference = FeatureStats.average(list(group_stats(X, groups).values()))
    own = FeatureStats.of(X[groups == "g0"])
    distances = []
    for n in (1, 5, 30):
        stats = FeatureStats.of(X[groups == "g0"][:n]).with_prior(reference, 8.0)
        distances.append(np.abs(stats.mean - own.mean).mean())
    assert distances[0] > distances[1] > distances[2]
    # One utterance alone would be standardised to zeros; with the prior it is not.
    single = FeatureStats.of(X[:1]).with_prior(reference, 8.0).standardise(X[:1])
    assert np.abs(single).max() > 0.1
    assert FeatureStats.of(X[:3]).with_prior(reference, 0.0).count == 3


def _dataset(labels: list[str]) -> Dataset:
    X, groups = _grouped(n_groups=4, per_group=10)
    table = pd.DataFrame({"path": [f"/x/{i}.wav" for i in range(len(X))],
                          "speaker": [f"c:{g}" for g in groups], "corpus": "c",
                          "label": labels, "emotion": labels, "gender": "female"})
    return Dataset(table, X.astype(np.float32), get_label_set("four"), {}, [], 0.0)


def test_normalised_features_never_use_labels_and_train_statistics_ignore_test_rows():
    config = load_config(data={"name": "t", "corpora": ["/x"], "features": "egemaps",
                               "model": "logreg", "normalization": "speaker"})
    rng = np.random.default_rng(1)
    labels = list(rng.choice(["angry", "happy", "sad", "neutral"], size=40))
    shuffled = list(rng.permutation(labels))
    train = np.arange(20)  # speakers g0, g1
    a = normalised_features(config, _dataset(labels), train)
    b = normalised_features(config, _dataset(shuffled), train)
    np.testing.assert_array_equal(a, b)  # labels play no part
    # Changing a test speaker's features changes nothing in the training rows.
    changed = _dataset(labels)
    changed.features[20:] *= 7.0
    c = normalised_features(config, changed, train)
    np.testing.assert_array_equal(a[:20], c[:20])


def test_test_speaker_statistics_come_from_their_test_rows_only():
    """Recordings of a test speaker that the fold leaves out never shape their statistics."""
    config = load_config(data={"name": "t", "corpora": ["/x"], "features": "egemaps",
                               "model": "logreg", "normalization": "speaker"})
    dataset = _dataset(["angry", "happy", "sad", "neutral"] * 10)
    train, test = np.arange(20), np.arange(20, 25)  # half of speaker g2 is tested
    out = normalised_features(config, dataset, train, test)
    changed = _dataset(["angry", "happy", "sad", "neutral"] * 10)
    changed.features[25:] += 50.0  # g2's other half and g3: outside the fold
    again = normalised_features(config, changed, train, test)
    np.testing.assert_array_equal(out[:25], again[:25])
    prior = FeatureStats.average(list(group_stats(
        dataset.features[train], dataset.table.speaker.to_numpy()[train]).values()))
    expected = FeatureStats.of(dataset.features[test]).with_prior(prior, 8.0)
    np.testing.assert_allclose(out[test], expected.standardise(dataset.features[test]),
                               rtol=1e-5, atol=1e-5)


def test_balance_weights_give_each_corpus_equal_total_weight():
    speakers = np.array(["a:1"] * 30 + ["b:1"] * 10)
    labels = np.array(["x", "y"] * 20)
    weights = balance_weights(labels, speakers, "corpus")
    assert weights[:30].sum() == pytest.approx(weights[30:].sum())
    assert weights.mean() == pytest.approx(1.0)
    per_class = balance_weights(labels, speakers, "corpus_class")
    for corpus in ("a", "b"):
        for label in ("x", "y"):
            rows = (np.char.startswith(speakers, corpus)) & (labels == label)
            assert per_class[rows].sum() == pytest.approx(len(labels) / 4)


def test_leave_one_domain_out_keeps_test_actors_out_of_training():
    rows = []
    for actor in ("01", "02"):
        for channel in ("speech", "song"):
            rows += [{"path": f"/r/{actor}{channel}{i}", "speaker": f"ravdess:{actor}",
                      "corpus": "ravdess", "channel": channel, "label": "sad"}
                     for i in range(3)]
    rows += [{"path": f"/e/{i}", "speaker": "emodb:03", "corpus": "emodb",
              "channel": None, "label": "sad"} for i in range(3)]
    table = pd.DataFrame(rows)
    assert sorted(corpus_domains(table).unique()) == ["emodb", "ravdess-song",
                                                       "ravdess-speech"]
    splits = make_splits(table, "loco", by="domain")
    assert len(splits) == 3
    for split in splits:
        test_speakers = set(table.speaker.iloc[split.test])
        assert not test_speakers & set(table.speaker.iloc[split.train])
    song = next(s for s in splits if s.name.endswith("test=ravdess-song"))
    assert set(table.corpus.iloc[song.train]) == {"emodb"}  # speech shares the actors


def test_unadapted_test_rows_use_the_average_training_speaker():
    config = load_config(data={"name": "t", "corpora": ["/x"], "features": "egemaps",
                               "model": "logreg", "normalization": "speaker",
                               "adapt_test": False})
    dataset = _dataset(["angry", "happy", "sad", "neutral"] * 10)
    train = np.arange(20)
    out = normalised_features(config, dataset, train)
    prior = FeatureStats.average(list(group_stats(
        dataset.features[train], dataset.table.speaker.to_numpy()[train]).values()))
    np.testing.assert_allclose(out[20:], prior.standardise(dataset.features[20:]), rtol=1e-5)
    adapted = normalised_features(config.model_copy(update={"adapt_test": True}), dataset,
                                  train)
    np.testing.assert_array_equal(out[:20], adapted[:20])
    assert not np.allclose(out[20:], adapted[20:])
