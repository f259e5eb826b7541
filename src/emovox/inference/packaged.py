"""The models that ship inside the package: three tiers, and ONNX exports.

``default`` is the tier every front uses unless told otherwise; ``fast`` is a smaller
model (the default's recipe on the encoder's first blocks only) exported with int8
weights, several times faster on CPU and a few points less accurate; ``accurate`` is a
larger model (two encoders) exported with int8 weights, about as fast as the default
and more accurate. Each tier's model card has its figures. Users name them (``emovox
predict --model accurate``, ``Recognizer("fast")``).

Exports are made from packaged bundles (:data:`EXPORT_SOURCES`) and record the digest
of the bundle they were made from; a stale export (the bundle rebuilt, the export not)
is never used. ``default-onnx`` (``emovox export --onnx src/emovox/bundles/default-onnx``)
answers as the default bundle does (probabilities within 1e-6) and loads in a fraction
of the time, without torch or scikit-learn, so the command line and the server use it
by default. ``fast`` and ``accurate`` are the int8 exports of the bundles
``fast-native`` and ``accurate-native`` (``emovox export --model
src/emovox/bundles/fast-native --onnx src/emovox/bundles/fast --int8``), which the
native runtime runs (``Recognizer("accurate", runtime="torch")``).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from emovox.errors import ConfigError

#: The files of a bundle whose content decides its answers.
MODEL_FILES = ("bundle.json", "model.skops", "model_unadapted.skops", "reference_stats.npz",
               "network/weights.safetensors", "network/neural.json")


#: Names of the packaged models, the default first.
PACKAGED_MODELS = ("default", "fast", "accurate")
#: The packaged ONNX exports (folders under :func:`bundles_root`) and the packaged
#: bundle each is made from.
EXPORT_SOURCES = {"default-onnx": "default", "fast": "fast-native",
                  "accurate": "accurate-native"}
#: Packaged models whose name means an ONNX export (int8), not a bundle.
PACKAGED_EXPORTS = ("fast", "accurate")


def bundles_root() -> Path:
    """The folder of the packaged models."""
    return Path(str(resources.files("emovox") / "bundles"))


def packaged_name(model: object) -> str | None:
    """The packaged model ``model`` names, or None when it is something else.

    A folder that exists wins over a packaged name (``./accurate`` on disk is that
    folder), so a name only means the packaged model when no such path is there.

    Parameters
    ----------
    model : object
        What a user passed as the model: a name, a folder path, a loaded bundle.
    """
    if not isinstance(model, str | Path) or str(model) not in PACKAGED_MODELS:
        return None
    return None if Path(model).exists() else str(model)


def resolve_model(model: object, runtime: str = "auto") -> object:
    """``model`` with a packaged name replaced: None for ``"default"`` (the packaged
    default, on whichever runtime serves it), the folder of another tier (for an
    exported tier on the ``"torch"`` runtime, the bundle it was exported from); anything
    else unchanged."""
    name = packaged_name(model)
    if name is None:
        return model
    if name == "default":
        return None
    if name in PACKAGED_EXPORTS and runtime == "torch":
        return bundles_root() / EXPORT_SOURCES[name]
    return packaged_model(name)


def packaged_model(name: str) -> Path:
    """The folder of a packaged model: a bundle, or an ONNX export (:data:`PACKAGED_EXPORTS`).

    Parameters
    ----------
    name : str
        One of :data:`PACKAGED_MODELS`.

    Raises
    ------
    ValueError
        An unknown name.
    ConfigError
        An export made from another bundle than its packaged source (stale: it would
        not answer as that bundle does), or missing.
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"no packaged model {name!r}; there are {', '.join(PACKAGED_MODELS)}")
    folder = bundles_root() / name
    if name in PACKAGED_EXPORTS and not is_current_export(folder, EXPORT_SOURCES[name]):
        raise ConfigError(f"the packaged model {name!r} is missing or was exported from "
                          f"another bundle than {EXPORT_SOURCES[name]!r}: reinstall emovox")
    return folder


def bundle_digest(folder: str | Path) -> str:
    """SHA-256 over a bundle's model files (names and contents), in a fixed order.

    Parameters
    ----------
    folder : str or Path
        A bundle folder.

    Returns
    -------
    str
        Hex digest; equal for bundles whose model files are byte-identical.
    """
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def is_current_export(folder: Path, source: str = "default") -> bool:
    """Whether ``folder`` holds an ONNX export of the packaged bundle ``source`` as it
    is now (the digest it records matches)."""
    spec_file = folder / "preprocessing.json"
    if not spec_file.is_file():
        return False
    try:
        recorded = json.loads(spec_file.read_text()).get("bundle_sha256")
    except ValueError:
        return False
    return recorded == bundle_digest(bundles_root() / source)


def packaged_onnx() -> Path | None:
    """The packaged ONNX export of the default bundle, if present, current and runnable.

    Returns None when the export is missing, was made from another bundle than the
    packaged one, or onnxruntime is not installed.
    """
    folder = bundles_root() / "default-onnx"
    try:
        import onnxruntime  # noqa: F401  (the runtime it needs)
    except ImportError:
        return None
    return folder if is_current_export(folder, EXPORT_SOURCES[folder.name]) else None


def _encoders(features: dict) -> list[str]:
    """The Whisper encoders of a feature spec and their states, e.g. ``tiny.en (states
    0-2)``."""
    if features.get("name") == "whisper_encoder":
        layers = features.get("layers", "all")
        if isinstance(layers, list) and layers == list(range(layers[0], layers[-1] + 1)):
            layers = f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
        model = str(features.get("model", "tiny.en"))
        states = {"all": "all states", "last": "last state"}.get(str(layers),
                                                                f"states {layers}")
        return [f"{model} ({states})"]
    inner = [features["features"]] if isinstance(features.get("features"), dict) else []
    parts = [p for p in features.get("parts", []) if isinstance(p, dict)]
    return [name for part in inner + parts for name in _encoders(part)]


def describe_models() -> list[dict[str, object]]:
    """What each packaged model is: one row per name of :data:`PACKAGED_MODELS`.

    Returns
    -------
    list of dict
        ``model`` (its name), ``runtime`` (what ``--model NAME`` runs on), ``features``
        (the Whisper encoders and their states), ``uar`` (mean UAR of the bundle's own
        speaker-disjoint evaluation, adapted to each test speaker; NaN when missing),
        ``protocol`` and ``card`` (its model card, with every other figure).
    """
    rows: list[dict[str, object]] = []
    for name in PACKAGED_MODELS:
        try:
            folder = (packaged_onnx() if name == "default" else None) or packaged_model(name)
        except ConfigError as error:  # a stale or missing export: say so, list the rest
            rows.append({"model": name, "runtime": f"unusable: {error}", "features": "",
                         "uar": float("nan"), "protocol": "", "card": ""})
            continue
        spec_file = folder / ("preprocessing.json" if (folder / "preprocessing.json").is_file()
                              else "bundle.json")
        spec = json.loads(spec_file.read_text())
        evaluation = spec.get("training", {}).get("evaluation") or {}
        quantised = "quantization" in spec.get("graph", {})
        runtime = ("native (PyTorch)" if spec_file.name == "bundle.json"
                   else "ONNX Runtime" + (", int8" if quantised else ""))
        rows.append({"model": name, "runtime": runtime,
                     "features": " + ".join(_encoders(spec.get("features", {}))),
                     "uar": float(evaluation.get("mean", {}).get("uar", float("nan"))),
                     "protocol": str(evaluation.get("protocol", "")),
                     "card": str(folder / "MODEL_CARD.md")})
    return rows

