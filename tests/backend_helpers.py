"""Real predictors and a real uvicorn server on loopback for the backend tests.

``BoneThresholdPredictor`` is a naive but real model: bone = voxels >= 200 HU, each connected bone
component is one vertebra, numbered C1, C2... from superior to inferior; its fracture probability
is the fraction of its voxels that are very dense (>= 700 HU).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import uvicorn
from scipy import ndimage

from spine_core.errors import InputError
from spine_core.inference.protocol import ModelInfo, PredictedBox, Progress, StudyPrediction
from spine_core.labels import level_name
from spine_core.volume import Volume

TOKEN = "s3cret-test-token"


class BoneThresholdPredictor:
    """Threshold bone segmenter implementing the Predictor protocol (see module docstring)."""

    def __init__(self, device: str = "cpu", threshold_hu: int = 200, dense_hu: int = 700) -> None:
        self.device = device
        self.threshold_hu = threshold_hu
        self.dense_hu = dense_hu

    def info(self) -> ModelInfo:
        return ModelInfo(
            "bone-threshold", "1.0", {"threshold_hu": self.threshold_hu, "dense_hu": self.dense_hu, "task": "test"}
        )

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        started = time.perf_counter()
        array = np.asarray(volume.array)
        bone = array >= self.threshold_hu
        if not bone.any():
            raise InputError(f"no voxel reaches {self.threshold_hu} HU; is this a CT in Hounsfield units?")
        components, count = ndimage.label(bone)
        index = list(range(1, count + 1))
        centres = ndimage.center_of_mass(bone, components, index)
        lps_z = [float(volume.index_to_lps(np.asarray(c))[2]) for c in centres]
        order = sorted(index, key=lambda i: -lps_z[i - 1])[:28]  # superior first
        lut = np.zeros(count + 1, dtype=np.uint8)
        for level, comp in enumerate(order, start=1):
            lut[comp] = level
        mask = lut[components]
        dense = ndimage.sum_labels(array >= self.dense_hu, components, index)
        sizes = ndimage.sum_labels(bone, components, index)
        probabilities: dict[str, float] = {}
        centroids: dict[str, tuple[float, float, float]] = {}
        boxes: list[PredictedBox] = []
        for level, comp in enumerate(order, start=1):
            name = level_name(level)
            probabilities[name] = float(dense[comp - 1] / sizes[comp - 1])
            xyz = volume.index_to_lps(np.asarray(centres[comp - 1]))
            centroids[name] = (float(xyz[0]), float(xyz[1]), float(xyz[2]))
            if probabilities[name] > 0.5:
                where = np.argwhere(components == comp)
                k = int(round(float(np.median(where[:, 0]))))
                rows = where[where[:, 0] == k]
                (y0, x0), (y1, x1) = rows[:, 1:].min(axis=0), rows[:, 1:].max(axis=0)
                boxes.append(PredictedBox(k, float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1),
                                          probabilities[name], name))
        return StudyPrediction(
            model=self.info(),
            mask=mask,
            level_probabilities=probabilities,
            patient_probability=max(probabilities.values()),
            boxes=boxes,
            centroids=centroids,
            timings={"threshold": time.perf_counter() - started},
            device=self.device,
        )


class GatedPredictor(BoneThresholdPredictor):
    """Waits for ``gate`` before predicting; counts the jobs that have started (for busy/timeout tests)."""

    def __init__(self, gate: threading.Event, device: str = "cpu") -> None:
        super().__init__(device)
        self.gate = gate
        self.started = 0
        self._lock = threading.Lock()

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        with self._lock:
            self.started += 1
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        return super().predict(volume, progress)


class CrashingPredictor(BoneThresholdPredictor):
    """A predictor with a bug."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        raise ZeroDivisionError("weights are all zero")


def spine_phantom(shape: tuple[int, int, int] = (40, 32, 32), levels: int = 4, seed: int = 0) -> Volume:
    """Small CT-like int16 volume: noisy soft tissue with ``levels`` separate bone blocks along a0.

    Block ``i`` has a dense core in the odd-numbered blocks so probabilities differ by level.
    Axial slices ascend towards Superior (a0 = S), rows towards P, columns towards L, 0.8 × 0.7 mm.
    """
    rng = np.random.default_rng(seed)
    array = rng.normal(30.0, 20.0, size=shape).astype(np.int16)
    step = shape[0] // levels
    for i in range(levels):
        a, b = i * step + 1, (i + 1) * step - 2
        array[a:b, 8:24, 10:22] = rng.normal(400.0, 30.0, size=(b - a, 16, 12)).astype(np.int16)
        if i % 2:
            array[a:b, 9:23, 11:21] = 900
    affine = np.array(
        [[0.0, 0.0, 0.7, -11.2], [0.0, 0.8, 0.0, -12.8], [2.5, 0.0, 0.0, 100.0], [0.0, 0.0, 0.0, 1.0]]
    )
    return Volume(array, affine, {"series_uid": "1.2.826.0.1.3680043.8.498.1"})


def free_port() -> int:
    """A loopback port that nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(app: Any, *, ready: Callable[[dict[str, Any]], bool] | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL.

    Waits until ``GET /health`` answers (and ``ready(health)`` holds, by default: not loading);
    shuts the server down and joins the thread on exit.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    check = ready or (lambda health: health.get("status") != "loading")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1).json()
                if check(health):
                    break
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"test server at {url} did not become ready")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds (raises after ``timeout_s``; synchronisation, not a timing assert)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def health(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/health", timeout=5).json())
