import pytest

from emovox.config import apply_overrides, dump_config, load_config
from emovox.errors import ConfigError

BASE = """
name: demo
corpora: [some/folder]
labels: common6
features: compare
model: {name: logreg, params: {C: 0.1}}
protocol: {kind: speaker_folds, n_folds: 5}
"""


def test_yaml_with_shorthands_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    config = load_config(path, ["model.params.C=0.5", "protocol.n_folds=3", "seed=7",
                                "features.n_mfcc=13"])
    assert config.model.params == {"C": 0.5}
    assert config.protocol.kind == "speaker_folds" and config.protocol.params == {"n_folds": 3}
    assert config.features.name == "compare" and config.features.params == {"n_mfcc": 13}
    assert config.seed == 7
    assert config.corpora[0].kind is None
    assert "n_folds: 3" in dump_config(config)


@pytest.mark.parametrize("override, message", [
    ("modle.name=svm", "modle"),
    ("protocol.kind=kfold", "protocol.kind"),
    ("normalization=utterance", "normalization"),
    ("seed", "key=value"),
])
def test_invalid_configs_name_the_field(tmp_path, override, message):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_environment_variables_in_corpus_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOVOX_CORPORA", str(tmp_path))
    (tmp_path / "emodb").mkdir()
    config = load_config(data={"name": "x", "corpora": ["${EMOVOX_CORPORA}/emodb"],
                               "features": "egemaps", "model": "svm"})
    assert config.corpora[0].path == str(tmp_path / "emodb")


def test_apply_overrides_creates_nested_keys():
    data = apply_overrides({"model": "svm"}, ["model.params.C=2", "subset.gender=male"])
    assert data == {"model": {"name": "svm", "params": {"C": 2}}, "subset": {"gender": "male"}}


def test_every_recipe_in_the_repo_validates():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        config = load_config(recipe)
        assert config.name == recipe.stem or recipe.stem == "default_bundle"
