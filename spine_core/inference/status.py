"""Where the models run and whether they can run now: one line for the pages and the CLI.

* Local (``SPINE_BACKEND_URL`` empty): the device this process would use (CUDA when available for
  ``device=auto``) and whether the weights folder is there. Nothing is loaded.
* Remote (``http(s)://``): ``GET /health`` of the ``spine serve`` backend, without retries.
* MONAI Label (``monailabel+http(s)://``): ``GET /info/`` of the server, without retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spine_core.config import Settings
from spine_core.errors import SpineError
from spine_core.inference.select import MONAILABEL_SCHEMES

#: Seconds a health check may take (the page must stay responsive when a backend is down).
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BackendStatus:
    """``kind``: local | remote | monailabel; ``where``: "this process" or the URL; ``ok``: the
    models can be asked now; ``summary``: one line saying so (or what is wrong and what to do)."""

    kind: str
    where: str
    ok: bool
    summary: str


def backend_status(settings: Settings, *, timeout_s: float = HEALTH_TIMEOUT_S) -> BackendStatus:
    """The status of the backend ``settings`` select (see the module docstring)."""
    url = settings.backend_url.strip()
    if not url:
        return _local_status(settings)
    if url.lower().startswith(MONAILABEL_SCHEMES):
        return _monailabel_status(settings, timeout_s)
    if url.lower().startswith(("http://", "https://")):
        return _remote_status(settings, timeout_s)
    return BackendStatus(
        "unknown", url, False,
        f"SPINE_BACKEND_URL '{url}' is not an http(s):// or monailabel+http(s):// URL",
    )


def _weights_dir(settings: Settings) -> Path:
    if settings.models_dir is not None:
        return Path(settings.models_dir)
    try:
        from spine_core.inference.loading import default_weights_dir
    except ImportError:  # the local model code is not installed: its usual place
        return Path(__file__).resolve().parent / "weights"
    return default_weights_dir()


def _local_status(settings: Settings) -> BackendStatus:
    try:
        import torch
    except ModuleNotFoundError:
        return BackendStatus("local", "this process", False,
                             "models run in this process, but PyTorch is not installed; install it "
                             "or set SPINE_BACKEND_URL to a backend")
    cuda = bool(torch.cuda.is_available())
    wanted = settings.device.strip().lower() or "auto"
    if wanted == "auto":
        device = f"GPU ({torch.cuda.get_device_name(0)})" if cuda else "CPU (no CUDA GPU found)"
    elif wanted.startswith("cuda") and not cuda:
        return BackendStatus("local", "this process", False,
                             f"SPINE_DEVICE={settings.device} but CUDA is not available here; use "
                             "auto or cpu, or a GPU backend")
    else:
        device = "GPU" if wanted.startswith("cuda") else "CPU"
    weights = _weights_dir(settings)
    has_weights = weights.is_dir() and any(weights.iterdir())
    where = f"weights in {weights}" if has_weights else f"no weights in {weights}"
    summary = f"models run in this process on {device}; {where}"
    if not has_weights:
        summary += " (set SPINE_MODELS_DIR or SPINE_BACKEND_URL)"
    return BackendStatus("local", "this process", has_weights, summary)


def _remote_status(settings: Settings, timeout_s: float) -> BackendStatus:
    from spine_core.inference.client import NO_RETRY, HttpPredictor

    url = settings.backend_url.strip().rstrip("/")
    try:
        client = HttpPredictor(url, settings.backend_token, timeout_s=timeout_s, retry=NO_RETRY)
        with client:
            health = client.health()
    except SpineError as exc:
        return BackendStatus("remote", url, False, str(exc))
    state = str(health.get("status", "?"))
    parts = [f"backend at {url}: {state}", f"device {health.get('device', '?')}"]
    if health.get("cuda_available"):
        parts.append("CUDA available")
    if health.get("radiograph_model") is not None:
        parts.append("predicts radiographs" if health["radiograph_model"]
                     else "no radiograph model")
    running, waiting = health.get("jobs_running", 0), health.get("jobs_waiting", 0)
    parts.append(f"{running} job(s) running, {waiting} waiting")
    if health.get("error"):
        parts.append(f"error: {health['error']}")
    return BackendStatus("remote", url, state == "ready", ", ".join(parts))


def _monailabel_status(settings: Settings, timeout_s: float) -> BackendStatus:
    from spine_core.inference.client import NO_RETRY
    from spine_core.inference.monailabel import MonaiLabelPredictor, split_monailabel_url

    base, model = split_monailabel_url(settings.backend_url)
    try:
        with MonaiLabelPredictor(base, model, settings.backend_token, timeout_s=timeout_s,
                                 retry=NO_RETRY) as client:
            info = client.server_info()
            models = sorted(client.models())
    except SpineError as exc:
        return BackendStatus("monailabel", settings.backend_url, False, str(exc))
    name = info.get("name") or "MONAI Label"
    return BackendStatus("monailabel", client.url, bool(models),
                         f"{name} at {client.url}: models {', '.join(models) or 'none'}")
