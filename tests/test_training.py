"""The trainer: best-epoch restore, early stopping, schedule, seeds, curves."""



from __future__ import annotations

import numpy as np
import pytest
import torch

from emovox.models.registry import make_network
from emovox.training import TrainingHistory, evaluate, train


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: much faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overfit_case(seed: int = 0):
    """A small training set with 30% flipped labels and a clean validation set.

    An MLP first learns the real signal (validation loss falls), then memorises
    the flipped labels (validation loss rises): the best epoch is in the middle.
    """
    rng = np.random.default_rng(seed)

    def draw(n: int, flip: float):
        y = np.arange(n) % 2
        X = rng.standard_normal((n, 10)).astype(np.float32)
        X[:, 0] += np.where(y == 1, 1.0, -1.0)
        return X, np.where(rng.random(n) < flip, 1 - y, y)

    return (*draw(40, 0.3), *draw(200, 0.0))


def fresh_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_network("mlp", 2, (10,), hidden_sizes=(128,))


SETTINGS = {"batch_size": 8, "lr": 3e-3, "seed": 0, "progress": False}


@pytest.fixture(scope="module")
def overfit_run():
    X, y, Xv, yv = overfit_case()
    net = fresh_mlp()
    history = train(net, X, y, Xv, yv, epochs=30, **SETTINGS)
    return net, history


def test_history_records_every_epoch(overfit_run):
    _, history = overfit_run
    assert isinstance(history, TrainingHistory)
    assert history.epochs == 30
    for values in (history.train_loss, history.train_accuracy, history.valid_loss,
                   history.valid_accuracy, history.lr):
        assert len(values) == 30 and all(np.isfinite(values))
    assert history.monitor == "valid_loss" and not history.stopped_early
    assert history.seconds > 0


def test_best_epoch_is_restored(overfit_run):
    net, history = overfit_run
    X, y, Xv, yv = overfit_case()
    valid = np.array(history.valid_loss)
    # The case really overfits: the validation loss rises well after its minimum.
    assert 1 < history.best_epoch < 25
    assert history.best_epoch == int(valid.argmin()) + 1
    assert valid[-1] > valid.min() + 0.1
    # The returned weights give the best epoch's validation loss ...
    loss, _ = evaluate(net, Xv, yv)
    assert loss == pytest.approx(history.best_loss, abs=1e-6)
    assert loss == pytest.approx(valid.min(), abs=1e-6)
    # ... and are exactly those of a run stopped at that epoch.
    twin = fresh_mlp()
    train(twin, X, y, Xv, yv, epochs=history.best_epoch, **SETTINGS)
    for (name, a), b in zip(net.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not net.training  # left in eval mode


def test_early_stopping_stops_after_patience(overfit_run):
    _, full = overfit_run
    X, y, Xv, yv = overfit_case()
    history = train(fresh_mlp(), X, y, Xv, yv, epochs=200, early_stopping_patience=4,
                    **SETTINGS)
    assert history.stopped_early
    assert history.best_epoch == full.best_epoch
    assert history.epochs == history.best_epoch + 4


def test_learning_rate_is_reduced_on_plateau():
    X, y, Xv, yv = overfit_case()
    history = train(fresh_mlp(), X, y, Xv, yv, epochs=20, lr_factor=0.5, lr_patience=2,
                    **SETTINGS)
    assert history.lr[0] == pytest.approx(3e-3)
    assert min(history.lr) < 3e-3
    assert all(b <= a for a, b in zip(history.lr, history.lr[1:], strict=False))


def test_same_seed_same_history_different_seed_different_history():
    X, y, Xv, yv = overfit_case()

    def run(seed: int) -> dict:
        settings = {**SETTINGS, "seed": seed}
        out = train(fresh_mlp(seed), X, y, Xv, yv, epochs=6, **settings).to_dict()
        out.pop("seconds")
        return out

    first = run(0)
    assert run(0) == first
    assert run(1)["train_loss"] != first["train_loss"]


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd"])
def test_other_optimizers_train(optimizer):
    X, y, Xv, yv = overfit_case()
    history = train(fresh_mlp(), X, y, Xv, yv, epochs=5, optimizer=optimizer, momentum=0.9,
                    weight_decay=1e-4, batch_size=8, lr=1e-2, progress=False)
    assert history.valid_loss[history.best_epoch - 1] < history.valid_loss[0] + 1e-9
    assert history.train_loss[-1] < history.train_loss[0]


def test_without_validation_the_training_loss_is_monitored(tmp_path):
    X, y, _, _ = overfit_case()
    with pytest.warns(UserWarning, match="no validation set"):
        history = train(fresh_mlp(), X, y, epochs=8, **SETTINGS)
    assert history.monitor == "train_loss"
    assert history.valid_loss == [] and history.valid_accuracy == []
    assert history.best_epoch == int(np.argmin(history.train_loss)) + 1
    assert any("no validation set" in note for note in history.notes)
    assert history.plot(tmp_path / "curve.png").stat().st_size > 0


def test_training_curve_png_is_written_atomically(overfit_run, tmp_path):
    _, history = overfit_run
    out = history.plot(tmp_path / "plots" / "training.png", title="mlp")
    assert out == tmp_path / "plots" / "training.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["training.png"]  # no temp files left


def test_history_round_trips_through_a_dict(overfit_run):
    _, history = overfit_run
    assert TrainingHistory.from_dict(history.to_dict()) == history


def test_augment_fn_sees_training_batches_only():
    X, y, Xv, yv = overfit_case()
    sizes: list[int] = []

    def augment(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(len(batch))
        return batch + 0.01 * torch.randn_like(batch)

    train(fresh_mlp(), X, y, Xv, yv, epochs=2, augment_fn=augment, **SETTINGS)
    assert sum(sizes) == 2 * len(X)  # never called on the 200 validation rows


def test_thread_setting_is_restored():
    X, y, Xv, yv = overfit_case()
    before = torch.get_num_threads()
    train(fresh_mlp(), X, y, Xv, yv, epochs=1, num_threads=2, **SETTINGS)
    assert torch.get_num_threads() == before


def test_bad_arguments_are_refused():
    X, y, Xv, yv = overfit_case()
    with pytest.raises(ValueError, match="optimizer"):
        train(fresh_mlp(), X, y, Xv, yv, epochs=1, optimizer="adamw", progress=False)
    with pytest.raises(ValueError, match="class indices"):
        train(fresh_mlp(), X, y + 5, Xv, yv, epochs=1, progress=False)
    with pytest.raises(ValueError, match="both"):
        train(fresh_mlp(), X, y, Xv, None, epochs=1, progress=False)


# --------------------------------------------------------------------------- NeuralClassifier
CLASSES = ["sad", "angry", "happy"]


def speaker_data(n_speakers: int = 6, per_speaker: int = 12, dims: int = 16, seed: int = 0):
    """Rows of 3 classes (string labels) from several speakers; the class shifts 2 dims."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    labels = np.array([CLASSES[i % 3] for i in range(n)])
    speakers = np.repeat([f"spk{s:02d}" for s in range(n_speakers)], per_speaker)
    X = rng.standard_normal((n, dims)).astype(np.float32) * 2.0 + 5.0
    for k, name in enumerate(CLASSES):
        X[labels == name, k] += 4.0
    return X, labels, speakers


def small_classifier(**params):
    from emovox.models.neural import NeuralClassifier

    defaults = {"network": "mlp", "network_params": {"hidden_sizes": [32]}, "epochs": 15,
                "batch_size": 16, "lr": 3e-3, "valid_fraction": 0.34, "progress": False,
                "early_stopping_patience": None}
    return NeuralClassifier(**{**defaults, **params})


def test_carved_validation_is_speaker_disjoint():
    X, y, speakers = speaker_data()
    clf = small_classifier().fit(X, y, groups=speakers)
    train_speakers = set(speakers[clf.train_rows_])
    valid_speakers = set(speakers[clf.valid_rows_])
    assert train_speakers and valid_speakers
    assert not train_speakers & valid_speakers
    assert sorted(np.concatenate([clf.train_rows_, clf.valid_rows_])) == list(range(len(X)))
    assert len(clf.history_.valid_loss) == clf.history_.epochs


def test_without_groups_validation_rows_are_random_with_a_warning():
    X, y, _ = speaker_data()
    with pytest.warns(UserWarning, match="no groups"):
        clf = small_classifier(epochs=2).fit(X, y)
    assert 0 < len(clf.valid_rows_) < len(X)


def test_augmented_rows_never_validate_nor_leak_validation_speakers():
    X, y, speakers = speaker_data()
    extra = np.arange(0, len(X), 2)  # pretend every other row has an augmented copy
    X_all = np.concatenate([X, X[extra] + 0.1])
    y_all = np.concatenate([y, y[extra]])
    groups = np.concatenate([speakers, speakers[extra]])
    augmented = np.r_[np.zeros(len(X), bool), np.ones(len(extra), bool)]
    clf = small_classifier(epochs=2).fit(X_all, y_all, groups=groups, augmented=augmented)
    assert not augmented[clf.valid_rows_].any()
    valid_speakers = set(groups[clf.valid_rows_])
    trained_copies = clf.train_rows_[augmented[clf.train_rows_]]
    assert len(trained_copies) > 0
    assert not set(groups[trained_copies]) & valid_speakers


def test_probabilities_classes_and_standardisation():
    X, y, speakers = speaker_data()
    clf = small_classifier(epochs=40).fit(X, y, groups=speakers)
    assert list(clf.classes_) == sorted(CLASSES)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    predicted = clf.predict(X)
    assert np.array_equal(predicted, clf.classes_[proba.argmax(axis=1)])
    assert (predicted == y).mean() > 0.8  # columns follow classes_
    np.testing.assert_allclose(clf.mean_, X[clf.train_rows_].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(clf.scale_, X[clf.train_rows_].std(axis=0), rtol=1e-4)


def test_flattened_sequences_are_reshaped_and_standardised_per_dim():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 10, 4)).astype(np.float32) + np.arange(4)
    y = np.arange(30) % 2
    Xv = rng.standard_normal((10, 10, 4)).astype(np.float32)
    clf = small_classifier(network="lstm", network_params={"hidden_size": 8},
                           input_shape=(10, 4), epochs=2)
    clf.fit(X.reshape(30, -1), y, X_valid=Xv.reshape(10, -1), y_valid=np.arange(10) % 2)
    assert clf.input_shape_ == (10, 4)
    assert clf.mean_.shape == (4,)
    np.testing.assert_allclose(clf.mean_, X.mean(axis=(0, 1)), atol=1e-5)
    assert len(clf.valid_rows_) == 0 and len(clf.history_.valid_loss) == 2
    assert clf.predict_proba(Xv.reshape(10, -1)).shape == (10, 2)
    assert list(clf.classes_) == [0, 1]


def test_safetensors_round_trip_gives_identical_probabilities(tmp_path):
    import json

    from emovox.models.neural import NeuralClassifier, load_neural, save_neural

    X, y, speakers = speaker_data()
    clf = small_classifier(network_params={"hidden_sizes": [16], "batch_norm": True},
                           epochs=5).fit(X, y, groups=speakers)
    folder = save_neural(clf, tmp_path / "net")
    assert sorted(p.name for p in folder.iterdir()) == ["neural.json", "weights.safetensors"]
    assert not [p for p in tmp_path.rglob("*") if p.suffix in {".pkl", ".pickle", ".pt"}]
    meta = json.loads((folder / "neural.json").read_text())
    assert meta["classes"] == sorted(CLASSES) and meta["params"]["network"] == "mlp"
    loaded = load_neural(folder)
    assert isinstance(loaded, NeuralClassifier)
    assert list(loaded.classes_) == list(clf.classes_)
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.history_ == clf.history_


def test_sklearn_clone_and_params():
    from sklearn.base import clone

    clf = small_classifier(lr=0.01)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.lr == 0.01
