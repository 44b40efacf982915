"""Ray for the ``--ray`` commands: join a running cluster or start a small local one for the run.

Ray is an optional dependency (``pip install 'spinereview[ray]'``); this module imports it only
when asked, so nothing else in SpineReview needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from spine_core.errors import ClusterError

log = logging.getLogger(__name__)

#: Shared memory of a local Ray started by SpineReview: only small payloads (compressed masks,
#: study references) travel through Ray's object store, never whole volumes.
LOCAL_OBJECT_STORE_MB = 256


def require_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        ClusterError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ClusterError(
            f"Ray is not installed ({exc}); install it with `pip install 'spinereview[ray]'` on "
            "this machine and on every node of the cluster"
        ) from exc
    return ray


@contextmanager
def ray_connection(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[str]:
    """Connect to Ray for the duration of the block; yield a description of the cluster.

    * Ray already initialised in this process (a test, a notebook): used as it is, left running.
    * ``address`` given (``auto``, ``HOST:6379`` or ``ray://HOST:10001``): joined, and left
      running on exit (only this driver disconnects).
    * neither: a local Ray is started with ``num_cpus`` CPUs (default: all of this machine's), no
      dashboard and a small object store, and shut down on exit.

    Raises:
        ClusterError: Ray is missing or the cluster cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield _describe(ray, "this process's Ray")
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["object_store_memory"] = LOCAL_OBJECT_STORE_MB * 2**20
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterError(
            f"could not start or join {where} ({type(exc).__name__}: {exc}); check that "
            "`ray start --head` runs there and that the address is right"
        ) from exc
    try:
        yield _describe(ray, address or "local Ray")
    finally:
        ray.shutdown()


def _describe(ray: ModuleType, name: str) -> str:
    resources = ray.cluster_resources()
    return (f"{name}: {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs "
            f"on {len(ray.nodes())} node(s)")


def cluster_gpus() -> float:
    """GPUs in the connected Ray cluster (0 when none)."""
    ray = require_ray()
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> float:
    """CPUs in the connected Ray cluster."""
    ray = require_ray()
    return float(ray.cluster_resources().get("CPU", 0.0))
