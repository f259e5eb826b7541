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


def test_validate_on_test_is_leaky_says_so_and_validates_on_test_rows_only():
    table = ravdess_like()
    test = [f"ravdess:{a}" for a in (21, 22, 23, 24)]
    with pytest.raises(ConfigError, match="allow_leakage"):
        make_splits(table, "holdout", test_speakers=test, validate_on_test=True)
    with pytest.warns(LeakageWarning, match="LEAKY VALIDATION") as caught:
        (split,) = make_splits(table, "holdout", test_speakers=test, valid_fraction=0.2,
                               validate_on_test=True, allow_leakage=True)
    assert "test data" in str(caught[0].message)
    assert split.leaky and "valid=test" in split.name
    np.testing.assert_array_equal(split.valid, split.test)
    # The validation speakers the holdout carved go back into training ...
    assert sorted(split.train) == sorted(set(range(len(table))) - set(split.test))
    # ... and without the option, validation rows are never test rows.
    (honest,) = make_splits(table, "holdout", test_speakers=test, valid_fraction=0.2)
    assert not honest.leaky and len(honest.valid)
    assert not set(honest.valid) & set(honest.test)
    check_speaker_disjoint(table, honest)


def test_random_80_10_10_split_with_validation_is_leaky():
    table = ravdess_like()
    with pytest.raises(ConfigError, match="allow_leakage"):
        make_splits(table, "random", test_fraction=0.1, valid_fraction=0.1)
    with pytest.warns(LeakageWarning, match="LEAKY SPLIT"):
        (split,) = make_splits(table, "random", allow_leakage=True, test_fraction=0.1,
                               valid_fraction=0.1, seed=3)
    assert split.leaky
    assert (len(split.train), len(split.valid), len(split.test)) == (192, 24, 24)
    assert not set(split.train) & set(split.valid)
    assert not (set(split.train) | set(split.valid)) & set(split.test)
    # Random rows: the same speakers are in all three parts.
    assert speakers(table, split.valid) & speakers(table, split.train)
    assert speakers(table, split.test) & speakers(table, split.train)
    with pytest.raises(ConfigError, match="valid_fraction"), pytest.warns(LeakageWarning):
        make_splits(table, "random", allow_leakage=True, test_fraction=0.5,
                    valid_fraction=0.5)


@pytest.mark.parametrize("kind, params", [
    ("speaker_folds", {"n_folds": 4}),
    ("loso", {}),
    ("holdout", {"test_speakers": ["ravdess:07", "ravdess:08"], "valid_fraction": 0.25}),
    ("holdout", {"test_speakers": ["ravdess:07"], "valid_speakers": ["ravdess:01"]}),
])
def test_every_non_leaky_split_keeps_train_valid_and_test_speakers_apart(kind, params):
    table = ravdess_like(n_actors=8)
    for split in make_splits(table, kind, **params):
        assert not split.leaky
        check_speaker_disjoint(table, split)
        assert not speakers(table, split.test) & (speakers(table, split.train)
                                                  | speakers(table, split.valid))


def test_networks_validate_on_the_splits_own_validation_rows():
    from emovox.config import load_config
    from emovox.experiment import Dataset, fit_fold
    from emovox.labels import get_label_set

    table = ravdess_like(n_actors=6, per_actor=8)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(table), 4)).astype(np.float32)
    features[table["label"].to_numpy() == "angry"] += 1.0
    dataset = Dataset(table, features, get_label_set({"classes": ["angry", "sad"]}), {}, [],
                      0.0)
    config = load_config(data={"name": "t", "corpora": ["x"], "features": "egemaps",
                               "model": {"name": "mlp", "epochs": 2, "input_shape": [4],
                                         "network_params": {"hidden_sizes": [4]}}})
    with pytest.warns(LeakageWarning):
        (leaky,) = make_splits(table, "holdout", test_speakers=["ravdess:06"],
                               validate_on_test=True, allow_leakage=True)
    (honest,) = make_splits(table, "holdout", test_speakers=["ravdess:06"],
                            valid_speakers=["ravdess:05"])
    for split in (leaky, honest):
        model = fit_fold(config, dataset, features, split)
        # Nothing carved from the training rows: every one was trained on ...
        assert len(model.valid_rows_) == 0 and len(model.train_rows_) == len(split.train)
        # ... and the validation loss is that of the split's validation rows.
        assert len(model.history_.valid_loss) == 2
    (plain,) = make_splits(table, "holdout", test_speakers=["ravdess:06"])
    carved = fit_fold(config, dataset, features, plain)
    assert len(carved.valid_rows_) > 0  # without split.valid it carves its own


def test_cross_corpus_can_score_each_test_corpus_on_its_own():
    table = pd.concat([ravdess_like(n_actors=4).assign(corpus="ravdess"),
                       ravdess_like(n_actors=2).assign(corpus="emodb", speaker="emodb:x"),
                       ravdess_like(n_actors=2).assign(corpus="crema-d", speaker="crema-d:y")],
                      ignore_index=True)
    together = make_splits(table, "cross_corpus", train_corpora=["ravdess"],
                           test_corpora=["emodb", "crema-d"])
    apart = make_splits(table, "cross_corpus", train_corpora=["ravdess"],
                        test_corpora=["emodb", "crema-d"], per_test_corpus=True)
    assert len(together) == 1 and len(apart) == 2
    assert [set(table["corpus"].iloc[s.test]) for s in apart] == [{"emodb"}, {"crema-d"}]
    for split in apart:
        assert set(table["corpus"].iloc[split.train]) == {"ravdess"} and not split.leaky
        np.testing.assert_array_equal(split.train, together[0].train)
