"""Protocols and a small experiment on the real corpora (skipped when they are absent)."""

from __future__ import annotations

import warnings

import pytest
from conftest import real_corpus

from emovox.config import load_config
from emovox.corpora import load_corpora, load_corpus
from emovox.experiment import run_experiment
from emovox.labels import get_label_set
from emovox.protocols import LeakageWarning, make_splits

pytestmark = pytest.mark.corpora


def _speakers(table, rows):
    return set(table["speaker"].iloc[rows])


def test_ravdess_six_actor_folds_are_the_published_groups():
    table, _ = get_label_set("ravdess8").apply(
        load_corpus(real_corpus("ravdess/Audio_Speech_Actors_01-24")).table)
    splits = make_splits(table, "speaker_folds", n_folds=6)
    for k, split in enumerate(splits):
        actors = {int(s.split(":")[1]) for s in _speakers(table, split.test)}
        assert actors == set(range(4 * k + 1, 4 * k + 5))
        assert not _speakers(table, split.train) & _speakers(table, split.test)
        assert len(split.test) == 240 and len(split.train) == 1200


@pytest.mark.parametrize("folder, kind, params, n_folds", [
    ("emodb/wav", "loso", {}, 10),
    ("crema-d/AudioWAV", "speaker_folds", {"n_folds": 5}, 5),
    ("ravdess/Audio_Song_Actors_01-24", "loso", {}, 23),
])
def test_real_folds_are_speaker_disjoint_and_cover_everything(folder, kind, params, n_folds):
    table = load_corpus(real_corpus(folder)).table
    splits = make_splits(table, kind, **params)
    assert len(splits) == n_folds
    tested = [row for split in splits for row in split.test]
    assert sorted(tested) == list(range(len(table)))
    for split in splits:
        assert not _speakers(table, split.train) & _speakers(table, split.test)


def test_holdout_and_gender_subset_on_ravdess():
    table = load_corpus(real_corpus("ravdess/Audio_Speech_Actors_01-24")).table
    males = table[table["gender"] == "male"].reset_index(drop=True)
    (split,) = make_splits(males, "holdout", test_speakers=["ravdess:21", "ravdess:23"],
                           valid_fraction=0.2, seed=0)
    assert _speakers(males, split.test) == {"ravdess:21", "ravdess:23"}
    assert len(_speakers(males, split.valid)) == 2  # 20 % of the 10 other male actors
    assert not (_speakers(males, split.train) | _speakers(males, split.valid)) & {
        "ravdess:21", "ravdess:23"}


def test_cross_corpus_on_shared_labels():
    corpus = load_corpora([real_corpus("emodb/wav"), real_corpus("crema-d/AudioWAV")])
    table, dropped = get_label_set("common6").apply(corpus.table)
    assert dropped == {"boredom": 81}  # the only EmoDB/CREMA-D emotion outside common6
    (split,) = make_splits(table, "cross_corpus", train_corpora=["crema-d"],
                           test_corpora=["emodb"])
    assert set(table["corpus"].iloc[split.test]) == {"emodb"}
    assert len(split.test) == 535 - 81 and len(split.train) == 1621


def test_random_split_on_ravdess_shares_actors_and_warns():
    table, _ = get_label_set("ravdess8").apply(
        load_corpus(real_corpus("ravdess/Audio_Speech_Actors_01-24")).table)
    with pytest.warns(LeakageWarning):
        (split,) = make_splits(table, "random", allow_leakage=True)
    assert len(_speakers(table, split.train) & _speakers(table, split.test)) == 24


def test_emodb_experiment_beats_chance_by_far(tmp_path):
    config = load_config(data={
        "name": "emodb-mfcc", "corpora": [str(real_corpus("emodb/wav"))], "labels": "emodb7",
        "features": "mfcc_stats", "model": {"name": "logreg", "params": {"C": 0.1}},
        "protocol": {"kind": "loso"}, "cache_dir": str(tmp_path / "cache")})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        result = run_experiment(config, progress=False)
    assert len(result.folds) == 10
    # 7 classes: chance UAR is 0.14; MFCC statistics reach about 0.5 speaker-independently.
    assert result.summary.loc["mean", "uar"] > 0.4
