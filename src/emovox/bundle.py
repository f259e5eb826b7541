"""Model bundles: a folder with everything needed to predict, and nothing executable.

Layout::

    bundle/
      bundle.json     format version, feature spec, label set, classes, preprocessing,
                      training summary and scores
      model.skops     the fitted scikit-learn pipeline (skops: no pickle, loaded only
                      if every type in it is on an exact allowlist, see
                      :mod:`emovox.bundle_checks`), or
      network/        a PyTorch network: weights.safetensors + neural.json
      reference_stats.npz
                      only for speaker-normalised models: mean and variance of the
                      average training speaker (numpy arrays, no pickle)
      model_unadapted.skops
                      optional, with a speaker-normalised model: the same classifier
                      trained on unnormalised features, used while there is too little
                      of a speaker to adapt to
      MODEL_CARD.md   for people: data, licenses, protocol, scores, limits
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio

from emovox import __version__
from emovox.bundle_checks import (
    check_consistency,
    load_skops,
    read_metadata,
    read_reference,
)
from emovox.errors import BundleError
from emovox.features import FeatureExtractor, get_extractor
from emovox.fileio import atomic_folder
from emovox.labels import LabelSet
from emovox.normalization import FeatureStats

FORMAT = "emovox-bundle"
FORMAT_VERSION = 1


@dataclass
class Bundle:
    """A fitted model with its feature spec, labels and description."""

    model: Any
    features: dict[str, Any]
    labels: LabelSet
    classes: list[str]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    path: Path | None = None
    #: Average training speaker's feature statistics, for speaker-normalised models.
    reference: FeatureStats | None = None
    #: Classifier on unnormalised features, for predictions without adaptation data.
    unadapted_model: Any = None

    @property
    def normalization(self) -> str:
        """``"none"`` or the scope the model's training features were standardised by."""
        return str(self.preprocessing.get("normalization", "none"))

    def extractor(self) -> FeatureExtractor:
        """The feature extractor the model was trained with."""
        return get_extractor(self.features)

    def metadata(self) -> dict[str, Any]:
        """Contents of ``bundle.json``."""
        return {
            "format": FORMAT,
            "model_format": "network" if _is_network(self.model) else "skops",
            "format_version": FORMAT_VERSION,
            "emovox_version": __version__,
            "features": self.features,
            "labels": self.labels.to_dict(),
            "classes": self.classes,
            "preprocessing": self.preprocessing,
            "training": self.training,
        }


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write a bundle folder atomically (complete or not at all).

    An existing bundle at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    with atomic_folder(path) as work:
        if _is_network(bundle.model):
            bundle.model.save(work / "network")
        else:
            sio.dump(bundle.model, work / "model.skops")
        if bundle.unadapted_model is not None:
            sio.dump(bundle.unadapted_model, work / "model_unadapted.skops")
        if bundle.reference is not None:
            np.savez(work / "reference_stats.npz", count=bundle.reference.count,
                     mean=bundle.reference.mean, var=bundle.reference.var)
        (work / "bundle.json").write_text(json.dumps(bundle.metadata(), indent=2) + "\n")
        (work / "MODEL_CARD.md").write_text(bundle.card or "# Model card\n\n(none given)\n")
    bundle.path = path
    return path


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load and check a bundle folder, or the default bundle shipped in the package.

    A bundle is untrusted data: every file is validated (see
    :mod:`emovox.bundle_checks`) and the parts are held against each other before the
    bundle is returned, so a damaged or hostile bundle fails here, with one line
    naming the file, and never runs code.

    Raises
    ------
    BundleError
        Missing or damaged files, an unknown format, a model containing types outside
        the allowlist, classes or sizes that disagree between the parts.
    """
    path = default_bundle_path() if path is None else Path(path)
    meta_file = path / "bundle.json"
    if not meta_file.is_file():
        raise BundleError(f"{path}: not a model bundle (missing bundle.json)")
    meta = read_metadata(meta_file)
    try:
        extractor = get_extractor(meta.features)
        feature_size = int(np.prod(extractor.output_shape))
    except Exception as error:  # an unknown extractor or a bad parameter of one
        raise BundleError(f"{meta_file}: field 'features': {error}") from None
    try:
        labels = LabelSet.from_dict(meta.labels)
    except Exception as error:
        raise BundleError(f"{meta_file}: field 'labels': {error}") from None
    if meta.model_format == "network":
        from emovox.models.neural import NeuralClassifier

        try:
            model = NeuralClassifier.load(path / "network")
        except Exception as error:  # missing, damaged or mismatched weights
            raise BundleError(f"{path / 'network'}: {error}") from None
    else:
        model = load_skops(path / "model.skops")
    models = {"network" if meta.model_format == "network" else "model.skops": model}
    reference = None
    stats_file = path / "reference_stats.npz"
    if stats_file.is_file():
        reference = FeatureStats(*read_reference(stats_file))
    elif meta.preprocessing.normalization != "none":
        raise BundleError(f"{path}: a speaker-normalised bundle needs reference_stats.npz")
    unadapted = None
    if (path / "model_unadapted.skops").is_file():
        unadapted = models["model_unadapted.skops"] = load_skops(
            path / "model_unadapted.skops")
    check_consistency(path, meta.classes, models, feature_size,
                      None if reference is None else len(reference.mean))
    card_file = path / "MODEL_CARD.md"
    return Bundle(
        model=model,
        features=meta.features,
        labels=labels,
        classes=list(meta.classes),
        preprocessing=meta.preprocessing.model_dump(exclude_unset=True),
        training=meta.training,
        card=card_file.read_text(errors="replace") if card_file.is_file() else "",
        path=path,
        reference=reference,
        unadapted_model=unadapted,
    )


def _is_network(model: Any) -> bool:
    return type(model).__name__ == "NeuralClassifier"


def default_bundle_path() -> Path:
    """Folder of the model bundle that ships inside the emovox package."""
    path = Path(str(resources.files("emovox") / "bundles" / "default"))
    if not (path / "bundle.json").is_file():
        raise BundleError(
            f"{path}: the default model bundle is missing from this installation; "
            "reinstall emovox or build it with recipes/default_bundle.yaml"
        )
    return path
