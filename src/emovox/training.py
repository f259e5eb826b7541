"""The one training loop of every emovox network.

:func:`train` fits any :class:`torch.nn.Module` that maps a float batch to logits,
with mini-batches, an optimiser chosen by name, ``ReduceLROnPlateau`` on the
validation loss, early stopping, and the weights of the best epoch (lowest
validation loss) restored at the end. It returns a :class:`TrainingHistory` that can
draw the training curves.

Reproducibility: :func:`train` seeds Python's ``random``, NumPy's global generator
and torch, and shuffles with its own seeded generator; the CPU kernels the emovox
networks use are deterministic, so equal seeds give equal histories. Torch's
deterministic-algorithms mode is only switched on when asked (``deterministic=True``,
restored afterwards): its first use imports ``torch._inductor``, which takes seconds.
:func:`train` uses the number of threads torch is set to
(:func:`torch.set_num_threads`) unless given ``num_threads``, which it sets for the
run and then restores. On a busy machine one thread is often much faster than
several (threads spin waiting for each other).
"""



from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["OPTIMIZERS", "TrainingHistory", "evaluate", "seed_everything", "train"]

#: Optimiser names :func:`train` accepts.
OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass
class TrainingHistory:
    """Per-epoch losses, accuracies and learning rates of one :func:`train` run.

    Attributes
    ----------
    train_loss, train_accuracy : list of float
        Mean cross-entropy and accuracy over each epoch's training batches (computed
        during the epoch, with dropout and augmentation active).
    valid_loss, valid_accuracy : list of float
        The same on the validation set after each epoch (eval mode); empty when
        training ran without a validation set.
    lr : list of float
        Learning rate used during each epoch.
    best_epoch : int
        1-based number of the epoch whose weights were restored (lowest monitored
        loss); 0 if no epoch finished.
    monitor : str
        ``"valid_loss"``, or ``"train_loss"`` when there was no validation set.
    stopped_early : bool
        Training ended by early stopping before ``epochs``.
    seconds : float
        Wall-clock duration.
    notes : list of str
        Things worth knowing about the run (no validation set, divergence...).
    """

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = 0
    monitor: Literal["valid_loss", "train_loss"] = "valid_loss"
    stopped_early: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.train_loss)

    @property
    def best_loss(self) -> float:
        """Monitored loss of the best epoch (NaN if none)."""
        values = self.valid_loss if self.monitor == "valid_loss" else self.train_loss
        return values[self.best_epoch - 1] if self.best_epoch else math.nan

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-serialisable values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingHistory:
        """Rebuild a history written by :meth:`to_dict`.

        Parameters
        ----------
        data : dict
            Output of :meth:`to_dict` (e.g. read back from JSON).

        Returns
        -------
        TrainingHistory
        """
        return cls(**data)

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Save the training curves as a PNG: loss and accuracy, training and validation.

        Two panels share the epoch axis; a dotted vertical line marks the best
        (restored) epoch. The file is written atomically (temporary file in the same
        folder, then :func:`os.replace`), without pyplot.

        Parameters
        ----------
        path : str or PathLike
            Destination PNG; its folder is created if needed.
        title : str, optional
            Heading of the figure.

        Returns
        -------
        Path
            ``path``.
        """
        from emovox.plots import _new_figure, _save

        fig = _new_figure(figsize=(10.0, 4.2))
        loss_ax, acc_ax = fig.subplots(1, 2)
        x = np.arange(1, self.epochs + 1)
        for ax, kind, label in ((loss_ax, "loss", "cross-entropy loss"),
                                (acc_ax, "accuracy", "accuracy")):
            ax.plot(x, getattr(self, f"train_{kind}"), color="tab:blue", label="training")
            valid = getattr(self, f"valid_{kind}")
            if valid:
                ax.plot(x[: len(valid)], valid, color="tab:orange", label="validation")
            if self.best_epoch:
                ax.axvline(self.best_epoch, color="tab:green", linestyle=":", linewidth=1.3,
                           label=f"best epoch ({self.best_epoch})")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.set_axisbelow(True)
            ax.legend(fontsize=9, framealpha=0.9)
        acc_ax.set_ylim(0, 1.02)
        acc_ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        heading = title or "Training curves"
        if self.monitor == "train_loss":
            heading += " (no validation set: best epoch by training loss)"
        if self.stopped_early:
            heading += f" — stopped early after {self.epochs} epochs"
        fig.suptitle(heading, fontsize=11)
        return _save(fig, path)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch.

    Parameters
    ----------
    seed : int
        Any non-negative integer.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _torch_settings(num_threads: int | None, deterministic: bool) -> Iterator[None]:
    """Optionally deterministic algorithms and a thread count for a block, restored."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    if deterministic and not was_deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if deterministic and not was_deterministic:
            torch.use_deterministic_algorithms(False, warn_only=warn_only)
        if num_threads is not None:
            torch.set_num_threads(threads)


def _as_tensors(X: Any, y: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if y_t.ndim != 1 or X_t.ndim < 2 or len(X_t) != len(y_t):
        raise ValueError(f"{name}: need X of shape (n, ...) and y of shape (n,) with the same "
                         f"n, got {tuple(X_t.shape)} and {tuple(y_t.shape)}")
    if not torch.isfinite(X_t).all():
        raise ValueError(f"{name}: X contains NaN or infinite values")
    return X_t, y_t


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split shuffled row indices into batches; a trailing batch of one joins the previous.

    (Batch norm cannot train on a batch of one example.)
    """
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


def _make_optimizer(name: str, params: Any, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        # Keras's RMSprop constants (rho 0.9, epsilon 1e-7): the published recipes used it.
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, momentum=momentum,
                                   weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def _criterion(class_weight: Sequence[float] | np.ndarray | None) -> nn.CrossEntropyLoss:
    if class_weight is None:
        return nn.CrossEntropyLoss()
    return nn.CrossEntropyLoss(weight=torch.as_tensor(np.asarray(class_weight, np.float32)))


def evaluate(model: nn.Module, X: Any, y: Any, batch_size: int = 256,
             class_weight: Sequence[float] | np.ndarray | None = None) -> tuple[float, float]:
    """Cross-entropy loss and accuracy of a model on a labelled set, in eval mode.

    This is how :func:`train` computes the validation scores of each epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, ...)`` float tensors to logits ``(batch, n_classes)``.
    X : array-like, shape (n, ...)
        Inputs.
    y : array-like of int, shape (n,)
        Class indices.
    batch_size : int
        Examples per forward pass (the result does not depend on it beyond rounding).
    class_weight : sequence of float, optional
        Per-class loss weights (as in training).

    Returns
    -------
    loss : float
        Mean (weighted) cross-entropy.
    accuracy : float
        Share of correctly classified examples.
    """
    X_t, y_t = _as_tensors(X, y, "evaluate")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([model(X_t[i:i + batch_size])
                                for i in range(0, len(X_t), batch_size)])
            loss = _criterion(class_weight)(logits, y_t).item()
            accuracy = (logits.argmax(dim=1) == y_t).float().mean().item()
    finally:
        model.train(was_training)
    return float(loss), float(accuracy)


def train(
    model: nn.Module,
    X_train: Any,
    y_train: Any,
    X_valid: Any | None = None,
    y_valid: Any | None = None,
    *,
    epochs: int = 100,
    batch_size: int = 32,
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam",
    lr: float = 1e-3,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    lr_factor: float = 0.9,
    lr_patience: int = 20,
    early_stopping_patience: int | None = None,
    seed: int = 0,
    progress: bool = True,
    augment_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_weight: Sequence[float] | np.ndarray | None = None,
    num_threads: int | None = None,
    deterministic: bool = False,
) -> TrainingHistory:
    """Train a network with mini-batches; restore the weights of its best epoch.

    After every epoch the validation loss and accuracy are computed (eval mode); the
    learning rate is multiplied by ``lr_factor`` when the validation loss has not
    improved for ``lr_patience`` epochs (``ReduceLROnPlateau``); training stops when
    it has not improved for ``early_stopping_patience`` epochs. At the end the
    weights of the epoch with the lowest validation loss are loaded back into
    ``model``, which is left in eval mode. Without a validation set the training
    loss is monitored instead (a warning says so, and ``history.monitor`` records it).

    Parameters
    ----------
    model : torch.nn.Module
        Maps float ``(batch, ...)`` tensors to logits ``(batch, n_classes)``;
        trained in place.
    X_train : array-like, shape (n, ...)
        Training inputs (converted to float32).
    y_train : array-like of int, shape (n,)
        Class indices in ``[0, n_classes)``.
    X_valid, y_valid : array-like, optional
        Validation set (both or neither).
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Examples per batch (a trailing batch of one joins the previous batch).
    optimizer : {"adam", "rmsprop", "sgd"}
        RMSprop uses Keras's constants (rho 0.9, epsilon 1e-7).
    lr : float
        Initial learning rate.
    momentum : float
        Momentum of SGD and RMSprop (ignored by Adam).
    weight_decay : float
        L2 penalty.
    lr_factor, lr_patience : float, int
        ``ReduceLROnPlateau`` factor and patience (epochs), on the monitored loss.
    early_stopping_patience : int, optional
        Stop after this many epochs without improvement; ``None``: never.
    seed : int
        Seeds ``random``, NumPy, torch and the batch shuffling.
    progress : bool
        Show a tqdm bar over epochs with the losses.
    augment_fn : callable, optional
        Applied to every training batch tensor ``(batch, ...)`` before the forward
        pass (feature-level augmentation); never to validation data. Use torch's
        global generator for randomness so ``seed`` makes it reproducible.
    class_weight : sequence of float, optional
        Per-class weights of the cross-entropy (e.g. balanced weights).
    num_threads : int, optional
        Torch threads for this run (restored afterwards); default: as set globally.
    deterministic : bool
        Run under ``torch.use_deterministic_algorithms(True, warn_only=True)``
        (restored afterwards). Not needed for reproducibility on CPU; costs seconds
        the first time in a process.

    Returns
    -------
    TrainingHistory

    Raises
    ------
    ValueError
        Inconsistent shapes, non-finite inputs, labels out of range or bad settings.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    for name, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                 ("lr_patience", lr_patience, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if not (lr > 0 and 0 < lr_factor < 1):
        raise ValueError(f"need lr > 0 and 0 < lr_factor < 1, got lr={lr}, "
                         f"lr_factor={lr_factor}")
    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise ValueError(f"early_stopping_patience must be >= 1 or None, "
                         f"got {early_stopping_patience}")
    if (X_valid is None) != (y_valid is None):
        raise ValueError("give both X_valid and y_valid, or neither")
    X, y = _as_tensors(X_train, y_train, "training set")
    if len(X) < 2:
        raise ValueError(f"need at least 2 training examples, got {len(X)}")
    has_valid = X_valid is not None and len(X_valid) > 0
    if has_valid:
        X_v, y_v = _as_tensors(X_valid, y_valid, "validation set")
    n_classes = getattr(model, "n_classes", None)
    labels = torch.cat([y, y_v]) if has_valid else y
    if labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes):
        raise ValueError(f"labels must be class indices in [0, {n_classes}), "
                         f"got values in [{labels.min().item()}, {labels.max().item()}]")

    history = TrainingHistory(monitor="valid_loss" if has_valid else "train_loss")
    if not has_valid:
        message = ("no validation set: the training loss is monitored for the learning-rate "
                   "schedule, early stopping and the restored epoch")
        history.notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=2)

    started = time.perf_counter()
    with _torch_settings(num_threads, deterministic):
        seed_everything(seed)
        generator = torch.Generator().manual_seed(seed)
        opt = _make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=lr_factor, patience=lr_patience)
        criterion = _criterion(class_weight)
        best_loss, best_state, since_best = math.inf, None, 0
        bar = tqdm(range(1, epochs + 1), desc="training", unit="epoch", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for epoch in bar:
            model.train()
            total_loss, correct = 0.0, 0
            for rows in _batches(torch.randperm(len(X), generator=generator), batch_size):
                xb, yb = X[rows], y[rows]
                if augment_fn is not None:
                    xb = augment_fn(xb)
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = criterion(logits, yb)
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(rows)
                correct += int((logits.argmax(dim=1) == yb).sum())
            history.train_loss.append(total_loss / len(X))
            history.train_accuracy.append(correct / len(X))
            history.lr.append(float(opt.param_groups[0]["lr"]))
            if has_valid:
                v_loss, v_acc = evaluate(model, X_v, y_v, max(batch_size, 256), class_weight)
                history.valid_loss.append(v_loss)
                history.valid_accuracy.append(v_acc)
            monitored = history.valid_loss[-1] if has_valid else history.train_loss[-1]
            if not math.isfinite(history.train_loss[-1]):
                history.notes.append(f"training diverged (loss {history.train_loss[-1]}) "
                                     f"at epoch {epoch}; stopped")
                warnings.warn(history.notes[-1], UserWarning, stacklevel=2)
                break
            scheduler.step(monitored)
            if monitored < best_loss:
                best_loss, since_best, history.best_epoch = monitored, 0, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
            postfix = {"loss": f"{history.train_loss[-1]:.4f}"}
            if has_valid:
                postfix |= {"val_loss": f"{history.valid_loss[-1]:.4f}",
                            "val_acc": f"{history.valid_accuracy[-1]:.3f}"}
            bar.set_postfix(postfix | {"best": history.best_epoch}, refresh=False)
            if early_stopping_patience is not None and since_best >= early_stopping_patience:
                history.stopped_early = epoch < epochs
                break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    history.seconds = time.perf_counter() - started
    return history
