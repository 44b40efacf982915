"""HttpPredictor against a real backend on loopback; predictor selection from settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from spine_core.config import Settings
from spine_core.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    InputError,
)
from spine_core.inference import wire
from spine_core.inference.client import HttpPredictor, RetryPolicy
from spine_core.inference.monailabel import MonaiLabelPredictor
from spine_core.inference.protocol import Predictor
from spine_core.inference.select import LazyLocalPredictor, predictor_from_settings
from spine_core.inference.server import create_app
from spine_core.volume import Volume
from tests.backend_helpers import (
    TOKEN,
    BoneThresholdPredictor,
    CrashingPredictor,
    GatedPredictor,
    free_port,
    running_server,
    spine_phantom,
    wait_for,
)

FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.01, max_wait_s=0.05)


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, max_request_mb=0.25, device="cpu")
    with running_server(app) as url:
        yield url


def test_round_trip_gives_the_same_prediction_as_in_process(backend: str) -> None:
    volume = spine_phantom()
    expected = BoneThresholdPredictor("cpu").predict(volume)
    steps: list[str] = []
    with HttpPredictor(backend + "/", TOKEN) as predictor:
        assert isinstance(predictor, Predictor)
        got = predictor.predict(volume, progress=lambda fraction, text: steps.append(text))
        info = predictor.info()
    assert got.mask is not None and expected.mask is not None
    assert got.mask.dtype == np.uint8 and np.array_equal(got.mask, expected.mask)
    assert got.level_probabilities == expected.level_probabilities
    assert got.patient_probability == expected.patient_probability
    assert got.boxes == expected.boxes
    assert got.centroids == expected.centroids
    assert got.model == expected.model == info
    assert got.device == "cpu"
    assert "http_round_trip" in got.timings and "threshold" in got.timings
    assert steps[0] == "encoding the study" and steps[-1] == "done"


def test_round_trip_of_an_oblique_reoriented_volume_keeps_its_grid(backend: str) -> None:
    base = spine_phantom()
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    volume = Volume(np.ascontiguousarray(base.array[::-1]), rotation @ base.affine)
    with HttpPredictor(backend, TOKEN) as predictor:
        got = predictor.predict(volume)
    expected = BoneThresholdPredictor().predict(volume)
    assert np.array_equal(got.mask, expected.mask)  # type: ignore[arg-type]
    assert got.centroids == expected.centroids


def test_wrong_token_is_a_clear_backend_error(backend: str) -> None:
    with HttpPredictor(backend, "not-the-token") as predictor, pytest.raises(BackendError) as caught:
        predictor.predict(spine_phantom())
    assert "refused the token (HTTP 401" in str(caught.value)
    assert "SPINE_BACKEND_TOKEN" in str(caught.value)


def test_oversize_study_is_a_clear_backend_error(backend: str) -> None:
    noise = np.random.default_rng(2).integers(-1000, 2000, size=(40, 64, 64), dtype=np.int16)
    with HttpPredictor(backend, TOKEN) as predictor, pytest.raises(BackendError) as caught:
        predictor.predict(Volume(noise, spine_phantom().affine))
    assert "too large (HTTP 413" in str(caught.value)
    assert "--max-request-mb" in str(caught.value)


def test_unusable_volume_is_an_input_error(backend: str) -> None:
    blank = spine_phantom().with_array(np.full((40, 32, 32), -1000, dtype=np.int16))
    with HttpPredictor(backend, TOKEN) as predictor, pytest.raises(InputError) as caught:
        predictor.predict(blank)
    assert "no voxel reaches 200 HU" in str(caught.value)


def test_predictor_failure_is_a_backend_error_with_its_message() -> None:
    app = create_app(lambda device: CrashingPredictor(device), token=TOKEN)
    with running_server(app) as url, HttpPredictor(url, TOKEN, retry=FAST_RETRY) as predictor:
        with pytest.raises(BackendError) as caught:
            predictor.predict(spine_phantom())
    assert "failed (HTTP 500)" in str(caught.value)
    assert "weights are all zero" in str(caught.value)


def test_slow_backend_and_short_timeout_is_a_timeout_error() -> None:
    gate = threading.Event()
    app = create_app(lambda device: GatedPredictor(gate, device), token=TOKEN)
    with running_server(app) as url:
        try:
            with HttpPredictor(url, TOKEN, timeout_s=0.3) as predictor, pytest.raises(BackendTimeout) as caught:
                predictor.predict(spine_phantom())
        finally:
            gate.set()
    assert "did not answer within 0.3 s" in str(caught.value)
    assert "SPINE_BACKEND_TIMEOUT_S" in str(caught.value)


def test_busy_backend_is_retried_then_reported_busy() -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    app = create_app(lambda device: predictor, token=TOKEN, max_concurrent_jobs=1)
    steps: list[str] = []
    with running_server(app) as url:
        first = HttpPredictor(url, TOKEN)
        worker = threading.Thread(target=first.predict, args=(spine_phantom(),))
        worker.start()
        try:
            wait_for(lambda: predictor.started == 1, "the first job to start")
            with HttpPredictor(url, TOKEN, retry=FAST_RETRY) as second, pytest.raises(BackendBusy) as caught:
                second.predict(spine_phantom(), progress=lambda f, text: steps.append(text))
        finally:
            gate.set()
            worker.join(timeout=30)
            first.close()
    assert "is busy (HTTP 503" in str(caught.value)
    assert caught.value.retry_after_s == 2.0
    assert sum("retry 2/2" in s for s in steps) == 1  # retried once, then gave up
    assert predictor.started == 1  # the refused requests never reached the model


def test_unreachable_backend_is_retried_then_reported_with_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    steps: list[str] = []
    with HttpPredictor(url, TOKEN, retry=FAST_RETRY) as predictor, pytest.raises(BackendUnreachable) as caught:
        predictor.predict(spine_phantom(), progress=lambda f, text: steps.append(text))
    message = str(caught.value)
    assert message.startswith(f"backend at {url} is unreachable: ")
    assert "check SPINE_BACKEND_URL or unset it to run on this machine" in message
    assert sum("retry 2/2" in s for s in steps) == 1


def _lying_backend(shift_mm: float, crop: bool) -> FastAPI:
    """A server that answers a prediction on another grid than the volume it received."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        volume = wire.decode_volume(await request.body())
        prediction = BoneThresholdPredictor().predict(volume)
        affine = volume.affine.copy()
        affine[:3, 3] += shift_mm
        shape = volume.shape
        if crop:
            assert prediction.mask is not None
            prediction.mask = np.ascontiguousarray(prediction.mask[1:])
            shape = prediction.mask.shape  # type: ignore[assignment]
        return Response(wire.encode_prediction(prediction, affine, shape), media_type=wire.PREDICTION_MEDIA_TYPE)

    return app


@pytest.mark.parametrize(("shift_mm", "crop", "expected"), [(0.5, False, "another grid"),
                                                            (0.0, True, "is for shape")])
def test_a_prediction_on_another_grid_is_refused(shift_mm: float, crop: bool, expected: str) -> None:
    with running_server(_lying_backend(shift_mm, crop)) as url, HttpPredictor(url, TOKEN) as predictor:
        with pytest.raises(BackendError) as caught:
            predictor.predict(spine_phantom())
    assert "does not fit the study sent" in str(caught.value)
    assert expected in str(caught.value)


def test_retry_policy_bounds() -> None:
    policy = RetryPolicy(attempts=3, backoff_s=1.0, max_wait_s=3.0)
    assert [policy.wait_s(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert policy.wait_s(1, retry_after_s=2.5) == 2.5
    assert policy.wait_s(1, retry_after_s=60) == 3.0
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("url", "kind"),
    [("", LazyLocalPredictor), ("http://gpu-box:8000", HttpPredictor), ("https://gpu-box", HttpPredictor),
     ("monailabel+http://gpu-box:8000?model=segmentation_vertebra", MonaiLabelPredictor)],
)
def test_predictor_from_settings_picks_by_url(url: str, kind: type) -> None:
    predictor = predictor_from_settings(Settings(backend_url=url, backend_token=TOKEN))
    assert isinstance(predictor, kind)
    assert isinstance(predictor, Predictor)
    if isinstance(predictor, LazyLocalPredictor):
        assert not predictor.loaded  # nothing is loaded until it is used
    if isinstance(predictor, MonaiLabelPredictor):
        assert predictor.url == "http://gpu-box:8000"


def test_predictor_from_settings_refuses_other_schemes() -> None:
    with pytest.raises(InputError, match="SPINE_BACKEND_URL 'ftp://x'"):
        predictor_from_settings(Settings(backend_url="ftp://x"))


def test_http_predictor_from_settings_uses_token_and_timeouts(backend: str) -> None:
    settings = Settings(backend_url=backend, backend_token=TOKEN, backend_timeout_s=30)
    predictor = predictor_from_settings(settings)
    assert isinstance(predictor, HttpPredictor)
    with predictor:
        assert predictor.health()["status"] == "ready"
        assert predictor.info().name == "bone-threshold"  # the token from settings is accepted
        assert predictor._client.timeout.read == 30 and predictor._client.timeout.connect == 10


def test_round_trip_with_the_shipped_local_models() -> None:
    """The real LocalPredictor behind the real server gives what it gives in-process."""
    from spine_core.inference.loading import default_weights_dir
    from spine_core.inference.select import load_local_predictor

    if not default_weights_dir().is_dir():
        pytest.skip(f"no shipped weights at {default_weights_dir()} yet")
    settings = Settings(device="cpu")
    local = load_local_predictor(settings)
    volume = spine_phantom(shape=(48, 48, 48))
    expected = local.predict(volume)
    app = create_app(lambda device: load_local_predictor(Settings(device=device)), token=TOKEN, device="cpu")
    with running_server(app) as url, HttpPredictor(url, TOKEN) as remote:
        assert remote.info() == local.info()
        got = remote.predict(volume)
    assert got.device == "cpu"
    assert got.mask is not None and expected.mask is not None
    assert np.array_equal(got.mask, expected.mask)
    assert got.level_probabilities == expected.level_probabilities
    assert got.patient_probability == expected.patient_probability
    assert got.boxes == expected.boxes
