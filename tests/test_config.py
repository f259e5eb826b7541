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

    from emovox.studies import load_recipe

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        configs = load_recipe(recipe)
        assert configs
        for config in configs:
            # Bundle recipes are named after the bundle they build.
            assert config.name == recipe.stem or recipe.stem.endswith("_bundle")
            params = config.protocol.params
            if config.protocol.kind == "random" or params.get("validate_on_test"):
                # A leaky protocol is asked for explicitly, and says so in its name.
                assert params.get("allow_leakage") is True, (recipe, config.variant)
                assert "leaky" in (config.variant or config.name), (recipe, config.variant)
        assert len({c.variant for c in configs}) == len(configs)


RECIPE = BASE.replace("protocol: {kind: speaker_folds, n_folds: 5}\n", "") + """
variants:
  - variant: leaky
    protocol: {kind: random, allow_leakage: true, test_fraction: 0.25}
  - variant: folds
    protocol: {kind: speaker_folds, n_folds: 3}
  - variant: best
    features: {name: whisper_encoder, layers: all}
    model: {name: logreg, search: {C: [0.1, 1.0]}}
    protocol: {kind: loso}
"""


def test_recipe_variants_expand_into_strict_configs(tmp_path):
    from emovox.studies import load_recipe

    path = tmp_path / "study.yaml"
    path.write_text(RECIPE)
    leaky, folds, best = load_recipe(path, ["seed=3"])
    assert [c.variant for c in (leaky, folds, best)] == ["leaky", "folds", "best"]
    assert {c.name for c in (leaky, folds, best)} == {"demo"}
    assert leaky.protocol.kind == "random" and leaky.protocol.params["allow_leakage"]
    assert folds.protocol.params == {"n_folds": 3}
    assert folds.model.params == {"C": 0.1} and folds.features.name == "compare"
    # A variant's key replaces the recipe's whole value: no C=0.1 inherited.
    assert best.model.name == "logreg" and best.model.params == {}
    assert best.model.search == {"C": [0.1, 1.0]}
    assert {c.seed for c in (leaky, folds, best)} == {3}
    assert "variant: best" in dump_config(best)
    (only,) = load_recipe(path, only=["folds"])
    assert only.variant == "folds"
    with pytest.raises(ConfigError, match="unknown variants"):
        load_recipe(path, only=["nope"])


@pytest.mark.parametrize("variants, message", [
    ("  - variant: a\n    protocol: {kind: loso}\n    modle: svm\n", "(?s)variant 'a'.*modle"),
    ("  - variant: a\n    model: svm\n", "variant 'a' must state its protocol"),
    ("  - protocol: {kind: loso}\n", "variant 1 needs"),
    ("  - {variant: a, protocol: {kind: loso}}\n  - {variant: a, protocol: {kind: loso}}\n",
     "defined twice"),
])
def test_bad_variants_are_named(tmp_path, variants, message):
    from emovox.studies import load_recipe

    path = tmp_path / "study.yaml"
    path.write_text(BASE + "variants:\n" + variants)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)
