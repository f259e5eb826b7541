"""Group-robust linear classifier: logistic regression whose loss is that of its worst
training group (corpus or speaker), softened.

Group distributionally robust optimisation (GroupDRO; Sagawa et al. 2020, "Distributionally
robust neural networks for group shifts") minimises the largest of the groups' mean
losses instead of the mean over all rows, so a group that the pooled model fits badly
(an under-represented corpus, an unusual voice) is not traded for the easy majority.
Here the adversary's weights over groups are regularised by their KL divergence from
the groups' shares of the training weight, which makes the objective smooth and convex
in the weights (Sagawa et al.'s online exponentiated-gradient updates converge to the
same kind of saddle point):

.. math::

    \\min_{W, b} \\; C S \\tau \\log \\sum_g q^0_g \\exp(\\ell_g / \\tau)
    + \\tfrac{1}{2} \\lVert W \\rVert^2,

where :math:`\\ell_g` is group *g*'s weighted mean cross-entropy, :math:`q^0_g` its share
of the total sample weight :math:`S`. As the temperature :math:`\\tau \\to \\infty` this is
scikit-learn's ``LogisticRegression`` objective (same ``C``, same sample and class
weights); as :math:`\\tau \\to 0` it is the worst group's loss. The implied group weights
:math:`q_g \\propto q^0_g \\exp(\\ell_g / \\tau)` are kept in ``group_weights_``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from emovox.corpora.base import corpus_of

__all__ = ["GroupDROLogisticRegression"]


class GroupDROLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression trained for its worst group (soft GroupDRO).

    Parameters
    ----------
    C : float
        Inverse L2 strength, on the scale of scikit-learn's ``LogisticRegression``
        (the data term is ``C`` times the summed sample weight times the robust loss).
    temperature : float or None
        Softness of the worst-group maximum, in nats of cross-entropy: a group whose mean
        loss is higher by ``temperature`` gets e times the weight. ``None`` gives every
        group its share of the training weight (plain weighted logistic regression).
    group_by : {"corpus", "speaker"}
        How the ``groups`` given to :meth:`fit` (speaker ids ``"corpus:speaker"``) form
        the groups: their corpus, or each speaker alone.
    class_weight : {"balanced"} or None
        As in ``LogisticRegression``: weighs rows by inverse class frequency.
    max_iter : int
        L-BFGS iterations.
    tol : float
        L-BFGS gradient tolerance.

    Attributes
    ----------
    classes_ : np.ndarray
    coef_ : np.ndarray, shape (k, d)
    intercept_ : np.ndarray, shape (k,)
    groups_ : np.ndarray
        The distinct training groups.
    group_losses_ : np.ndarray
        Each group's weighted mean training cross-entropy at the solution.
    group_weights_ : np.ndarray
        The adversary's weight of each group at the solution (sums to 1).
    n_iter_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3))
    >>> y = np.where(X[:, 0] > 0, "a", "b")
    >>> speakers = np.repeat(["x:1", "y:1"], 30)
    >>> model = GroupDROLogisticRegression(C=1.0).fit(X, y, groups=speakers)
    >>> model.predict_proba(X).shape
    (60, 2)
    """

    def __init__(self, C: float = 0.1, temperature: float | None = 0.1,
                 group_by: Literal["corpus", "speaker"] = "corpus",
                 class_weight: Literal["balanced"] | None = "balanced",
                 max_iter: int = 3000, tol: float = 1e-6) -> None:
        self.C = C
        self.temperature = temperature
        self.group_by = group_by
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> GroupDROLogisticRegression:
        """Fit by L-BFGS from zero weights.

        Parameters
        ----------
        X : array-like, shape (n, d)
        y : array-like, shape (n,)
        sample_weight : array-like, shape (n,), optional
            Row weights (e.g. corpus balance); they weigh rows within a group and set
            the groups' prior shares ``q0``.
        groups : array-like, shape (n,), optional
            Speaker id of each row (``"corpus:speaker"``). Without it all rows are one
            group, and the fit is plain weighted logistic regression.

        Returns
        -------
        GroupDROLogisticRegression
            ``self``.
        """
        if self.C <= 0:
            raise ValueError(f"C must be positive, got {self.C}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be positive or None, got {self.temperature}")
        if self.group_by not in ("corpus", "speaker"):
            raise ValueError(f"group_by must be 'corpus' or 'speaker', got {self.group_by!r}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        n, d = X.shape
        self.classes_, y_index = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError("GroupDROLogisticRegression needs at least 2 classes")
        weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
        if self.class_weight is not None:
            # As LogisticRegression: classes balanced by their summed sample weight.
            weight = weight * compute_class_weight(
                self.class_weight, classes=self.classes_, y=y,
                sample_weight=sample_weight)[y_index]
        if groups is None:
            group_ids = np.zeros(n, dtype=int)
            self.groups_ = np.array(["all"])
        else:
            keys = corpus_of(groups) if self.group_by == "corpus" else np.asarray(groups)
            self.groups_, group_ids = np.unique(keys.astype(str), return_inverse=True)
        n_groups = len(self.groups_)
        group_weight = np.bincount(group_ids, weights=weight, minlength=n_groups)
        total = group_weight.sum()
        log_prior = np.log(group_weight / total)
        onehot = np.eye(k)[y_index]
        scale = self.C * total

        def losses(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            W, b = theta[:k * d].reshape(k, d), theta[k * d:]
            logits = X @ W.T + b
            log_p = logits - logsumexp(logits, axis=1, keepdims=True)
            row_loss = -(log_p * onehot).sum(axis=1)
            group_loss = np.bincount(group_ids, weights=weight * row_loss,
                                     minlength=n_groups) / group_weight
            return group_loss, log_p

        def adversary(group_loss: np.ndarray) -> np.ndarray:
            if self.temperature is None:
                return np.exp(log_prior)
            return softmax(log_prior + group_loss / self.temperature)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[:k * d].reshape(k, d)
            group_loss, log_p = losses(theta)
            if self.temperature is None:
                robust = float(np.exp(log_prior) @ group_loss)
            else:
                robust = self.temperature * float(
                    logsumexp(log_prior + group_loss / self.temperature))
            q = adversary(group_loss)
            # d robust / d logits of row i: q_g(i) w_i / W_g(i) * (p_i - onehot_i).
            row_scale = scale * q[group_ids] * weight / group_weight[group_ids]
            residual = row_scale[:, None] * (np.exp(log_p) - onehot)
            grad = np.concatenate([(residual.T @ X + W).ravel(), residual.sum(axis=0)])
            return scale * robust + 0.5 * float(W.ravel() @ W.ravel()), grad

        result = minimize(objective, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": self.tol})
        self.coef_ = result.x[:k * d].reshape(k, d)
        self.intercept_ = result.x[k * d:]
        self.group_losses_ = losses(result.x)[0]
        self.group_weights_ = adversary(self.group_losses_)
        self.n_iter_ = int(result.nit)
        self.n_features_in_ = d
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits, shape (n, k), columns in ``classes_`` order."""
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, k), columns in ``classes_`` order."""
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class of each row."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]
