"""The backend server over real HTTP (uvicorn on loopback): auth, limits, concurrency, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from spine_core.errors import InputError, ModelLoadError
from spine_core.inference import wire
from spine_core.inference.server import create_app
from spine_core.volume import Volume
from tests.backend_helpers import (
    TOKEN,
    BoneThresholdPredictor,
    CrashingPredictor,
    GatedPredictor,
    free_port,
    health,
    running_server,
    spine_phantom,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.VOLUME_MEDIA_TYPE}


@pytest.fixture(scope="module")
def volume_body() -> bytes:
    return wire.encode_volume(spine_phantom())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, max_request_mb=0.25, device="cpu")
    with running_server(app) as url:
        yield url


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 10) -> httpx.Response:
    return httpx.post(f"{url}/predict", content=body, headers={**AUTH, **(headers or {})}, timeout=timeout)


def test_health_needs_no_token_and_reports_device_models_and_limits(server: str) -> None:
    response = httpx.get(f"{server}/health")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ready" and data["models_loaded"] is True
    assert data["device"] == "cpu"
    assert data["max_concurrent_jobs"] == 1 and data["max_request_mb"] == 0.25
    assert data["jobs_running"] == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_models_and_predict_refuse_missing_or_wrong_token(server: str, volume_body: bytes,
                                                          headers: dict[str, str]) -> None:
    models = httpx.get(f"{server}/models", headers=headers)
    assert models.status_code == 401
    assert models.headers["www-authenticate"] == "Bearer"
    assert models.json()["error"] == "unauthorised"
    predict = httpx.post(f"{server}/predict", content=volume_body, headers=headers)
    assert predict.status_code == 401


def test_models_answers_model_info_and_card(server: str) -> None:
    data = httpx.get(f"{server}/models", headers=AUTH).json()
    assert data["model"] == {"name": "bone-threshold", "version": "1.0",
                             "card": {"threshold_hu": 200, "dense_hu": 700, "task": "test"}}
    assert data["device"] == "cpu"


def test_predict_answers_the_in_process_prediction(server: str, volume_body: bytes) -> None:
    volume = spine_phantom()
    response = post(server, volume_body)
    assert response.status_code == 200
    assert response.headers["content-type"] == wire.PREDICTION_MEDIA_TYPE
    got = wire.decode_prediction(response.content, expect_shape=volume.shape, expect_affine=volume.affine)
    expected = BoneThresholdPredictor().predict(volume)
    assert got.mask is not None and expected.mask is not None
    assert np.array_equal(got.mask, expected.mask)
    assert got.level_probabilities == expected.level_probabilities
    assert got.boxes == expected.boxes and len(got.boxes) == 2


def test_oversize_body_with_content_length_is_refused_before_reading(server: str) -> None:
    big = np.random.default_rng(1).integers(-1000, 2000, size=(40, 64, 64), dtype=np.int16)
    body = wire.encode_volume(Volume(big, spine_phantom().affine))
    assert len(body) > 0.25 * 2**20
    response = post(server, body)
    assert response.status_code == 413
    assert "limit of 0.25 MiB" in response.json()["message"]


def test_oversize_streamed_body_without_content_length_is_refused(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 1 MiB in 16 KiB chunks, sent chunked (no Content-Length)
            yield b"\0" * 16384

    response = httpx.post(f"{server}/predict", content=chunks(), headers=AUTH, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.parametrize(("voxel_mm", "said"), [
    (125.0, "voxels of 125×125×125 mm are not a CT's"),
    (1e6, "voxels of 1e+06×1e+06×1e+06 mm are not a CT's"),
    (19.0, "the volume spans 152×2280×2280 mm, more than any CT the models take"),
])
def test_a_tiny_volume_with_huge_voxels_is_refused_before_resampling(server: str, voxel_mm: float,
                                                                      said: str) -> None:
    """A few KB that would resample to gigabytes: refused with a reason, the job slot free."""
    shape = (8, 120, 120) if voxel_mm == 19.0 else (8, 8, 8)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    body = wire.encode_volume(Volume(np.zeros(shape, dtype=np.int16), affine))
    response = post(server, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "bad_volume" and said in response.json()["message"]
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["jobs_running"] == 0


def test_a_body_of_another_media_type_is_415(server: str, volume_body: bytes) -> None:
    for media in ("application/json", None):
        headers = {"Authorization": AUTH["Authorization"]}
        if media:
            headers["Content-Type"] = media
        response = httpx.post(f"{server}/predict", content=volume_body, headers=headers, timeout=10)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_media"
        assert wire.VOLUME_MEDIA_TYPE in response.json()["message"]


def test_garbage_body_is_422_with_a_message(server: str) -> None:
    response = post(server, b"this is not a volume")
    assert response.status_code == 422
    assert response.json()["error"] == "bad_volume"
    assert "not a SpineReview volume payload" in response.json()["message"]


def test_predictor_input_error_is_422(server: str) -> None:
    blank = spine_phantom().with_array(np.zeros((40, 32, 32), dtype=np.int16))
    response = post(server, wire.encode_volume(blank))
    assert response.status_code == 422
    assert "no voxel reaches 200 HU" in response.json()["message"]


def test_predictor_crash_is_500_with_the_message(volume_body: bytes) -> None:
    app = create_app(lambda device: CrashingPredictor(device), token=TOKEN)
    with running_server(app) as url:
        response = post(url, volume_body)
    assert response.status_code == 500
    assert response.json()["error"] == "predictor_crashed"
    assert "ZeroDivisionError: weights are all zero" in response.json()["message"]


def test_busy_server_answers_503_with_retry_after_and_stays_responsive(volume_body: bytes) -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    app = create_app(lambda device: predictor, token=TOKEN, max_concurrent_jobs=1, queue_wait_s=0)
    with running_server(app) as url:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.setdefault("r", post(url, volume_body, timeout=30)))
        worker.start()
        try:
            wait_for(lambda: predictor.started == 1, "the first job to start")
            assert health(url)["jobs_running"] == 1  # the event loop answers while the job runs
            second = post(url, volume_body)
            assert second.status_code == 503
            assert second.headers["retry-after"] == "2"
            assert second.json()["error"] == "busy"
        finally:
            gate.set()
            worker.join(timeout=30)
        assert first["r"].status_code == 200
        assert predictor.started == 1
        assert health(url)["jobs_running"] == 0


def test_queue_mode_waits_for_a_free_slot(volume_body: bytes) -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    app = create_app(lambda device: predictor, token=TOKEN, max_concurrent_jobs=1, queue_wait_s=20)
    with running_server(app) as url:
        results: list[httpx.Response] = []
        workers = [threading.Thread(target=lambda: results.append(post(url, volume_body, timeout=30)))
                   for _ in range(2)]
        try:
            for w in workers:
                w.start()
            wait_for(lambda: health(url)["jobs_waiting"] == 1 and predictor.started == 1,
                     "one job running and one waiting")
        finally:
            gate.set()
            for w in workers:
                w.join(timeout=30)
    assert [r.status_code for r in results] == [200, 200]
    assert predictor.started == 2


def test_job_timeout_is_504_and_the_slot_stays_taken_until_the_model_returns(volume_body: bytes) -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    app = create_app(lambda device: predictor, token=TOKEN, max_concurrent_jobs=1, job_timeout_s=0.2)
    with running_server(app) as url:
        try:
            timed_out = post(url, volume_body)
            assert timed_out.status_code == 504
            assert "job timeout of 0.2 s" in timed_out.json()["message"]
            assert post(url, volume_body).status_code == 503  # the stuck job still holds the GPU slot
        finally:
            gate.set()
        wait_for(lambda: health(url)["jobs_running"] == 0, "the stuck job to finish")
        assert post(url, volume_body).status_code == 200


def test_models_load_once_in_the_background_and_predict_waits_for_them(volume_body: bytes) -> None:
    loaded = threading.Event()
    calls: list[str] = []

    def slow_factory(device: str) -> BoneThresholdPredictor:
        calls.append(device)
        loaded.wait(timeout=30)
        return BoneThresholdPredictor(device)

    app = create_app(slow_factory, token=TOKEN, device="cuda")
    with running_server(app, ready=lambda h: h["status"] == "loading") as url:
        try:
            assert health(url)["models_loaded"] is False
            response = post(url, volume_body)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.json()["error"] == "loading"
        finally:
            loaded.set()
        wait_for(lambda: health(url)["models_loaded"], "the models to load")
        assert health(url)["device"] == "cuda"
        assert post(url, volume_body).status_code == 200
        assert post(url, volume_body).status_code == 200
    assert calls == ["cuda"]


def test_failed_model_load_is_reported_by_health_and_predict(volume_body: bytes) -> None:
    def broken(device: str) -> BoneThresholdPredictor:
        raise ModelLoadError("weights file fracture.pt is missing")

    app = create_app(broken, token=TOKEN)
    with running_server(app) as url:
        data = health(url)
        response = post(url, volume_body)
    assert data["status"] == "failed" and data["models_loaded"] is False
    assert "fracture.pt is missing" in data["error"]
    assert response.status_code == 500
    assert "fracture.pt is missing" in response.json()["message"]


@pytest.mark.parametrize("kwargs", [{"token": ""}, {"token": TOKEN, "max_concurrent_jobs": 0},
                                    {"token": TOKEN, "max_request_mb": 0}])
def test_create_app_refuses_unsafe_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        create_app(lambda device: BoneThresholdPredictor(device), **kwargs)  # type: ignore[arg-type]


def test_serve_refuses_to_start_without_a_token() -> None:
    from spine_core.config import Settings
    from spine_core.inference.server import serve

    with pytest.raises(InputError, match="SPINE_BACKEND_TOKEN"):
        serve(Settings(backend_token=""), "127.0.0.1", free_port())


def test_serve_runs_uvicorn_and_reports_missing_weights_on_health(tmp_path: Path) -> None:
    """`serve()` in its own process: the server comes up and /health says why the models failed."""
    port = free_port()
    env = {**os.environ, "SPINE_BACKEND_TOKEN": TOKEN, "SPINE_MODELS_DIR": str(tmp_path), "SPINE_DEVICE": "cpu",
           "SPINE_DATA_DIR": str(tmp_path)}
    code = ("import sys; from spine_core.config import load_settings; from spine_core.inference.server import serve; "
            f"serve(load_settings(), '127.0.0.1', {port}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[3])
    url = f"http://127.0.0.1:{port}"
    try:
        def answered() -> bool:
            try:
                return health(url)["status"] != "loading"
            except httpx.TransportError:
                assert proc.poll() is None, "the server process exited"
                return False

        wait_for(answered, "the server process to answer /health", timeout_s=60)
        data = health(url)
        refused = httpx.get(f"{url}/models")
        models = httpx.get(f"{url}/models", headers=AUTH)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert data["status"] == "failed" and data["models_loaded"] is False
    assert "no segmentation model in" in data["error"] and str(tmp_path) in data["error"]
    assert refused.status_code == 401
    assert models.status_code == 500 and "fix the server and restart it" in models.json()["message"]
