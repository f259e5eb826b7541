"""A scikit-learn-style classifier around an emovox network and the trainer.

:class:`NeuralClassifier` has the interface every emovox model shares (``fit``,
``predict_proba``, ``classes_``), so protocols and evaluation treat it like an SVM.
``fit`` standardises the features with statistics of the training rows only, carves
a **speaker-disjoint** validation set out of the training rows (for the learning-rate
schedule, early stopping and choosing the restored epoch), builds the network from
the registry in :mod:`emovox.models.nets` and trains it with
:func:`emovox.training.train`.

A fitted classifier is saved as two files, never pickle::

    <folder>/weights.safetensors   network state dict ("network.*") and the
                                   standardisation statistics ("scaler.mean/scale")
    <folder>/neural.json           constructor parameters, classes, input shape, history
"""



from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from emovox.fileio import atomic_write
from emovox.models.base import Network
from emovox.models.registry import make_network
from emovox.protocols import Split, with_validation
from emovox.training import TrainingHistory, seed_everything, train

__all__ = ["NeuralClassifier", "load_neural", "save_neural"]

FORMAT = "emovox-neural"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "neural.json"


class NeuralClassifier(ClassifierMixin, BaseEstimator):
    """A torch network from the registry, trained like a scikit-learn classifier.

    Parameters
    ----------
    network : str
        Registry name (see :func:`emovox.models.nets.available_networks`).
    network_params : dict, optional
        Hyperparameters of the network (e.g. ``{"dropout": 0.3}``).
    input_shape : tuple of int, optional
        Shape of one example. Give it when ``X`` arrives flattened to ``(n, dims)``
        (as :mod:`emovox.experiment` stores features) but is really a sequence,
        e.g. ``(94, 40)`` for ``mfcc_sequence``; rows are reshaped to it.
        ``None``: ``X.shape[1:]``.
    epochs, batch_size, optimizer, lr, momentum, weight_decay, lr_factor, lr_patience
        Passed to :func:`emovox.training.train`.
    early_stopping_patience : int, optional
        Epochs without validation improvement before stopping; ``None``: never.
    valid_fraction : float
        Share of the training *groups* (speakers) carved out for validation when
        ``fit`` gets no validation set; 0 trains without one (the training loss is
        then monitored).
    standardize : bool
        Standardise each feature dimension (the last axis) with the mean and standard
        deviation over all training rows and frames.
    class_weight : {"balanced"} or None
        ``"balanced"`` weighs the loss by inverse class frequency of the training rows.
    seed : int
        Seeds the validation carving, the weight initialisation and the training.
    progress : bool
        Show the trainer's progress bar.
    num_threads : int, optional
        Torch threads while training (restored afterwards).

    Attributes
    ----------
    classes_ : np.ndarray
        Sorted class labels; column order of :meth:`predict_proba`.
    network_ : Network
        The trained network (eval mode), with the weights of its best epoch.
    history_ : TrainingHistory
        Per-epoch losses and accuracies.
    input_shape_ : tuple of int
        Shape of one example as the network sees it.
    mean_, scale_ : np.ndarray, shape (dims,)
        Standardisation statistics (0 and 1 when ``standardize=False``).
    train_rows_, valid_rows_ : np.ndarray of int
        Positions (in the ``X`` given to ``fit``) of the rows trained and validated
        on; ``valid_rows_`` is empty when a validation set was passed or none was used.

    Examples
    --------
    >>> clf = NeuralClassifier("cnn_small_b", epochs=50, progress=False)
    >>> clf.fit(X, y, groups=speakers).predict_proba(X_test)  # doctest: +SKIP
    """

    def __init__(
        self,
        network: str = "cnn1d_deep",
        network_params: dict[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        epochs: int = 100,
        batch_size: int = 32,
        optimizer: Literal["adam", "rmsprop", "sgd"] = "adam",
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_factor: float = 0.9,
        lr_patience: int = 20,
        early_stopping_patience: int | None = 30,
        valid_fraction: float = 0.2,
        standardize: bool = True,
        class_weight: Literal["balanced"] | None = None,
        seed: int = 0,
        progress: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.network = network
        self.network_params = network_params
        self.input_shape = input_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.early_stopping_patience = early_stopping_patience
        self.valid_fraction = valid_fraction
        self.standardize = standardize
        self.class_weight = class_weight
        self.seed = seed
        self.progress = progress
        self.num_threads = num_threads

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: Any,
        groups: Any | None = None,
        X_valid: Any | None = None,
        y_valid: Any | None = None,
        augmented: Any | None = None,
    ) -> NeuralClassifier:
        """Standardise, carve a validation set if needed, build and train the network.

        Parameters
        ----------
        X : array-like, shape (n, *input_shape) or (n, prod(input_shape))
            Training features.
        y : array-like, shape (n,)
            Class labels (any sortable type; ``classes_`` is their sorted set).
        groups : array-like, shape (n,), optional
            Speaker (or other group) of each row. Without ``X_valid`` the validation
            rows are whole groups, so no speaker is in both training and validation.
            Missing groups (or a single group) fall back to random rows, with a warning.
        X_valid, y_valid : array-like, optional
            An explicit validation set (used as given; nothing is carved).
        augmented : array-like of bool, shape (n,), optional
            Marks rows computed from augmented audio. They are never validated on;
            an augmented row whose group lands in the validation set is dropped, so
            copies of validation speakers never reach training either.

        Returns
        -------
        NeuralClassifier
            ``self``.

        Raises
        ------
        ValueError
            Inconsistent lengths, fewer than two classes, validation labels unseen in
            training, or bad parameters.
        """
        X_arr = self._reshape(np.asarray(X, dtype=np.float32), self.input_shape)
        y_arr = np.asarray(y)
        n = len(X_arr)
        if y_arr.ndim != 1 or len(y_arr) != n:
            raise ValueError(f"X has {n} rows but y has shape {y_arr.shape}")
        classes, y_idx = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes to train, got {list(classes)}")
        if not 0.0 <= float(self.valid_fraction) < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        is_augmented = (np.zeros(n, dtype=bool) if augmented is None
                        else np.asarray(augmented, dtype=bool))
        if is_augmented.shape != (n,):
            raise ValueError(f"augmented must have shape ({n},), got {is_augmented.shape}")
        group_arr = None if groups is None else np.asarray(groups).astype(str)
        if group_arr is not None and group_arr.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {group_arr.shape}")

        if X_valid is not None or y_valid is not None:
            if X_valid is None or y_valid is None:
                raise ValueError("give both X_valid and y_valid, or neither")
            train_rows, valid_rows = np.arange(n), np.array([], dtype=int)
            X_v = self._reshape(np.asarray(X_valid, dtype=np.float32), X_arr.shape[1:])
            y_v_labels = np.asarray(y_valid)
            unseen = sorted(set(y_v_labels.tolist()) - set(classes.tolist()))
            if unseen:
                raise ValueError(f"validation labels {unseen} do not occur in training")
            y_v = np.searchsorted(classes, y_v_labels)
        elif self.valid_fraction > 0:
            train_rows, valid_rows = self._carve(group_arr, is_augmented)
            X_v, y_v = X_arr[valid_rows], y_idx[valid_rows]
        else:
            train_rows, valid_rows = np.arange(n), np.array([], dtype=int)
            X_v = y_v = None

        X_t = X_arr[train_rows]
        if self.standardize:
            axes = tuple(range(X_t.ndim - 1))
            mean = X_t.mean(axis=axes, dtype=np.float64)
            scale = X_t.std(axis=axes, dtype=np.float64)
            scale[scale < 1e-8] = 1.0
        else:
            mean, scale = np.zeros(X_t.shape[-1]), np.ones(X_t.shape[-1])
        self.mean_ = mean.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        self.classes_ = classes
        self.input_shape_ = tuple(int(s) for s in X_arr.shape[1:])
        self.train_rows_, self.valid_rows_ = train_rows, valid_rows

        weights = None
        if self.class_weight == "balanced":
            counts = np.bincount(y_idx[train_rows], minlength=len(classes))
            weights = len(train_rows) / (len(classes) * np.maximum(counts, 1))
        elif self.class_weight is not None:
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")

        seed_everything(self.seed)  # reproducible weight initialisation
        self.network_ = self._build(len(classes))
        self.history_ = train(
            self.network_, self._scale(X_t), y_idx[train_rows],
            None if X_v is None else self._scale(X_v), y_v,
            epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
            lr_factor=self.lr_factor, lr_patience=self.lr_patience,
            early_stopping_patience=self.early_stopping_patience, seed=self.seed,
            progress=self.progress, class_weight=weights, num_threads=self.num_threads,
        )
        return self

    def _carve(self, groups: np.ndarray | None, augmented: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation row positions, validation by whole groups if possible."""
        n = len(augmented)
        originals = np.flatnonzero(~augmented)
        if groups is None or len(set(groups[originals])) < 2:
            reason = "no groups were given" if groups is None else "there is only one group"
            warnings.warn(
                f"NeuralClassifier: {reason}, so validation rows are drawn at random and "
                "may share speakers with training (early stopping may be optimistic); "
                "pass groups=speakers", UserWarning, stacklevel=3)
        # A single group makes with_validation draw random rows.
        table = pd.DataFrame({"speaker": groups[originals] if groups is not None
                              else np.full(len(originals), "?")})
        split = with_validation(
            table, Split("fit", np.arange(len(originals)), np.array([], dtype=int)),
            fraction=float(self.valid_fraction), seed=self.seed)
        valid_rows = originals[split.valid]
        train_rows = originals[split.train]
        if augmented.any():
            extra = np.flatnonzero(augmented)
            if groups is not None:
                extra = extra[~np.isin(groups[extra], groups[valid_rows])]
            train_rows = np.sort(np.concatenate([train_rows, extra]))
        if len(train_rows) == 0 or len(valid_rows) == 0:
            raise ValueError(f"valid_fraction={self.valid_fraction} leaves "
                             f"{len(train_rows)} training and {len(valid_rows)} validation "
                             f"rows of {n}; change it or pass X_valid/y_valid")
        return train_rows, valid_rows

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like, shape (n, *input_shape_) or (n, prod(input_shape_))

        Returns
        -------
        np.ndarray, shape (n, n_classes), float64
            Rows sum to 1.
        """
        check_is_fitted(self, "network_")
        X_arr = self._scale(self._reshape(np.asarray(X, dtype=np.float32), self.input_shape_))
        self.network_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(X_arr), 512):
                logits = self.network_(torch.from_numpy(X_arr[start:start + 512]))
                out.append(torch.softmax(logits.double(), dim=1).numpy())
        if not out:
            return np.zeros((0, len(self.classes_)))
        proba = np.concatenate(out)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like, shape (n, *input_shape_) or (n, prod(input_shape_))

        Returns
        -------
        np.ndarray, shape (n,)
            Labels from ``classes_``.
        """
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # ------------------------------------------------------------------ helpers
    def _build(self, n_classes: int) -> Network:
        return make_network(self.network, n_classes, self.input_shape_,
                            **(self.network_params or {}))

    @staticmethod
    def _reshape(X: np.ndarray, shape: Sequence[int] | None) -> np.ndarray:
        if X.ndim < 2:
            raise ValueError(f"X must have shape (n, ...), got {X.shape}")
        if shape is None:
            return X
        shape = tuple(int(s) for s in shape)
        if math.prod(X.shape[1:]) != math.prod(shape):
            raise ValueError(f"rows of shape {X.shape[1:]} cannot be read as {shape}")
        return X.reshape(len(X), *shape)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((X - self.mean_) / self.scale_, dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything numeric of the fitted model, as named tensors (for safetensors).

        Returns
        -------
        dict of str to torch.Tensor
            ``network.<name>`` for the state dict and ``scaler.mean``/``scaler.scale``.
        """
        check_is_fitted(self, "network_")
        tensors = {f"network.{k}": v.detach().contiguous().clone()
                   for k, v in self.network_.state_dict().items()}
        tensors["scaler.mean"] = torch.from_numpy(self.mean_.copy())
        tensors["scaler.scale"] = torch.from_numpy(self.scale_.copy())
        return tensors

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description: constructor parameters, classes, shapes, history.

        Returns
        -------
        dict
        """
        check_is_fitted(self, "network_")
        classes = self.classes_.tolist()
        if all(isinstance(c, str) for c in classes):
            kind = "str"
        elif all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            kind = "int"
        else:
            raise TypeError(f"only string or integer class labels can be saved, got {classes}")
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": _jsonable(self.get_params()),
            "classes": classes,
            "classes_kind": kind,
            "input_shape": list(self.input_shape_),
            "history": self.history_.to_dict() if hasattr(self, "history_") else None,
        }

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor],
                   metadata: dict[str, Any]) -> NeuralClassifier:
        """Rebuild a fitted classifier from :meth:`state_tensors` and :meth:`metadata`.

        Parameters
        ----------
        tensors : dict of str to torch.Tensor
        metadata : dict

        Returns
        -------
        NeuralClassifier
            Ready to predict (no training code or data needed).

        Raises
        ------
        ValueError
            Unknown format, or weights that do not fit the described network.
        """
        if (metadata.get("format") != FORMAT
                or metadata.get("format_version") != FORMAT_VERSION):
            raise ValueError(f"not an {FORMAT} v{FORMAT_VERSION} description: "
                             f"{metadata.get('format')!r} v{metadata.get('format_version')}")
        model = cls(**metadata["params"])
        model.classes_ = np.array(metadata["classes"],
                                  dtype=str if metadata["classes_kind"] == "str" else np.int64)
        model.input_shape_ = tuple(int(s) for s in metadata["input_shape"])
        model.mean_ = tensors["scaler.mean"].numpy().astype(np.float32)
        model.scale_ = tensors["scaler.scale"].numpy().astype(np.float32)
        network = model._build(len(model.classes_))
        state = {k.removeprefix("network."): v for k, v in tensors.items()
                 if k.startswith("network.")}
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"weights do not match network {model.network!r}: {error}") from None
        model.network_ = network.eval()
        if metadata.get("history"):
            model.history_ = TrainingHistory.from_dict(metadata["history"])
        model.train_rows_ = model.valid_rows_ = np.array([], dtype=int)
        return model

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``weights.safetensors`` and ``neural.json`` into a folder (no pickle).

        Each file is written to a temporary name in the folder and moved into place.

        Parameters
        ----------
        path : str or PathLike
            Folder; created if needed.

        Returns
        -------
        Path
            The folder.
        """
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state_tensors(), self.metadata()
        atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(
            tensors, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)}))
        atomic_write(folder / META_FILE,
                      lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NeuralClassifier:
        """Load a classifier written by :meth:`save`.

        Parameters
        ----------
        path : str or PathLike
            The folder.

        Returns
        -------
        NeuralClassifier
        """
        from safetensors.torch import load_file

        folder = Path(path)
        for name in (WEIGHTS_FILE, META_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: not a saved NeuralClassifier "
                                        f"(missing {name})")
        metadata = json.loads((folder / META_FILE).read_text())
        return cls.from_state(load_file(str(folder / WEIGHTS_FILE)), metadata)


def save_neural(model: NeuralClassifier, path: str | os.PathLike[str]) -> Path:
    """Save a fitted :class:`NeuralClassifier` (safetensors + JSON); see its ``save``.

    Parameters
    ----------
    model : NeuralClassifier
    path : str or PathLike
        Folder.

    Returns
    -------
    Path
    """
    return model.save(path)


def load_neural(path: str | os.PathLike[str]) -> NeuralClassifier:
    """Load a :class:`NeuralClassifier` saved by :func:`save_neural`.

    Parameters
    ----------
    path : str or PathLike
        Folder.

    Returns
    -------
    NeuralClassifier
    """
    return NeuralClassifier.load(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
