"""Models share one interface: ``fit(X, y)``, ``predict_proba(X)``, ``classes_``."""

from emovox.models.classical import CLASSIFIERS, make_classifier


def available_models() -> list[str]:
    """Every model name a config may give: scikit-learn classifiers and networks, sorted.

    The networks (which need torch) are imported only here, when asked for.
    """
    from emovox.models.registry import available_networks

    return sorted({*CLASSIFIERS, *available_networks()})


__all__ = ["CLASSIFIERS", "available_models", "make_classifier"]
