"""Networks by name: every registered network (the published ones and the pooling heads
over encoder frames), built with :func:`make_network`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emovox.errors import ConfigError
from emovox.models import heads as _heads  # noqa: F401  (registers the pooling heads)
from emovox.models import nets as _nets  # noqa: F401  (registers the published networks)
from emovox.models.base import NETWORKS, Network, count_parameters

__all__ = ["NETWORKS", "Network", "available_networks", "count_parameters", "make_network"]


def available_networks() -> list[str]:
    """Names :func:`make_network` accepts, sorted."""
    return sorted(NETWORKS)


def make_network(name: str, n_classes: int, input_shape: Sequence[int],
                 **params: Any) -> Network:
    """Build a registered network.

    Parameters
    ----------
    name : str
        One of :func:`available_networks`.
    n_classes : int
        Number of output logits.
    input_shape : tuple of int
        Shape of one example without the batch, e.g. ``(40,)`` or ``(94, 40)``.
    **params
        The network's own hyperparameters (see its class), overriding its defaults.

    Returns
    -------
    Network
        In training mode, with freshly initialised weights (seed torch first for
        reproducible weights).

    Raises
    ------
    ConfigError
        Unknown name, unknown hyperparameter or invalid value.

    Examples
    --------
    >>> net = make_network("cnn_small_b", n_classes=8, input_shape=(40,))
    >>> net(torch.zeros(3, 40)).shape
    torch.Size([3, 8])
    """
    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; known: {', '.join(available_networks())}")
    try:
        return NETWORKS[name](n_classes, tuple(input_shape), **params)
    except TypeError as error:
        raise ConfigError(f"network {name!r}: {error}") from None

