"""``SPINE_MAX_MODEL_VOXELS`` over real HTTP: the real ``spine serve`` command (its own process, the
shipped demo models on CPU) on loopback.

A few KB whose voxels are large would need a working grid of tens of millions of voxels once
resampled to the models' 2.5 mm; the server must answer 422 with the reason at once, before it
allocates anything of that size: the server process's peak resident memory (``VmHWM``) must not
grow by more than a fraction of what the grid would take. A body of another media type is 415 with
its reason on the same server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from spine_core.inference import wire
from spine_core.volume import Volume
from tests.backend_helpers import TOKEN, free_port, spine_phantom, wait_for

LIMIT = 1_000_000
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.VOLUME_MEDIA_TYPE}

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads the server's peak memory from /proc")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.proc = url, proc

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", content=body, headers={**AUTH, **(headers or {})},
                          timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "SPINE_BACKEND_TOKEN": TOKEN, "SPINE_DEVICE": "cpu",
           "SPINE_DATA_DIR": str(root), "SPINE_MAX_MODEL_VOXELS": str(LIMIT)}
    env.pop("SPINE_MODELS_DIR", None)  # the demo weights shipped in the package
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-m", "spine_cli.main", "serve", "--port", str(port),
                             "--max-request-mb", "4"],
                            env={**env, "PYTHONPATH": str(repo)}, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"spine serve exited with {proc.returncode}"
        try:
            state = httpx.get(f"{url}/health", timeout=5).json()
        except httpx.TransportError:
            return False
        assert state["status"] != "failed", state
        return bool(state["status"] == "ready")

    try:
        wait_for(ready, "spine serve to load its models", timeout_s=120)
        yield Server(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_small_volume_whose_model_grid_passes_the_limit_is_refused_at_once(server: Server) -> None:
    # 16×160×160 voxels of 11 mm (800 KB of int16): 176×1760×1760 mm, a plausible extent, but
    # 70×704×704 = 34.7 million voxels on the 2.5 mm grid (139 MB as float32)
    volume = Volume(np.zeros((16, 160, 160), dtype=np.int16), np.diag([11.0, 11.0, 11.0, 1.0]))
    body = wire.encode_volume(volume)
    assert len(body) < 1_000_000
    peak_before = _peak_rss_kib(server.proc.pid)
    started = time.perf_counter()
    response = server.post(body)
    took = time.perf_counter() - started
    peak_after = _peak_rss_kib(server.proc.pid)
    assert response.status_code == 422, response.text
    said = response.json()
    assert said["error"] == "bad_volume"
    assert said["message"] == (
        "the volume needs 34,693,120 voxels on the models' 2.5 mm grid, more than the server's "
        f"limit of {LIMIT:,} (SPINE_MAX_MODEL_VOXELS); crop the volume or raise the limit on the "
        "server")
    assert took < 5, f"answered after {took:.1f} s"
    grew_mib = (peak_after - peak_before) / 1024
    assert grew_mib < 32, f"the server's peak memory grew by {grew_mib:.0f} MiB"
    state = httpx.get(f"{server.url}/health", timeout=5).json()
    assert state["jobs_running"] == 0 and state["status"] == "ready"


def test_a_volume_within_the_limit_reaches_the_models(server: Server) -> None:
    """The same server predicts what fits: the limit is the reason above, not a closed door."""
    response = server.post(wire.encode_volume(spine_phantom()))
    assert response.status_code == 200 or (
        response.status_code == 422 and "SPINE_MAX_MODEL_VOXELS" not in response.text), response.text


@pytest.mark.parametrize("media", ["application/json", "text/plain", None])
def test_a_body_of_another_media_type_is_415_with_its_reason(server: Server, media: str | None) -> None:
    headers = {"Authorization": AUTH["Authorization"]}
    if media is not None:
        headers["Content-Type"] = media
    body = wire.encode_volume(spine_phantom())
    response = httpx.post(f"{server.url}/predict", content=body, headers=headers, timeout=30)
    assert response.status_code == 415, response.text
    said = response.json()
    assert said["error"] == "unsupported_media"
    assert said["message"] == (
        f"the body must be a volume of type {wire.VOLUME_MEDIA_TYPE} (got "
        f"{media or 'no Content-Type'}); send it with spine_core.inference.client")
