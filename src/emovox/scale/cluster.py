"""Ray clusters: joining one, or starting one on this machine (one place for both).

Imported by the batch jobs (:mod:`emovox.scale.executors`) and by feature extraction
(:func:`emovox.features.extract_many` with ``engine="ray"``); light to import (Ray
itself loads only when a cluster is asked for).
"""

from __future__ import annotations

from typing import Any

from emovox.errors import ConfigError

#: Object store of a Ray started by emovox on this machine (the default reserves 30 %
#: of memory): records and feature batches are small.
RAY_OBJECT_STORE_BYTES = 256 * 1024**2


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("--engine ray needs Ray: pip install 'emovox[ray]'") from error
    return ray


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address``, or start one on this machine (object store
    bounded); a Ray already initialised in this process is used as it is."""
    ray = require_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A new cluster of this machine only (address="local": never a stale one
            # found in Ray's temp folder), on loopback, reachable from nowhere else.
            ray.init(address="local", num_cpus=num_cpus,
                     object_store_memory=RAY_OBJECT_STORE_BYTES,
                     include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    return ray
