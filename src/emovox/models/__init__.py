"""Models share one interface: ``fit(X, y)``, ``predict_proba(X)``, ``classes_``."""

from emovox.models.classical import CLASSIFIERS, make_classifier

__all__ = ["CLASSIFIERS", "make_classifier"]
