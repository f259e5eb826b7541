"""The base of every emovox network and the registry of networks by name.

Network modules (:mod:`emovox.models.nets`, :mod:`emovox.models.heads`) import this one
and add their constructors to :data:`NETWORKS`; :mod:`emovox.models.registry` imports
them all and builds networks by name. No module imports its importer: no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from emovox.errors import ConfigError

__all__ = ["NETWORKS", "Network", "count_parameters"]


class Network(nn.Module):
    """Base class: remembers ``n_classes`` and ``input_shape`` and checks inputs.

    Parameters
    ----------
    n_classes : int
        Number of outputs (logits).
    input_shape : tuple of int
        Shape of one example, without the batch dimension.
    """

    def __init__(self, n_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ConfigError(f"{type(self).__name__}: n_classes must be an int >= 2, "
                              f"got {n_classes!r}")
        shape = tuple(int(s) for s in input_shape)
        if not shape or len(shape) > 2 or min(shape) < 1:
            raise ConfigError(f"{type(self).__name__}: input_shape must be (length,) or "
                              f"(frames, dims) with positive sizes, got {tuple(input_shape)}")
        self.n_classes = n_classes
        self.input_shape = shape

    def _channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` or ``(B, L, C)`` -> ``(B, C, L)``, checked against ``input_shape``."""
        expected = (1, self.input_shape[0]) if len(self.input_shape) == 1 else (
            self.input_shape[1], self.input_shape[0])
        if x.ndim == 2:
            x = x.unsqueeze(1)
        elif x.ndim == 3:
            x = x.transpose(1, 2)
        else:
            raise ValueError(f"{type(self).__name__}: expected a (batch, length) or "
                             f"(batch, frames, dims) tensor, got shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != expected:
            raise ValueError(self._shape_error(x))
        return x

    def _shape_error(self, x: torch.Tensor) -> str:
        return (f"{type(self).__name__} was built for input_shape {self.input_shape}, "
                f"got a tensor of shape {tuple(x.shape)}")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module.

    Batch-norm running statistics are buffers, not parameters, so they are not
    counted (Keras counts them as "non-trainable parameters").

    Parameters
    ----------
    module : torch.nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


#: Network constructors by name; each is called as ``f(n_classes, input_shape, **params)``.
NETWORKS: dict[str, Callable[..., Network]] = {}
