"""The inference backend (``spine serve``): a small FastAPI app around any Predictor.

Endpoints (see ``docs/backend.md``):

* ``GET /health`` — no token: status (``loading``/``ready``/``failed``), device, whether the models
  are loaded, whether they predict radiographs (``radiograph_model``), running jobs and the
  server's limits.
* ``GET /models`` — bearer token: name, version and card of the model(s).
* ``POST /predict`` — bearer token: body is a volume payload (:mod:`spine_core.inference.wire`),
  answer a prediction payload on the same grid. A radiograph is sent as CT is: a one-slice volume
  whose ``meta["kind"]`` is ``"radiograph"`` (:func:`spine_core.io.radiograph.is_radiograph_volume`);
  the predictor picks its radiograph model for it exactly as in-process, and the answer is the
  film's labelled mask (one slice) and one box per vertebra with its label.

Behaviour:

* The models are loaded once, at start-up, in a worker thread (``predictor_factory(device)``);
  ``/health`` answers meanwhile and ``/predict`` answers 503 with ``Retry-After`` until they are
  ready, or 500 with the loading error if loading failed.
* At most ``max_concurrent_jobs`` jobs run at once. A request beyond the limit waits up to
  ``queue_wait_s`` for a free slot (0 = no waiting), then gets 503 with ``Retry-After``. The slot is
  taken before the body is read, so a busy server does not swallow large uploads it cannot serve.
* A radiograph is checked as a film, not as a CT (:func:`radiograph_problem`: one image, each side
  :data:`~spine_core.io.radiograph.MIN_SIDE` to ``max_image_side`` pixels, at most
  ``max_model_voxels`` pixels), so a film whose spacing is unknown (1 "mm" per pixel) is not
  refused for spanning more than a CT; a radiograph sent to a server whose models have no
  radiograph ensemble is answered 422 at once, before the job runs.
* Requests larger than ``max_request_mb`` get 413: at once when ``Content-Length`` says so, else as
  soon as the streamed body passes the limit.
* Inference runs in a thread pool, so the event loop keeps answering ``/health``. A job that runs
  longer than ``job_timeout_s`` is answered 504; its slot stays taken until the model actually
  returns (a Python thread cannot be killed), so the GPU is never over-committed.
* Errors are JSON ``{"error": code, "message": text}``: 401 (token), 413 (size), 415 (the body
  is not a volume of :data:`wire.VOLUME_MEDIA_TYPE`), 422 (unusable
  volume: bad payload or the predictor's :class:`~spine_core.errors.InputError`; code
  ``out_of_field`` for its :class:`~spine_core.errors.OutOfFieldError`, "cannot label this
  study: ..."), 500 (predictor
  failure, with its message), 503 (busy/loading), 504 (job timeout).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from spine_core.config import Settings
from spine_core.errors import DicomError, InputError, MaskError, OutOfFieldError, SpineError
from spine_core.inference import wire
from spine_core.inference.protocol import ModelInfo, Predictor
from spine_core.io.radiograph import MIN_SIDE, is_radiograph_volume
from spine_core.volume import Volume

log = logging.getLogger(__name__)

#: Builds the predictor once at start-up; receives the requested device ("auto", "cpu", "cuda"...).
PredictorFactory = Callable[[str], Predictor]

#: Seconds a busy or loading server asks clients to wait before retrying.
RETRY_AFTER_BUSY_S = 2
RETRY_AFTER_LOADING_S = 5

#: A decoded volume may be this many times larger than the compressed request limit.
MAX_INFLATION = 20


@dataclass
class _State:
    """What the running app knows; touched only from the event loop (and the loader's result)."""

    status: str = "loading"  # loading | ready | failed
    predictor: Predictor | None = None
    info: ModelInfo | None = None
    device: str = "cpu"
    error: str | None = None
    radiographs: bool | None = None  # whether the predictor has a radiograph model (None: loading)
    running: int = 0
    waiting: int = 0
    slots: asyncio.Semaphore | None = None
    executor: ThreadPoolExecutor | None = None
    load_task: asyncio.Task[None] | None = field(default=None, repr=False)


def create_app(
    predictor_factory: PredictorFactory,
    *,
    token: str,
    max_concurrent_jobs: int = 1,
    max_request_mb: float = 1024.0,
    job_timeout_s: float = 600.0,
    queue_wait_s: float = 0.0,
    device: str = "auto",
    loaded: Predictor | None = None,
    max_model_voxels: int = 64_000_000,
    max_image_side: int = 16384,
) -> FastAPI:
    """The backend app (serve it with uvicorn; :func:`serve` does).

    Args:
        predictor_factory: called once at start-up in a worker thread with ``device``; must return
            an object satisfying :class:`~spine_core.inference.protocol.Predictor`. The predictor
            decides which device it uses (e.g. CUDA when present for ``"auto"``).
        token: bearer token every request except ``/health`` must carry (compared in constant time).
        max_concurrent_jobs: inference jobs that may run at once (usually 1 per GPU).
        max_request_mb: largest request body in MiB (the compressed volume).
        job_timeout_s: longest a job may run before the request is answered 504.
        queue_wait_s: how long a request may wait for a free job slot before 503 (0 = none).
        device: passed to ``predictor_factory``.
        loaded: a predictor already loaded by the caller (e.g. by a Ray Serve replica before it
            takes traffic): the app is ready from its start and ``predictor_factory`` is not called.
        max_model_voxels: most voxels of the volume resampled to the models' grid
            (``Settings.max_model_voxels``); more is refused 422 before anything is resampled.
            A radiograph may have this many pixels.
        max_image_side: longest side of a radiograph, in pixels (``Settings.max_image_side``).

    Raises:
        InputError: an empty token or a limit out of range (the message says which).
    """
    if not token:
        raise InputError(
            "the backend needs a token: set SPINE_BACKEND_TOKEN (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`) on the server and the app"
        )
    if max_concurrent_jobs < 1:
        raise InputError(f"max_concurrent_jobs must be at least 1, got {max_concurrent_jobs}")
    if max_request_mb <= 0 or job_timeout_s <= 0 or queue_wait_s < 0:
        raise InputError("max_request_mb and job_timeout_s must be positive and queue_wait_s not negative")

    max_bytes = int(max_request_mb * 2**20)
    token_bytes = token.encode("utf-8")
    state = _State(device=device)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.slots = asyncio.Semaphore(max_concurrent_jobs)
        state.executor = ThreadPoolExecutor(max_workers=max_concurrent_jobs, thread_name_prefix="spine-infer")
        if loaded is not None:
            _set_ready(state, loaded, loaded.info(), device)
        else:
            state.load_task = asyncio.create_task(_load(predictor_factory, device, state))
        try:
            yield
        finally:
            if state.load_task is not None:
                state.load_task.cancel()
            state.executor.shutdown(wait=False, cancel_futures=True)
            close = getattr(state.predictor, "close", None)
            if callable(close):
                close()

    app = FastAPI(title="SpineReview inference backend", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.spine = state

    def authorised(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), token_bytes)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": state.status,
            "models_loaded": state.status == "ready",
            "device": state.device,
            "cuda_available": _cuda_available(),
            "error": state.error,
            "radiograph_model": state.radiographs,
            "jobs_running": state.running,
            "jobs_waiting": state.waiting,
            "max_concurrent_jobs": max_concurrent_jobs,
            "max_request_mb": max_request_mb,
            "job_timeout_s": job_timeout_s,
            "queue_wait_s": queue_wait_s,
            "wire_version": wire.WIRE_VERSION,
        }

    @app.get("/models")
    async def models(request: Request) -> Response:
        if not authorised(request):
            return _unauthorised()
        not_ready = _not_ready(state)
        if not_ready is not None:
            return not_ready
        assert state.info is not None
        return JSONResponse({"model": wire.model_info_to_json(state.info), "device": state.device})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        if not authorised(request):
            return _unauthorised()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return _too_large(int(declared), max_request_mb)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != wire.VOLUME_MEDIA_TYPE:
            return _error(415, "unsupported_media",
                          f"the body must be a volume of type {wire.VOLUME_MEDIA_TYPE} (got "
                          f"{media or 'no Content-Type'}); send it with spine_core.inference.client")
        not_ready = _not_ready(state)
        if not_ready is not None:
            return not_ready
        assert state.slots is not None
        assert state.predictor is not None  # status is "ready": _set_ready stored it
        state.waiting += 1
        try:
            got_slot = await _take_slot(state.slots, queue_wait_s)
        finally:
            state.waiting -= 1
        if not got_slot:
            return _error(
                503,
                "busy",
                f"all {max_concurrent_jobs} job slot(s) are taken; try again in a moment",
                headers={"Retry-After": str(RETRY_AFTER_BUSY_S)},
            )
        state.running += 1
        release_now = True
        try:
            body = await _read_limited(request, max_bytes)
            if body is None:
                return _too_large(None, max_request_mb)
            try:
                volume = await asyncio.to_thread(
                    wire.decode_volume, body, max_decoded_bytes=max_bytes * MAX_INFLATION
                )
            except InputError as exc:
                return _error(422, "bad_volume", str(exc))
            del body
            if is_radiograph_volume(volume):
                if not state.radiographs:
                    return _error(422, "no_radiograph_model", NO_RADIOGRAPH_MODEL)
                too_big = radiograph_problem(volume, max_image_side, max_model_voxels)
            else:
                too_big = implausible_extent(volume) or too_many_model_voxels(volume, max_model_voxels)
            if too_big is not None:
                return _error(422, "bad_volume", too_big)
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            job = loop.run_in_executor(state.executor, _run_job, state.predictor, volume)
            try:
                payload = await asyncio.wait_for(asyncio.shield(job), timeout=job_timeout_s)
            except TimeoutError:
                log.warning("job on %s timed out after %.0f s", volume.shape, job_timeout_s)
                return _error(
                    504,
                    "job_timeout",
                    f"inference took longer than the server's job timeout of {job_timeout_s:g} s; "
                    "the server may be overloaded, or start it with a longer --job-timeout-s",
                )
            finally:
                if not job.done():
                    release_now = False
                    job.add_done_callback(lambda _: _release(state))
            log.info("job on %s done in %.2f s", volume.shape, time.perf_counter() - started)
            return payload
        finally:
            if release_now:
                _release(state)

    return app


async def _load(factory: PredictorFactory, device: str, state: _State) -> None:
    """Build the predictor in a thread; record success or the error for /health."""
    started = time.perf_counter()
    try:
        predictor = await asyncio.to_thread(factory, device)
        if not isinstance(predictor, Predictor):
            raise TypeError(f"{type(predictor).__name__} has no info()/predict(); it is not a Predictor")
        info = await asyncio.to_thread(predictor.info)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure must reach /health, not kill the server
        state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("loading the models failed: %s", state.error, exc_info=not isinstance(exc, SpineError))
        return
    _set_ready(state, predictor, info, device)
    log.info("models %s %s loaded on %s in %.1f s", info.name, info.version, state.device,
             time.perf_counter() - started)


def _set_ready(state: _State, predictor: Predictor, info: ModelInfo, device: str) -> None:
    state.predictor, state.info = predictor, info
    state.device = str(getattr(predictor, "device", device))
    state.radiographs = predicts_radiographs(predictor)
    state.status = "ready"


NO_RADIOGRAPH_MODEL = ("this backend's models have no radiograph ensemble, so it cannot predict "
                       "radiographs: run `spine train --modality xray` into the server's models "
                       "folder (SPINE_MODELS_DIR) and restart it, or unset SPINE_BACKEND_URL to "
                       "predict the film on this machine")


def predicts_radiographs(predictor: object) -> bool:
    """Whether ``predictor`` says it predicts radiographs (its ``predicts_radiographs``
    attribute, as :class:`~spine_core.inference.local.LocalPredictor` has; absent: no)."""
    return bool(getattr(predictor, "predicts_radiographs", False))


def radiograph_problem(volume: Any, max_side: int, max_pixels: int) -> str | None:
    """Why a radiograph volume cannot be predicted (not one image, a side under
    :data:`~spine_core.io.radiograph.MIN_SIDE` or over ``max_side`` pixels, more than
    ``max_pixels`` pixels), or None. A film's extent is not a CT's: its spacing may be unknown
    (1 per pixel), so only its pixels are bounded; from the header, before the model runs."""
    slices, rows, cols = (int(n) for n in volume.shape)
    if slices != 1:
        return (f"a radiograph is one image, this one has {slices} slices; send each film as its "
                "own one-slice volume")
    if min(rows, cols) < MIN_SIDE:
        return (f"the radiograph is {rows}×{cols} pixels, too small to find vertebrae on (at "
                f"least {MIN_SIDE}×{MIN_SIDE})")
    if max(rows, cols) > max_side:
        return (f"the radiograph is {rows}×{cols} pixels, more than the server's {max_side} per "
                "side (SPINE_MAX_IMAGE_SIDE); downsample the film or raise the limit")
    if rows * cols > max_pixels:
        return (f"the radiograph has {rows * cols:,} pixels, more than the server's limit of "
                f"{max_pixels:,} (SPINE_MAX_MODEL_VOXELS); downsample the film or raise the limit")
    return None


#: Error code of a 422 for a study outside the models' field (:mod:`spine_core.inference.field`).
OUT_OF_FIELD = "out_of_field"


def _run_job(predictor: Predictor, volume: Volume) -> Response:
    """Run one prediction (worker thread) and encode the answer; errors become JSON responses."""
    try:
        prediction = predictor.predict(volume)
        body = wire.encode_prediction(prediction, volume.affine, volume.shape)
    except OutOfFieldError as exc:  # "cannot label this study: ..." (the client raises it again)
        return _error(422, OUT_OF_FIELD, str(exc))
    except (InputError, DicomError) as exc:
        return _error(422, "bad_volume", str(exc))
    except MaskError as exc:
        return _error(500, "bad_prediction", str(exc))
    except SpineError as exc:
        return _error(500, "predictor_failed", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a model bug must answer a message, not drop the socket
        log.exception("the predictor crashed on a volume of shape %s", volume.shape)
        return _error(500, "predictor_crashed", f"the predictor crashed: {type(exc).__name__}: {exc}")
    return Response(body, media_type=wire.PREDICTION_MEDIA_TYPE)


async def _take_slot(slots: asyncio.Semaphore, wait_s: float) -> bool:
    if wait_s <= 0:
        if slots.locked():
            return False
        await slots.acquire()
        return True
    try:
        await asyncio.wait_for(slots.acquire(), timeout=wait_s)
    except TimeoutError:
        return False
    return True


def _release(state: _State) -> None:
    state.running -= 1
    assert state.slots is not None
    state.slots.release()


#: Longest axis a CT may span (a whole body is about 1.8 m), in mm.
MAX_EXTENT_MM = 2000.0
#: Largest field of view, in mm³ (2 m × 0.6 m × 0.6 m); the models resample to about 2.5 mm voxels,
#: so this bounds their working grid (about 46 million voxels) whatever the voxel count sent.
MAX_VOLUME_MM3 = 2000.0 * 600.0 * 600.0
#: Plausible CT voxel sizes, in mm.
VOXEL_MM = (0.05, 20.0)


def implausible_extent(volume: Any) -> str | None:
    """Why the volume cannot be a CT the models should resample (voxel sizes outside
    :data:`VOXEL_MM`, an axis longer than :data:`MAX_EXTENT_MM`, a field of view above
    :data:`MAX_VOLUME_MM3`), or None. Checked before any resampling allocates."""
    spacing = [float(v) for v in volume.spacing]
    extent = [n * s for n, s in zip(volume.shape, spacing)]
    sizes = "×".join(f"{s:g}" for s in spacing)
    spans = "×".join(f"{e:.0f}" for e in extent)
    lo, hi = VOXEL_MM
    if not all(lo <= s <= hi for s in spacing):
        return (f"voxels of {sizes} mm are not a CT's (each side {lo:g}–{hi:g} mm); check the "
                "spacing in the image header")
    if max(extent) > MAX_EXTENT_MM or extent[0] * extent[1] * extent[2] > MAX_VOLUME_MM3:
        return (f"the volume spans {spans} mm, more than any CT the models take (at most "
                f"{MAX_EXTENT_MM:.0f} mm along an axis and 2000×600×600 mm in all); check the "
                "spacing in the image header or crop the volume")
    return None


#: Voxel size of the segmentation model's working grid (mm), the finest grid a volume is resampled to.
MODEL_GRID_MM = 2.5


def too_many_model_voxels(volume: Any, max_voxels: int, grid_mm: float = MODEL_GRID_MM) -> str | None:
    """Why the volume would need too large a working grid once resampled to ``grid_mm`` voxels
    (more than ``max_voxels``, or than it holds itself), or None; computed from the header only."""
    sizes = [max(1, round(n * float(s) / grid_mm)) for n, s in zip(volume.shape, volume.spacing)]
    voxels = max(math.prod(sizes), math.prod(volume.shape))
    if voxels > max_voxels:
        return (f"the volume needs {voxels:,} voxels on the models' {grid_mm:g} mm grid, more than "
                f"the server's limit of {max_voxels:,} (SPINE_MAX_MODEL_VOXELS); crop the volume "
                "or raise the limit on the server")
    return None


async def _read_limited(request: Request, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``max_bytes`` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _not_ready(state: _State) -> Response | None:
    if state.status == "loading":
        return _error(503, "loading", "the models are still loading; try again shortly",
                      headers={"Retry-After": str(RETRY_AFTER_LOADING_S)})
    if state.status == "failed":
        return _error(500, "models_not_loaded",
                      f"the models failed to load ({state.error}); fix the server and restart it")
    return None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _unauthorised() -> JSONResponse:
    return _error(401, "unauthorised", "missing or wrong bearer token",
                  headers={"WWW-Authenticate": "Bearer"})


def _too_large(size: int | None, limit_mb: float) -> JSONResponse:
    got = "the body" if size is None else f"{size / 2**20:.1f} MiB"
    return _error(413, "too_large", f"{got} exceeds the server's limit of {limit_mb:g} MiB per request")


def _cuda_available() -> bool | None:
    """Whether torch sees a GPU; None when torch was not loaded by the predictor."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a health probe: a broken CUDA set-up means no GPU
        return False


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_concurrent_jobs: int = 1,
    max_request_mb: float = 1024.0,
    job_timeout_s: float | None = None,
    queue_wait_s: float = 0.0,
    log_level: str = "info",
) -> None:
    """Run the backend with uvicorn until interrupted (the ``spine serve`` command).

    The models are the local ones (:func:`spine_core.inference.select.load_local_predictor`) on
    ``settings.device``; ``settings.backend_token`` is the token; ``job_timeout_s`` defaults to
    ``settings.backend_timeout_s`` so server and clients agree when they share settings.
    """
    import uvicorn

    from spine_core.inference.select import load_local_predictor

    local = replace(settings, backend_url="")

    def factory(device: str) -> Predictor:
        return load_local_predictor(replace(local, device=device))

    app = create_app(
        factory,
        token=settings.backend_token,
        max_concurrent_jobs=max_concurrent_jobs,
        max_request_mb=max_request_mb,
        job_timeout_s=job_timeout_s if job_timeout_s is not None else settings.backend_timeout_s,
        queue_wait_s=queue_wait_s,
        device=settings.device,
        max_model_voxels=settings.max_model_voxels,
        max_image_side=settings.max_image_side,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
