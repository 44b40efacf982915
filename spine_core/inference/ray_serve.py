"""The inference backend on Ray Serve: the HTTP API of ``spine serve`` from N replicas.

Each replica is a Ray actor that loads the models once (through the same
:func:`~spine_core.inference.select.load_local_predictor` as ``spine serve``), before it takes
traffic, and then serves the very FastAPI app of :func:`spine_core.inference.server.create_app`:
same routes, same token check, same 413 size limit, same per-replica job slots (503 busy), same
job timeout (504), same wire format. :class:`~spine_core.inference.client.HttpPredictor` talks to
it unchanged (``SPINE_BACKEND_URL=http://HOST:PORT``).

What Ray adds or changes (see ``docs/backend.md``):

* Ray Serve's proxy receives the requests and routes each to a replica with few requests in
  flight; every answer carries the header ``X-Spine-Replica`` naming the replica (and its pid).
* ``max_ongoing_requests`` of a replica is its ``max_concurrent_jobs`` plus
  :data:`HEALTH_HEADROOM`, so ``/health`` and ``/models`` still reach a replica whose job slots
  are all taken; the job limit itself is enforced by the app inside each replica (503 busy). A
  burst may route two jobs to one replica while another is idle: the second is answered 503 busy
  and the client's retry (``HttpPredictor`` retries 503) is routed again.
* ``queue_wait_s`` is per replica: a waiting request is not moved to another replica that
  becomes free. Requests queue in the proxy only when every replica is at
  ``max_ongoing_requests``.
* ``/health`` describes the replica that answered (its jobs, its device), not the whole cluster.
* A replica whose models fail to load fails the deployment at start (``serve_ray`` raises)
  instead of answering 500 ``models_not_loaded``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from spine_core.config import Settings
from spine_core.errors import ClusterError, InputError
from spine_core.inference.ray_runtime import cluster_gpus, ray_connection, require_ray

log = logging.getLogger(__name__)

#: Ray Serve application name (one SpineReview backend per Ray cluster).
APP_NAME = "spinereview"
#: Requests beyond the job slots a replica accepts (``/health``, ``/models``, a 503 answer).
HEALTH_HEADROOM = 2
#: Header of every answer: which replica served it.
REPLICA_HEADER = "x-spine-replica"


@dataclass(frozen=True)
class RayServeOptions:
    """How the backend runs on Ray Serve (the limits are those of ``spine serve``, per replica).

    Attributes:
        replicas: number of replicas (each loads the models once).
        max_concurrent_jobs: jobs a replica runs at once.
        max_request_mb: largest request body in MiB.
        job_timeout_s: longest a job may run before the request is answered 504.
        queue_wait_s: how long a request may wait for a free slot of its replica before 503.
        gpus_per_replica: GPUs reserved per replica; None = 1 when the cluster has GPUs, else 0.
        cpus_per_replica: CPUs reserved per replica.
    """

    replicas: int = 1
    max_concurrent_jobs: int = 1
    max_request_mb: float = 1024.0
    job_timeout_s: float = 600.0
    queue_wait_s: float = 0.0
    gpus_per_replica: float | None = None
    cpus_per_replica: float = 1.0

    def check(self) -> None:
        """Raises InputError naming the first option out of range."""
        if self.replicas < 1:
            raise InputError(f"--replicas must be at least 1, got {self.replicas}")
        if self.max_concurrent_jobs < 1:
            raise InputError(f"max_concurrent_jobs must be at least 1, got {self.max_concurrent_jobs}")
        if self.max_request_mb <= 0 or self.job_timeout_s <= 0 or self.queue_wait_s < 0:
            raise InputError(
                "max_request_mb and job_timeout_s must be positive and queue_wait_s not negative"
            )
        if self.cpus_per_replica < 0 or (self.gpus_per_replica is not None and self.gpus_per_replica < 0):
            raise InputError("CPUs and GPUs per replica must not be negative")


class _ReplicaHeader:
    """ASGI middleware: adds ``X-Spine-Replica`` to every HTTP answer."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.value = replica.encode("latin-1", "replace")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.value)]
            await send(message)

        await self.app(scope, receive, send_with_header)


class SpineBackendReplica:
    """One replica: loads the models in its constructor, then serves :func:`create_app`'s app."""

    def __init__(self, settings: Settings, token: str, options: RayServeOptions) -> None:
        from ray import serve

        from spine_core.inference.select import load_local_predictor

        self.settings, self.token, self.options = settings, token, options
        context = serve.get_replica_context()
        self.replica = f"{context.replica_tag}/{os.getpid()}"
        started = time.perf_counter()
        self.predictor = load_local_predictor(replace(settings, backend_url=""))
        log.info("replica %s loaded %s on %s in %.1f s", self.replica, self.predictor.info().name,
                 getattr(self.predictor, "device", settings.device), time.perf_counter() - started)

    def __serve_build_asgi_app__(self) -> Any:
        from spine_core.inference.server import create_app

        options = self.options
        app = create_app(
            lambda device: self.predictor,
            token=self.token,
            max_concurrent_jobs=options.max_concurrent_jobs,
            max_request_mb=options.max_request_mb,
            job_timeout_s=options.job_timeout_s,
            queue_wait_s=options.queue_wait_s,
            device=self.settings.device,
            loaded=self.predictor,
            max_model_voxels=self.settings.max_model_voxels,
            max_image_side=self.settings.max_image_side,
        )
        return _ReplicaHeader(app, self.replica)


def build_app(settings: Settings, token: str, options: RayServeOptions, *, gpus: float | None = None) -> Any:
    """The Ray Serve application (bound deployment) of the backend; Ray must be connected.

    Args:
        settings: models folder and device of the replicas (``backend_url`` is ignored).
        token: bearer token of every request but ``/health``.
        options: replicas, limits and resources.
        gpus: GPUs in the cluster (default: asked from Ray) when ``options.gpus_per_replica`` is
            None.

    Raises:
        InputError: an empty token or an option out of range.
    """
    from ray import serve

    if not token:
        raise InputError(
            "the backend needs a token: set SPINE_BACKEND_TOKEN (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`) on the server and the app"
        )
    options.check()
    per_replica = options.gpus_per_replica
    if per_replica is None:
        per_replica = 1.0 if (cluster_gpus() if gpus is None else gpus) > 0 else 0.0
    actor_options: dict[str, Any] = {"num_cpus": options.cpus_per_replica, "num_gpus": per_replica}
    device = settings.device
    if per_replica == 0 and device == "auto":
        device = "cpu"  # a replica without a reserved GPU must not take one that Ray gave another
    # Options first, then the class: ray annotates deployment() as returning the decorator even
    # when given the class itself (at run time the two forms are the same call).
    deployment = serve.deployment(
        name="SpineBackend",
        num_replicas=options.replicas,
        max_ongoing_requests=options.max_concurrent_jobs + HEALTH_HEADROOM,
        ray_actor_options=actor_options,
    )(serve.ingress()(SpineBackendReplica))
    return deployment.bind(replace(settings, backend_url="", device=device), token, options)


def start(settings: Settings, token: str, options: RayServeOptions, *, host: str = "127.0.0.1",
          port: int = 8000) -> str:
    """Deploy the backend on the connected Ray cluster; return its URL once every replica is up.

    Raises:
        ClusterError: the deployment failed (e.g. a replica could not load the models).
        InputError: bad options or token.
    """
    from ray import serve

    app = build_app(settings, token, options)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except (RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"the Ray Serve deployment failed ({type(exc).__name__}: {exc}); see the replica "
            "logs under /tmp/ray/session_latest/logs/serve"
        ) from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def stop() -> None:
    """Remove the backend application and shut Ray Serve down on the connected cluster."""
    from ray import serve

    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - best effort: Serve is shut down whatever happened
        log.warning("could not delete the Ray Serve application: %s", exc)
    serve.shutdown()


def serve_ray(
    settings: Settings,
    options: RayServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
) -> None:
    """Run the backend on Ray Serve until interrupted (``spine serve --ray``).

    Joins the cluster at ``address`` (or starts a local Ray), deploys ``options.replicas``
    replicas, prints the URL, and on Ctrl-C or SIGTERM removes the application and shuts Serve
    down (and the local Ray, if it started one).
    """
    require_ray()
    stop_requested = threading.Event()
    with ray_connection(address) as cluster:
        print(f"Ray: {cluster}", flush=True)
        try:
            url = start(settings, settings.backend_token, options, host=host, port=port)
            print(f"SpineReview backend on Ray Serve at {url} ({options.replicas} replica(s)); "
                  "Ctrl-C stops it", flush=True)
            with _stop_on_signals(stop_requested):
                while not stop_requested.wait(1.0):
                    pass
            print("stopping the Ray Serve backend", flush=True)
        finally:
            stop()


@contextmanager
def _stop_on_signals(event: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``event`` (a clean stop: the app and a local Ray are removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        signal.signal(sig, lambda _signum, _frame: event.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
