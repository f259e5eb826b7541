"""Hostile and damaged bundles: never run code, never a traceback, never a wrong answer.

Each case starts from a copy of the packaged default bundle and breaks one thing; the
loader must refuse it with one :class:`BundleError` line naming the broken file.
"""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from emovox.bundle import default_bundle_path, load_bundle
from emovox.bundle_checks import ALLOWED_TYPES, check_skops_file
from emovox.errors import BundleError
from emovox.models.classical import CLASSIFIERS


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    """A private copy of the default bundle, free to damage."""
    return Path(shutil.copytree(default_bundle_path(), tmp_path / "bundle"))


# ------------------------------------------------------------------ hostile models
def _node(value: str) -> dict:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True, "__id__": 2}


def _args(*values: str) -> dict:
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
            "content": [_node(v) for v in values], "__id__": 3}


def _payloads(marker: Path) -> dict[str, dict]:
    """skops schemas that would create ``marker`` if a loader trusted them."""
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return {
        # gettype("builtins", "exec")(*args): how the landed allowlist was beaten
        "exec": {"__class__": "exec", "__module__": "builtins",
                 "__loader__": "ConstructorFromReduceNode", "content": _args(code)},
        "eval": {"__class__": "eval", "__module__": "builtins",
                 "__loader__": "ConstructorFromReduceNode", "content": _args(code)},
        "os.system": {"__class__": "system", "__module__": "os",
                      "__loader__": "ConstructorFromReduceNode",
                      "content": _args(f"touch {marker}")},
        # a callable built, for something else to call later
        "function": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                     "content": {"f": {"__class__": "eval", "__module__": "builtins",
                                       "__loader__": "FunctionNode", "content": {
                                           "module_path": "builtins", "function": "eval"}}},
                     "key_types": {"__class__": "list", "__module__": "builtins",
                                   "__loader__": "ListNode", "content": []}},
        # an allowed node kind naming a type outside the allowlist
        "object": {"__class__": "Popen", "__module__": "subprocess",
                   "__loader__": "ObjectNode", "content": {
                       "__class__": "dict", "__module__": "builtins",
                       "__loader__": "DictNode", "content": {}}},
    }


def _write_skops(path: Path, schema: dict) -> None:
    schema = {**schema, "__id__": 1, "protocol": 2, "_skops_version": "0.16.0"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))


@pytest.mark.parametrize("target", ["model.skops", "model_unadapted.skops"])
@pytest.mark.parametrize("payload", ["exec", "eval", "os.system", "function", "object"])
def test_a_hostile_model_never_runs_code(bundle_dir, tmp_path, target, payload):
    from emovox.recognizer import Recognizer

    marker = tmp_path / "MARKER"
    _write_skops(bundle_dir / target, _payloads(marker)[payload])
    with pytest.raises(BundleError, match=target.replace(".", r"\.")) as caught:
        load_bundle(bundle_dir)
    assert "\n" not in str(caught.value)
    with pytest.raises(BundleError):
        Recognizer(bundle_dir)
    assert not marker.exists()


def test_the_cli_refuses_a_hostile_bundle_in_one_line(bundle_dir, tmp_path, write_tone,
                                                      monkeypatch, capsys):
    from emovox.cli import main

    tone_wav = write_tone(tmp_path / "tone.wav", 1.0)
    marker = tmp_path / "MARKER"
    _write_skops(bundle_dir / "model.skops", _payloads(marker)["exec"])
    monkeypatch.setattr("sys.argv", ["emovox", "predict", str(tone_wav),
                                     "--bundle", str(bundle_dir)])
    with pytest.raises(SystemExit) as caught:  # handled: an exit code, not a traceback
        main()
    assert caught.value.code != 0
    err = capsys.readouterr().err
    assert "refusing to load unexpected types" in err
    assert "Traceback" not in err
    assert not marker.exists()


def test_the_allowlist_names_exact_types_and_no_callables():
    assert all(not name.endswith(".") for name in ALLOWED_TYPES)
    assert not {"builtins.exec", "builtins.eval", "builtins.getattr",
                "builtins.__import__"} & ALLOWED_TYPES


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_every_classifier_emovox_trains_passes_the_allowlist(tmp_path, name):
    import skops.io as sio

    from emovox.calibration import CalibratedClassifier
    from emovox.models.classical import make_classifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = np.array(["a", "b"] * 20)
    groups = np.repeat(np.arange(4), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny data: convergence and deprecation notes
        for model in (make_classifier(name).fit(X, y),
                      CalibratedClassifier(make_classifier(name)).fit(X, y, groups=groups)):
            path = tmp_path / "m.skops"
            sio.dump(model, path)
            loaded = sio.load(path, trusted=check_skops_file(path))
            assert np.allclose(loaded.predict_proba(X), model.predict_proba(X))


# ------------------------------------------------------------------ damaged bundles
def _edit_json(change: Callable[[dict], object]) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        meta = json.loads((folder / "bundle.json").read_text())
        result = change(meta)
        (folder / "bundle.json").write_text(json.dumps(meta if result is None else result))
        return "bundle.json"
    return damage


def _truncate(name: str, keep: float) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
        return name
    return damage


def _flip(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        data = bytearray((folder / name).read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
        return name
    return damage


def _stats(**arrays: object) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        with np.load(folder / "reference_stats.npz") as stats:
            saved = {k: stats[k] for k in stats.files}
        saved.update(arrays)
        np.savez(folder / "reference_stats.npz", **saved)
        return "reference_stats.npz"
    return damage


def _shorter_stats(folder: Path) -> str:
    with np.load(folder / "reference_stats.npz") as stats:
        count, mean, var = stats["count"], stats["mean"], stats["var"]
    np.savez(folder / "reference_stats.npz", count=count, mean=mean[:-10], var=var[:-10])
    return "reference_stats.npz"


def _object_stats(folder: Path) -> str:
    np.savez(folder / "reference_stats.npz", count=np.array(1.0),
             mean=np.array([{"a": 1}], dtype=object), var=np.array([1.0]))
    return "reference_stats.npz"


def _binary_json(folder: Path) -> str:
    (folder / "bundle.json").write_bytes(bytes(range(256)) * 4)
    return "bundle.json"


def _missing(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        (folder / name).unlink()
        return name
    return damage


def _rename_class(meta: dict) -> None:
    meta["classes"][0] = "furious"


def _smaller_features(meta: dict) -> None:
    meta["features"] = {"name": "mfcc_stats"}


DAMAGE: dict[str, Callable[[Path], str]] = {
    "model truncated": _truncate("model.skops", 0.5),
    "model empty": _truncate("model.skops", 0.0),
    "model bit-flipped": _flip("model.skops"),
    "model missing": _missing("model.skops"),
    "unadapted model truncated": _truncate("model_unadapted.skops", 0.7),
    "stats truncated": _truncate("reference_stats.npz", 0.5),
    "stats empty": _truncate("reference_stats.npz", 0.0),
    "stats bit-flipped": _flip("reference_stats.npz"),
    "stats object array": _object_stats,
    "stats NaN": _stats(mean=np.full(1920, np.nan)),
    "stats negative variance": _stats(var=-np.ones(1920)),
    "stats count text": _stats(count=np.array("many")),
    "stats size": _shorter_stats,
    "json list": _edit_json(lambda meta: [meta]),
    "json binary": _binary_json,
    "json no features": _edit_json(lambda meta: meta.pop("features") and None),
    "json no labels": _edit_json(lambda meta: meta.pop("labels") and None),
    "json no classes": _edit_json(lambda meta: meta.pop("classes") and None),
    "preprocessing a string": _edit_json(lambda meta: meta.update(preprocessing="x")),
    "prior_weight text": _edit_json(lambda meta: meta["preprocessing"].update(
        prior_weight="x")),
    "normalization unknown": _edit_json(lambda meta: meta["preprocessing"].update(
        normalization="sometimes")),
    "format_version text": _edit_json(lambda meta: meta.update(format_version="1")),
    "format_version 2": _edit_json(lambda meta: meta.update(format_version=2)),
    "classes renamed": _edit_json(_rename_class),
    "classes cut to 3": _edit_json(lambda meta: meta.update(classes=meta["classes"][:3])),
    "classes repeated": _edit_json(lambda meta: meta.update(
        classes=[*meta["classes"][:-1], meta["classes"][0]])),
    "features unknown": _edit_json(lambda meta: meta.update(features={"name": "magic"})),
    "features of another size": _edit_json(_smaller_features),
    "labels not a mapping": _edit_json(lambda meta: meta.update(labels={"classes": 3})),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_bundle_is_one_bundle_error_naming_the_file(bundle_dir, kind):
    broken = DAMAGE[kind](bundle_dir)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert broken in message, message


def test_the_default_bundle_passes_every_check():
    bundle = load_bundle()
    assert sorted(bundle.classes) == sorted(bundle.model.classes_)
    assert bundle.reference is not None and len(bundle.reference.mean) == 1920


# ------------------------------------------------------------------ encoder weights
def test_encoder_weights_are_checked_against_pinned_hashes(tmp_path, monkeypatch):
    from emovox.features import encoders

    files = encoders.whisper_model_files("tiny.en")  # the installed package passes
    copy = tmp_path / "model.bin"
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        encoders.verify_weights("tiny.en", [copy])
    with pytest.raises(ValueError, match="expected 1"):
        encoders.verify_weights("tiny.en", [copy, copy])
