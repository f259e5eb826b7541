"""Checks that make a model bundle data, not code: type allowlist, schema, consistency.

A bundle comes from anyone, so nothing in it is trusted until checked:

- :func:`check_skops_file` reads the skops file's ``schema.json`` itself and refuses it
  unless every node is of a kind that builds plain data (no function, method or
  ``__reduce__`` node: no callable is ever constructed) and every type named anywhere
  in it is on :data:`ALLOWED_TYPES`, an explicit list of the scikit-learn, NumPy and
  builtin types emovox's own models are made of. skops's own check then runs too.
- :class:`BundleMetadata` is the schema of ``bundle.json`` (pydantic, strict types).
- :func:`check_reference` and :func:`check_consistency` hold the parts against each
  other: classes against every model, feature size against the model and statistics.

Every fault is a :class:`~emovox.errors.BundleError` whose one line names the file.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emovox.errors import BundleError

#: Every type a bundle's skops model may contain, by its full dotted name: what
#: emovox's classifiers (``emovox.models.classical``) and its calibration wrapper are
#: made of. Exact names, never prefixes: ``builtins.`` alone would admit ``exec``.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "builtins.bool", "builtins.dict", "builtins.float", "builtins.int", "builtins.list",
    "builtins.NoneType", "builtins.str", "builtins.tuple",
    "numpy.bool_", "numpy.dtype", "numpy.float32", "numpy.float64", "numpy.int32",
    "numpy.int64", "numpy.ndarray", "numpy.str_",
    "numpy.random.mtrand.RandomState",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.SVC",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "emovox.calibration.CalibratedClassifier",
    "emovox.models.robust.GroupDROLogisticRegression",
})
#: skops node kinds that rebuild data. Left out on purpose: FunctionNode, MethodNode,
#: PartialNode, OperatorFuncNode, ReduceNode (each constructs or calls a callable).
ALLOWED_NODES: frozenset[str] = frozenset({
    "DictNode", "ListNode", "TupleNode", "SetNode", "JsonNode", "NdArrayNode",
    "ObjectNode", "TypeNode", "RandomStateNode", "SliceNode",
})
#: Uncompressed size limit of a skops file's members (a zip bomb is refused unread).
MAX_SKOPS_BYTES = 512 * 2**20
#: Nesting deeper than this is no model emovox writes.
MAX_SCHEMA_DEPTH = 200


def _nodes(node: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every dict in a skops schema that describes an object (has ``__class__``)."""
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(node, dict):
        if "__class__" in node or "__loader__" in node:
            yield node
        for value in node.values():
            yield from _nodes(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value, depth + 1)


def check_skops_file(model_file: Path) -> list[str]:
    """Refuse a skops file unless it can only rebuild allowlisted data types.

    Parameters
    ----------
    model_file : Path
        A ``.skops`` file.

    Returns
    -------
    list of str
        The types skops itself calls untrusted (all on :data:`ALLOWED_TYPES`), to pass
        as ``trusted`` to :func:`skops.io.load`.

    Raises
    ------
    BundleError
        Not a skops file, too large once unpacked, a node kind that builds a callable,
        or a type outside the allowlist.
    """
    import skops.io as sio

    try:
        with zipfile.ZipFile(model_file) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_SKOPS_BYTES:
                raise BundleError(f"{model_file}: unpacks to {unpacked} bytes, more than "
                                  f"the {MAX_SKOPS_BYTES} a model may take")
            schema = json.loads(archive.read("schema.json"))
        refused: set[str] = set()
        for node in _nodes(schema):
            loader = str(node.get("__loader__"))
            name = f"{node.get('__module__')}.{node.get('__class__')}"
            if loader not in ALLOWED_NODES:
                refused.add(f"{name} ({loader})")
            elif name not in ALLOWED_TYPES:
                refused.add(name)
        if refused:
            raise BundleError(f"{model_file}: refusing to load unexpected types "
                              f"{sorted(refused)}; a bundle's model may hold only "
                              "scikit-learn, NumPy and builtin data types")
        untrusted = sio.get_untrusted_types(file=model_file)
    except BundleError:
        raise
    except Exception as error:  # any damage: truncated zip, bad JSON, missing member
        raise BundleError(f"{model_file}: not a readable skops model ({_brief(error)})"
                          ) from None
    outside = sorted(set(untrusted) - ALLOWED_TYPES)
    if outside:  # skops saw a type our walk did not: refuse rather than guess
        raise BundleError(f"{model_file}: refusing to load unexpected types {outside}")
    return list(untrusted)


def load_skops(model_file: Path) -> Any:
    """Load a skops model after :func:`check_skops_file`; any fault is a BundleError."""
    import skops.io as sio

    if not model_file.is_file():
        raise BundleError(f"{model_file.parent}: not a model bundle "
                          f"(missing {model_file.name})")
    trusted = check_skops_file(model_file)
    try:
        model = sio.load(model_file, trusted=trusted)
    except Exception as error:
        raise BundleError(f"{model_file}: damaged model ({_brief(error)})") from None
    for attribute in ("predict_proba", "classes_"):
        if not hasattr(model, attribute):
            raise BundleError(f"{model_file}: not a fitted classifier (no {attribute})")
    return model


def _brief(error: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------- bundle.json
class BundlePreprocessing(BaseModel):
    """The ``preprocessing`` section: what happens to features before the model."""

    model_config = ConfigDict(extra="allow", strict=True)

    normalization: Literal["none", "speaker"] = "none"
    prior_weight: float = Field(default=8.0, gt=0, allow_inf_nan=False)
    sample_rate: int | None = Field(default=None, gt=0)

    @field_validator("prior_weight", mode="before")
    @classmethod
    def _int_is_a_float(cls, value: Any) -> Any:
        # JSON writes 8.0 as 8 in some tools; a bool is not a number here.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class BundleMetadata(BaseModel):
    """Schema of ``bundle.json``; unknown keys are kept, known ones are strictly typed."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: Literal["emovox-bundle"]
    format_version: Literal[1]
    model_format: Literal["skops", "network"] = "skops"
    features: dict[str, Any]
    labels: dict[str, Any]
    classes: list[str] = Field(min_length=2)
    preprocessing: BundlePreprocessing = Field(default_factory=BundlePreprocessing)
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ValueError("classes must be distinct")
        return classes


def read_metadata(meta_file: Path) -> BundleMetadata:
    """Parse and validate ``bundle.json``.

    Raises
    ------
    BundleError
        Not JSON, not an object, an unsupported format or version, a missing key or
        a value of the wrong type; the message names the file and the field.
    """
    try:
        raw = json.loads(meta_file.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise BundleError(f"{meta_file}: invalid JSON ({_brief(error)})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{meta_file}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != "emovox-bundle" or raw.get("format_version") != 1:
        raise BundleError(
            f"{meta_file}: unsupported bundle format {raw.get('format')!r} "
            f"v{raw.get('format_version')!r} (this emovox reads emovox-bundle v1)")
    try:
        return BundleMetadata.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        raise BundleError(f"{meta_file}: field {field!r}: {problem['msg']}") from None


# ------------------------------------------------------------------ the other parts
def read_reference(stats_file: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """Read ``reference_stats.npz``: ``count`` (a positive number), ``mean`` and
    ``var`` (finite 1-D float arrays of one size, ``var >= 0``). Never unpickles."""
    try:
        with np.load(stats_file, allow_pickle=False) as stats:
            count = np.asarray(stats["count"], dtype=np.float64)
            mean = np.asarray(stats["mean"], dtype=np.float64)
            var = np.asarray(stats["var"], dtype=np.float64)
    except Exception as error:  # truncated zip, object arrays, missing keys, bad dtypes
        raise BundleError(f"{stats_file}: not readable statistics ({_brief(error)})"
                          ) from None
    if count.shape != () or not math.isfinite(float(count)) or float(count) <= 0:
        raise BundleError(f"{stats_file}: 'count' must be one positive number")
    if mean.ndim != 1 or mean.shape != var.shape or len(mean) == 0:
        raise BundleError(f"{stats_file}: 'mean' and 'var' must be 1-D arrays of one size, "
                          f"got {mean.shape} and {var.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
        raise BundleError(f"{stats_file}: statistics must be finite, with var >= 0")
    return float(count), mean, var


def model_input_size(model: Any) -> int | None:
    """Number of features a fitted model takes, when it says (None otherwise)."""
    size = getattr(model, "n_features_in_", None)
    if size is None:
        base = getattr(model, "base_", None)  # CalibratedClassifier
        size = getattr(base, "n_features_in_", None) if base is not None else None
    if size is None and getattr(model, "input_shape_", None) is not None:
        size = int(np.prod(model.input_shape_))  # NeuralClassifier
    return None if size is None else int(size)


def check_consistency(path: Path, classes: list[str], models: dict[str, Any],
                      feature_size: int | None, reference_size: int | None) -> None:
    """Hold a bundle's parts against each other.

    Parameters
    ----------
    path : Path
        The bundle folder (named in messages).
    classes : list of str
        ``classes`` of ``bundle.json``.
    models : dict
        File name -> loaded model (``model.skops``, ``model_unadapted.skops``, ...).
    feature_size : int, optional
        Length of the feature vector the bundle's extractor produces.
    reference_size : int, optional
        Length of the reference statistics.

    Raises
    ------
    BundleError
        Classes that differ from a model's, or sizes that do not match.
    """
    for name, model in models.items():
        model_classes = [str(c) for c in np.asarray(model.classes_).tolist()]
        if sorted(model_classes) != sorted(classes):
            raise BundleError(f"{path / name}: the model's classes {model_classes} differ "
                              f"from bundle.json's {classes}")
        size = model_input_size(model)
        if size is not None and feature_size is not None and size != feature_size:
            raise BundleError(f"{path / name}: the model takes {size} features but the "
                              f"feature spec of bundle.json gives {feature_size}")
        if size is not None and reference_size is not None and size != reference_size:
            raise BundleError(f"{path / 'reference_stats.npz'}: statistics of "
                              f"{reference_size} features for a model of {size}")
