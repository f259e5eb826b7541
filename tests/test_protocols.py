import numpy as np
import pandas as pd
import pytest

from emovox.errors import ConfigError
from emovox.protocols import (
    LeakageWarning,
    check_speaker_disjoint,
    make_splits,
    select_rows,
    with_validation,
)


def ravdess_like(n_actors=24, per_actor=10):
    rows = []
    for actor in range(1, n_actors + 1):
        for i in range(per_actor):
            rows.append({"path": f"{actor}-{i}.wav", "speaker": f"ravdess:{actor:02d}",
                         "gender": "male" if actor % 2 else "female", "corpus": "ravdess",
                         "emotion": ["angry", "sad"][i % 2], "label": ["angry", "sad"][i % 2]})
    return pd.DataFrame(rows)


def speakers(table, rows):
    return set(table["speaker"].iloc[rows])


def test_six_actor_folds_are_consecutive_groups_of_four():
    table = ravdess_like()
    splits = make_splits(table, "speaker_folds", n_folds=6)
    assert len(splits) == 6
    assert speakers(table, splits[0].test) == {f"ravdess:{a:02d}" for a in (1, 2, 3, 4)}
    assert speakers(table, splits[-1].test) == {f"ravdess:{a:02d}" for a in (21, 22, 23, 24)}
    all_test = np.concatenate([s.test for s in splits])
    assert sorted(all_test) == list(range(len(table)))  # every row tested exactly once
    for split in splits:
        assert not speakers(table, split.train) & speakers(table, split.test)


def test_loso_one_fold_per_speaker():
    table = ravdess_like(n_actors=5)
    splits = make_splits(table, "loso")
    assert [speakers(table, s.test) for s in splits] == [{f"ravdess:{a:02d}"} for a in
                                                         range(1, 6)]


def test_holdout_with_speaker_validation():
    table = ravdess_like()
    test = [f"ravdess:{a}" for a in (21, 22, 23, 24)]
    (split,) = make_splits(table, "holdout", test_speakers=test, valid_fraction=0.2, seed=1)
    assert speakers(table, split.test) == set(test)
    assert len(speakers(table, split.valid)) == 4  # 20 % of 20 training actors
    assert not speakers(table, split.valid) & speakers(table, split.train)
    assert not speakers(table, split.valid) & set(test)


def test_holdout_utterance_validation_shares_speakers_with_train_only():
    table = ravdess_like()
    (split,) = make_splits(table, "holdout", test_speakers=["ravdess:24"],
                           valid_fraction=0.2, valid_by="utterance")
    assert speakers(table, split.valid) & speakers(table, split.train)
    assert "ravdess:24" not in speakers(table, split.valid) | speakers(table, split.train)


def test_random_split_needs_explicit_leakage_and_warns():
    table = ravdess_like()
    with pytest.raises(ConfigError, match="allow_leakage"):
        make_splits(table, "random")
    with pytest.warns(LeakageWarning, match="LEAKY"):
        (split,) = make_splits(table, "random", allow_leakage=True, test_fraction=0.25)
    assert split.leaky
    assert speakers(table, split.train) & speakers(table, split.test)


def test_check_speaker_disjoint_catches_a_shared_speaker():
    table = ravdess_like(n_actors=3)
    (split,) = make_splits(table, "holdout", test_speakers=["ravdess:01"])
    split.train = np.append(split.train, split.test[0])
    with pytest.raises(AssertionError, match="ravdess:01"):
        check_speaker_disjoint(table, split)


def test_cross_corpus_and_loco():
    a, b = ravdess_like(3), ravdess_like(2)
    b["corpus"] = "emodb"
    b["speaker"] = b["speaker"].str.replace("ravdess", "emodb")
    table = pd.concat([a, b], ignore_index=True)
    (split,) = make_splits(table, "cross_corpus", train_corpora=["ravdess"],
                           test_corpora=["emodb"])
    assert set(table["corpus"].iloc[split.test]) == {"emodb"}
    assert set(table["corpus"].iloc[split.train]) == {"ravdess"}
    assert len(make_splits(table, "loco")) == 2
    with pytest.raises(ConfigError, match="both train and test"):
        make_splits(table, "cross_corpus", train_corpora=["emodb"], test_corpora=["emodb"])


def test_gender_subset_and_validation_carving():
    table = select_rows(ravdess_like(), {"gender": "male"})
    assert set(table["gender"]) == {"male"}
    split = make_splits(table, "speaker_folds", n_folds=3)[0]
    carved = with_validation(table, split, fraction=0.25, seed=0)
    assert len(carved.valid) and not speakers(table, carved.valid) & speakers(table,
                                                                              carved.train)
    assert np.array_equal(carved.test, split.test)


def test_bad_protocols_are_config_errors():
    table = ravdess_like(n_actors=3)
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_splits(table, "kfold")
    with pytest.raises(ConfigError, match="n_folds"):
        make_splits(table, "speaker_folds", n_folds=10)
    with pytest.raises(ConfigError, match="at least 2 speakers"):
        make_splits(table.assign(speaker="x"), "loso")


def test_speaker_folds_over_several_corpora_test_every_corpus():
    a, b = ravdess_like(8), ravdess_like(4)
    b["corpus"] = "emodb"
    b["speaker"] = b["speaker"].str.replace("ravdess", "emodb")
    table = pd.concat([a, b], ignore_index=True)
    splits = make_splits(table, "speaker_folds", n_folds=4)
    for split in splits:
        assert set(table["corpus"].iloc[split.test]) == {"ravdess", "emodb"}
        assert len(speakers(table, split.test)) == 3
