"""scikit-learn classifiers, each behind a scaler that is fitted on training data only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from emovox.errors import ConfigError
from emovox.models.robust import GroupDROLogisticRegression


def _svm(**params: Any) -> ClassifierMixin:
    defaults = {"kernel": "rbf", "C": 1.0, "gamma": "scale", "class_weight": "balanced",
                "probability": True, "random_state": 0}
    return SVC(**{**defaults, **params})


def _logreg(**params: Any) -> ClassifierMixin:
    defaults = {"C": 0.1, "max_iter": 3000, "class_weight": "balanced"}
    return LogisticRegression(**{**defaults, **params})


def _group_dro(**params: Any) -> ClassifierMixin:
    # Fitted with the training rows' speakers as ``groups`` (see fit_model).
    return GroupDROLogisticRegression(**params)


def _mlp(**params: Any) -> ClassifierMixin:
    # Defaults of the published 180-feature MLP experiment.
    defaults = {"hidden_layer_sizes": (300,), "alpha": 0.01, "batch_size": 256,
                "epsilon": 1e-8, "learning_rate": "adaptive", "max_iter": 500,
                "random_state": 0}
    params = dict(params)
    if "hidden_layer_sizes" in params:
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return MLPClassifier(**{**defaults, **params})


CLASSIFIERS: dict[str, Callable[..., ClassifierMixin]] = {
    "svm": _svm,
    "logreg": _logreg,
    "group_dro": _group_dro,
    "mlp": _mlp,
}


def make_classifier(name: str, params: dict[str, Any] | None = None,
                    scale: bool = True) -> Pipeline:
    """A scikit-learn pipeline: standard scaling (fitted on training data) + classifier.

    Parameters
    ----------
    name : str
        ``svm`` (RBF SVC with probabilities), ``logreg``, ``group_dro`` (logistic
        regression for its worst training corpus or speaker,
        :class:`~emovox.models.robust.GroupDROLogisticRegression`) or ``mlp``.
    params : dict, optional
        Keyword arguments of the scikit-learn estimator, overriding emovox defaults.
    scale : bool
        Put a StandardScaler in front (fitted inside ``fit``, so never on test data).
    """
    if name not in CLASSIFIERS:
        from emovox.models import available_models

        raise ConfigError(f"unknown model {name!r}; known: {', '.join(available_models())}")
    try:
        classifier = CLASSIFIERS[name](**(params or {}))
    except TypeError as error:
        raise ConfigError(f"model {name!r}: {error}") from None
    steps = [("scale", StandardScaler())] if scale else []
    return Pipeline([*steps, ("classifier", classifier)])
