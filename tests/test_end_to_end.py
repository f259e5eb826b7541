"""From a synthetic corpus to a run folder, a bundle, and predictions from the bundle."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from emovox.bundle import load_bundle, save_bundle
from emovox.cli import app
from emovox.config import load_config
from emovox.errors import AudioError, BundleError, ConfigError
from emovox.experiment import prepare_dataset, run_experiment, train_bundle, write_run
from emovox.recognizer import Recognizer
from emovox.synth import synth_voice


@pytest.fixture(name="corpus")
def _corpus(synthetic_corpus):
    """Manifest of 6 synthetic speakers x 3 emotions x 4 takes (see conftest)."""
    return synthetic_corpus


def make_config(manifest, tmp_path, **changes):
    data = {"name": "synthetic", "corpora": [{"path": str(manifest), "kind": "manifest"}],
            "labels": {"name": "three", "classes": ["angry", "happy", "sad"]},
            "features": {"name": "mfcc_stats"}, "model": {"name": "logreg", "params": {"C": 1.0}},
            "protocol": {"kind": "speaker_folds", "n_folds": 3}, "cache_dir": None,
            "n_jobs": 1, "output_dir": str(tmp_path / "runs")}
    data.update(changes)
    return load_config(data=data)


def test_experiment_is_speaker_independent_and_learns(corpus, tmp_path):
    config = make_config(corpus, tmp_path)
    result = run_experiment(config, progress=False)
    assert len(result.folds) == 3
    predictions = result.predictions
    for fold, rows in predictions.groupby("fold"):
        tested = set(rows["speaker"])
        assert len(tested) == 2, fold  # 6 speakers / 3 folds
    assert not result.leaky
    assert result.summary.loc["mean", "uar"] > 0.8  # pitch/loudness classes are easy
    assert result.confusion.sum() == 72

    run_dir = write_run(result)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"] == "3 speaker-disjoint folds"
    assert metrics["mean"]["uar"] == pytest.approx(result.summary.loc["mean", "uar"])
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml", "metrics.json", "folds.csv", "per_class.csv", "predictions.csv",
        "confusion.txt", "confusion.png", "folds.png"}
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]


def test_random_split_is_labelled_leaky(corpus, tmp_path):
    config = make_config(corpus, tmp_path, protocol={"kind": "random", "allow_leakage": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(config, progress=False)
    assert result.leaky and any("LEAKY" in note for note in result.notes)
    with pytest.raises(ConfigError, match="allow_leakage"):
        run_experiment(make_config(corpus, tmp_path, protocol={"kind": "random"}),
                       progress=False)


def test_speaker_normalisation_is_reported(corpus, tmp_path):
    config = make_config(corpus, tmp_path, normalization="speaker")
    dataset = prepare_dataset(config, progress=False)
    result = run_experiment(config, dataset, progress=False)
    assert any("per-speaker" in note for note in result.notes)


def test_bundle_round_trip_and_recognizer(corpus, tmp_path):
    config = make_config(corpus, tmp_path)
    bundle, _result = train_bundle(config, progress=False)
    assert "3 speaker-disjoint folds" in bundle.card
    path = save_bundle(bundle, tmp_path / "bundle")
    assert sorted(p.name for p in path.iterdir()) == ["MODEL_CARD.md", "bundle.json",
                                                       "model.skops"]
    loaded = load_bundle(path)
    recognizer = Recognizer(loaded, n_jobs=1)
    angry = synth_voice(1.2, f0=225, f0_range=0.6, loudness=0.6, seed=999, vowels="oie")
    sad = synth_voice(1.2, f0=95, f0_range=0.05, loudness=0.15, seed=998, vowels="oie")
    assert recognizer.predict_signal(angry, 16000)["emotion"].iloc[0] == "angry"
    assert recognizer.predict_signal(sad, 16000)["emotion"].iloc[0] == "sad"

    good = tmp_path / "sad.wav"
    sf.write(good, sad, 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    frame = recognizer.predict_files([good, empty], progress=False)
    assert list(frame.index.names) == ["file", "start", "end"]
    assert list(frame.columns) == ["emotion", "confidence", "angry", "happy", "sad",
                                    "basis"]
    assert np.allclose(frame[["angry", "happy", "sad"]].sum(axis=1), 1.0)
    assert frame.attrs["failures"][0][0] == str(empty)
    with pytest.raises(AudioError, match="empty"):
        recognizer.predict_file(empty)


def test_bundle_refuses_foreign_code(corpus, tmp_path):
    import skops.io as sio

    config = make_config(corpus, tmp_path)
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    path = save_bundle(bundle, tmp_path / "bundle")
    sio.dump({"model": pd.Timestamp("2020-01-01")}, path / "model.skops")  # not sklearn
    with pytest.raises(BundleError, match="refusing"):
        load_bundle(path)
    (path / "bundle.json").write_text("{}")
    with pytest.raises(BundleError, match="unsupported bundle format"):
        load_bundle(path)


def test_cli_evaluate_train_predict(corpus, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(f"""
name: cli
corpora: [{{path: {corpus}, kind: manifest}}]
labels: {{classes: [angry, happy, sad]}}
features: mfcc_stats
model: logreg
protocol: {{kind: loso}}
cache_dir: {tmp_path / "cache"}
n_jobs: 1
""")
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", str(config), "protocol.kind=speaker_folds",
                              "protocol.n_folds=2", "--output-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    assert "2 speaker-disjoint folds" in out.output
    bundle_dir = tmp_path / "model"
    out = runner.invoke(app, ["train", str(config), "--no-evaluate", "--out", str(bundle_dir)])
    assert out.exit_code == 0, out.output
    wav = tmp_path / "x.wav"
    sf.write(wav, synth_voice(1.2, f0=225, f0_range=0.6, loudness=0.6, vowels="oie"), 16000)
    out = runner.invoke(app, ["predict", str(wav), "--bundle", str(bundle_dir), "--format",
                              "json", "--jobs", "1"])
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert records[0]["file"] == str(wav) and records[0]["emotion"] == "angry"
    out = runner.invoke(app, ["predict", str(wav), "--bundle", str(bundle_dir), "--format",
                              "csv", "--jobs", "1"])
    frame = pd.read_csv(__import__("io").StringIO(out.stdout))
    assert frame.loc[0, "emotion"] == "angry" and "confidence" in frame


def test_model_search_selects_on_training_speakers_only(corpus, tmp_path, monkeypatch):
    from sklearn.model_selection import GridSearchCV

    seen_groups = []
    original_fit = GridSearchCV.fit

    def spy(self, X, y=None, groups=None, **kwargs):
        seen_groups.append(set(groups))
        return original_fit(self, X, y, groups=groups, **kwargs)

    monkeypatch.setattr(GridSearchCV, "fit", spy)
    config = make_config(corpus, tmp_path,
                         model={"name": "logreg", "search": {"C": [0.01, 1.0]}})
    result = run_experiment(config, progress=False)
    assert len(seen_groups) == 3
    for groups, fold in zip(seen_groups, result.folds, strict=True):
        test_speakers = set(result.predictions.loc[result.predictions["fold"] == fold.name,
                                                   "speaker"])
        assert groups and not groups & test_speakers


def test_cli_corpus_describe_and_show(corpus, tmp_path):
    runner = CliRunner()
    chart = tmp_path / "counts.png"
    out = runner.invoke(app, ["corpus", "describe", str(corpus), "--kind", "manifest",
                              "--plot", str(chart)])
    assert out.exit_code == 0, out.output
    assert "72 utterances, 6 speakers" in out.output
    assert "angry" in out.output and chart.read_bytes()[:4] == b"\x89PNG"
    figure = tmp_path / "one.png"
    wav = next(corpus.parent.glob("*.wav"))
    out = runner.invoke(app, ["show", str(wav), "--out", str(figure)])
    assert out.exit_code == 0, out.output
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncorpora: [a]\nfeatures: compare\nmodel: svm\nprotcol: {}\n")
    out = runner.invoke(app, ["evaluate", str(bad)])
    assert out.exit_code != 0
    assert "protcol" in str(out.exception) or "protcol" in out.output


def test_network_with_augmentation_trains_and_bundles(corpus, tmp_path):
    config = make_config(
        corpus, tmp_path,
        features={"name": "mfcc_sequence", "n_mfcc": 20, "duration": 1.0},
        model={"name": "cnn_small_b", "params": {"epochs": 8, "batch_size": 16}},
        augment={"recipe": "noise", "copies": 1},
        protocol={"kind": "speaker_folds", "n_folds": 2})
    result = run_experiment(config, progress=False)
    assert len(result.histories) == 2
    for history in result.histories.values():
        assert len(history.train_loss) >= 1
    run_dir = write_run(result)
    assert len(list(run_dir.glob("training-curve-*.png"))) == 2
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    path = save_bundle(bundle, tmp_path / "net-bundle")
    assert (path / "network" / "weights.safetensors").is_file()
    assert not list(path.rglob("*.pkl")) and not (path / "model.skops").exists()
    recognizer = Recognizer(load_bundle(path), n_jobs=1)
    signal = synth_voice(1.2, f0=225, f0_range=0.6, loudness=0.6, vowels="oie")
    frame = recognizer.predict_signal(signal, 16000)
    assert np.isclose(frame[recognizer.classes].to_numpy().sum(), 1.0)
    direct = bundle.model.predict_proba(
        bundle.extractor().extract_signal(signal, 16000)[None].reshape(1, -1))
    assert np.allclose(frame[list(bundle.model.classes_)].to_numpy(), direct, atol=1e-6)


def test_cli_experiment_runs_every_variant_and_labels_the_leaky_one(corpus, tmp_path):
    recipe = tmp_path / "study.yaml"
    recipe.write_text(f"""
name: study
corpora: [{{path: {corpus}, kind: manifest}}]
labels: {{classes: [angry, happy, sad]}}
features: mfcc_stats
model: logreg
cache_dir: {tmp_path / "cache"}
n_jobs: 1
variants:
  - variant: original_leaky
    protocol: {{kind: random, allow_leakage: true, test_fraction: 0.25}}
  - variant: speaker_folds
    protocol: {{kind: speaker_folds, n_folds: 2}}
""")
    runs = tmp_path / "runs"
    out = CliRunner().invoke(app, ["experiment", str(recipe), "model.params.C=0.5",
                                   "--output-dir", str(runs)])
    assert out.exit_code == 0, out.output
    folders = sorted(runs.iterdir())
    assert [f.name.split("-")[0] for f in folders] == ["study.original_leaky",
                                                       "study.speaker_folds"]
    leaky, honest = (json.loads((f / "metrics.json").read_text()) for f in folders)
    assert leaky["variant"] == "original_leaky" and leaky["leaky"]
    assert "LEAKY" in leaky["protocol"] and not honest["leaky"]
    assert honest["protocol"] == "2 speaker-disjoint folds"
    assert "C: 0.5" in (folders[1] / "config.yaml").read_text()  # overrides reach every variant
    assert "(LEAKY)" in out.output and "2 variants" in out.output
    out = CliRunner().invoke(app, ["experiment", str(recipe), "--variant", "speaker_folds",
                                   "--output-dir", str(tmp_path / "one")])
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "one").iterdir())) == 1
