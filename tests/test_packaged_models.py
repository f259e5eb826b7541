"""The packaged tiers: names resolve to the right model, the other tiers run.

``default`` is the model every front uses; ``fast`` is a smaller bundle's int8 ONNX
export (the encoder's first two blocks); ``accurate`` is a larger bundle's (Whisper
tiny.en + base) int8 ONNX export. Users name them on the
command line (``--model accurate``) and in Python (``Recognizer("fast")``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_corpora
from typer.testing import CliRunner

from emovox.cli import EXIT_USAGE, app
from emovox.errors import ConfigError
from emovox.inference.packaged import (
    EXPORT_SOURCES,
    PACKAGED_EXPORTS,
    PACKAGED_MODELS,
    bundles_root,
    is_current_export,
    packaged_model,
    packaged_name,
    resolve_model,
)
from emovox.recognizer import Recognizer


def test_packaged_names_resolve_unless_a_folder_of_that_name_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert packaged_name("accurate") == "accurate"
    assert packaged_name(Path("default")) == "default"
    assert packaged_name("turbo") is None and packaged_name(None) is None
    (tmp_path / "accurate").mkdir()  # a user's own folder called "accurate" wins
    assert packaged_name("accurate") is None
    assert packaged_model("accurate") == bundles_root() / "accurate"
    assert resolve_model("accurate") == "accurate"  # the folder here wins: unchanged
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_model("accurate") == bundles_root() / "accurate"
    assert resolve_model("default") is None and resolve_model(None) is None
    assert resolve_model(Path("elsewhere")) == Path("elsewhere")
    with pytest.raises(ValueError, match="no packaged model 'turbo'"):
        packaged_model("turbo")


def test_every_packaged_tier_ships_with_a_card_stating_its_protocols() -> None:
    for name in PACKAGED_MODELS:
        folder = packaged_model(name)
        model_file = "preprocessing.json" if name in PACKAGED_EXPORTS else "bundle.json"
        assert (folder / model_file).is_file(), f"{folder} is missing"
        card = (folder / "MODEL_CARD.md").read_text()
        assert "speaker" in card and "leave-one-corpus-out" in card.lower(), name
    accurate = json.loads((bundles_root() / "accurate-native" / "bundle.json").read_text())
    default = json.loads((packaged_model("default") / "bundle.json").read_text())
    assert accurate["classes"] == default["classes"]


def test_an_unknown_model_name_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"nothing-here: no such model folder.*accurate"):
        Recognizer("nothing-here")
    done = subprocess.run([sys.executable, "-c", "from emovox.cli import main; main()",
                           "predict", "--model", "nothing-here", "--sample"],
                          capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing-here" in lines[0], done.stderr


def test_default_by_name_is_the_packaged_default() -> None:
    assert Recognizer("default").engine_name == Recognizer().engine_name


def _int8_tier(name: str, seeds: int) -> tuple[Recognizer, Recognizer, dict]:
    """A packaged int8 tier and its bundle run natively: the export is current and
    quantised, runs on ONNX Runtime with the default's classes, and answers synthetic
    voices as the bundle does (labels; probabilities within 0.15: int8 moves them by a
    few hundredths on real corpus files, benchmarks/int8_agreement.py; a float32 export
    stays within 1e-6, a broken quantisation moves far more). Returns (tier, native,
    the export's spec)."""
    folder = packaged_model(name)
    assert is_current_export(folder, EXPORT_SOURCES[name]), (
        f"src/emovox/bundles/{name} is stale: emovox export --model src/emovox/bundles/"
        f"{EXPORT_SOURCES[name]} --onnx src/emovox/bundles/{name} --int8")
    spec = json.loads((folder / "preprocessing.json").read_text())
    assert "int8" in spec["graph"]["quantization"]["method"].lower()
    tier, native = Recognizer(name, n_jobs=1), Recognizer(name, n_jobs=1, runtime="torch")
    assert tier.engine_name == "onnx" and native.engine_name == "torch"
    assert tier.classes == native.classes == Recognizer(n_jobs=1).classes
    from emovox.synth import synth_voice

    for seed in range(seeds):
        signal = synth_voice(2.5, 16000, seed=seed)
        a, b = tier.predict_signal(signal, 16000), native.predict_signal(signal, 16000)
        assert a["emotion"].iloc[0] == b["emotion"].iloc[0]
        np.testing.assert_allclose(a[tier.classes].to_numpy(), b[tier.classes].to_numpy(),
                                   atol=0.15)
    return tier, native, spec


def test_the_fast_tier_is_its_bundle_exported_with_int8_weights(tmp_path: Path) -> None:
    """``fast`` is the int8 export of the packaged ``fast-native`` bundle as it is now,
    on ONNX Runtime; its encoder stops after block 2, and it answers synthetic voices as
    its bundle does. The native runtime runs the bundle."""
    _, native, spec = _int8_tier("fast", seeds=3)
    assert "int8" in (packaged_model("fast") / "MODEL_CARD.md").read_text()
    assert spec["features"]["features"]["layers"] == [0, 1, 2]
    assert native.bundle.path == bundles_root() / EXPORT_SOURCES["fast"]
    # An export of another bundle is stale, and refused by name.
    stale = tmp_path / "fast"
    stale.mkdir()
    spec["bundle_sha256"] = "0" * 64
    (stale / "preprocessing.json").write_text(json.dumps(spec))
    assert not is_current_export(stale, EXPORT_SOURCES["fast"])


def test_emovox_models_lists_every_tier_with_its_own_score() -> None:
    from emovox.inference.packaged import describe_models

    rows = {row["model"]: row for row in describe_models()}
    assert list(rows) == list(PACKAGED_MODELS)
    assert "int8" in str(rows["fast"]["runtime"]) and "int8" in str(rows["accurate"]["runtime"])
    assert rows["fast"]["features"] == "tiny.en (states 0-2)"
    assert rows["accurate"]["features"] == "tiny.en (states 1-3) + base (states 2-4)"
    for name in ("fast", "accurate"):
        evaluation = json.loads((bundles_root() / EXPORT_SOURCES[name] / "bundle.json"
                                 ).read_text())["training"]["evaluation"]
        row = rows[name]
        assert row["uar"] == evaluation["mean"]["uar"] and "speaker" in str(row["protocol"])
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name, row in rows.items():
        assert name in result.output and f"{row['uar']:.3f}" in result.output


def test_emovox_models_says_when_an_export_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    from emovox.inference import packaged

    # As if bundles/fast had been exported from another bundle than its source.
    monkeypatch.setitem(packaged.EXPORT_SOURCES, "fast", "accurate-native")
    rows = {row["model"]: row for row in packaged.describe_models()}
    assert str(rows["fast"]["runtime"]).startswith("unusable:")
    assert "reinstall" in str(rows["fast"]["runtime"])
    assert rows["accurate"]["uar"] > 0  # the others are still listed


def test_the_fast_tier_from_the_command_line() -> None:
    result = CliRunner().invoke(app, ["predict", "--model", "fast", "--sample", "-f", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer[0]["emotion"] in Recognizer("fast").classes


@requires_corpora
def test_the_fast_tier_answers_real_speech_as_its_bundle_does(crema_twelve: list[str]
                                                              ) -> None:
    fast, native = Recognizer("fast", n_jobs=1), Recognizer("fast", n_jobs=1, runtime="torch")
    a, b = fast.predict_files(crema_twelve), native.predict_files(crema_twelve)
    assert (a["emotion"].to_numpy() == b["emotion"].to_numpy()).mean() >= 11 / 12
    assert np.abs(a[fast.classes].to_numpy() - b[fast.classes].to_numpy()).max() < 0.1


@pytest.fixture(scope="module")
def accurate() -> Recognizer:
    return Recognizer("accurate", n_jobs=1)


def test_the_accurate_tier_is_its_two_encoder_bundle_exported_with_int8_weights() -> None:
    """``accurate`` runs the int8 export of the packaged ``accurate-native`` bundle (one
    graph holding both encoders) on ONNX Runtime, and answers synthetic voices as the
    bundle does natively."""
    _, native, spec = _int8_tier("accurate", seeds=2)
    assert "tiny.en encoder" in spec["graph"]["contains"]
    assert "base encoder" in spec["graph"]["contains"]
    parts = native.backend.bundle.features["parts"]
    assert [p["features"].get("model", "tiny.en") for p in parts] == ["tiny.en", "base"]


@requires_corpora
def test_the_accurate_tier_answers_real_speech_as_the_api_and_cli_do(
        accurate: Recognizer, crema_twelve: list[str]) -> None:
    one = crema_twelve[0]
    frame = accurate.predict_files([one])
    probabilities = frame[accurate.classes].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    result = CliRunner().invoke(app, ["predict", "--model", "accurate", "-f", "json", one])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer[0]["emotion"] == frame["emotion"].iloc[0]
    # Twelve files of three speakers: the batch adapts, so answers may differ from a
    # lone file's, but each still sums to one and names a known class.
    batch = accurate.predict_files(crema_twelve)
    assert set(batch["emotion"]) <= {*accurate.classes, "uncertain"}
