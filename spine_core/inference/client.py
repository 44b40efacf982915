"""`HttpPredictor`: the :class:`~spine_core.inference.protocol.Predictor` that runs on our backend.

The app sends the study to ``POST /predict`` of a ``spine serve`` server (see
:mod:`spine_core.inference.server`, ``docs/backend.md``) and gets the prediction back on the same
grid. Every failure becomes one :class:`~spine_core.errors.BackendError` (or a subclass) whose
message says what went wrong and what to do; a bad input volume (HTTP 422) becomes an
:class:`~spine_core.errors.InputError` (an :class:`~spine_core.errors.OutOfFieldError` with the
server's "cannot label this study: ..." for a study outside the models' field). Retryable
failures (unreachable, 503 busy) are retried a few times with backoff; timeouts and errors are
not, since the job may still be running.

:func:`send` and :class:`RetryPolicy` are shared with the MONAI Label client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from spine_core.config import Settings
from spine_core.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    InputError,
    MaskError,
    OutOfFieldError,
)
from spine_core.inference import wire
from spine_core.inference.protocol import ModelInfo, StudyPrediction
from spine_core.progress import Progress
from spine_core.volume import Volume

#: Longest wait for a TCP/TLS connection, whatever the read timeout is.
MAX_CONNECT_TIMEOUT_S = 10.0

#: A prediction may decode to the uint8 mask plus this much (affine, JSON of boxes and card).
MAX_ANSWER_EXTRA_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RetryPolicy:
    """How often to retry a retryable failure (backend unreachable, HTTP 503 busy).

    Attributes:
        attempts: total number of tries (1 = no retry).
        backoff_s: wait before the second try; doubles each time.
        max_wait_s: cap on one wait, also on the server's ``Retry-After``.
    """

    attempts: int = 3
    backoff_s: float = 1.0
    max_wait_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 10:
            raise ValueError(f"retry attempts must be 1..10, got {self.attempts}")
        if self.backoff_s < 0 or self.max_wait_s < 0:
            raise ValueError("retry waits must not be negative")

    def wait_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        wait = self.backoff_s * 2 ** (attempt - 1)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return min(wait, self.max_wait_s)


NO_RETRY = RetryPolicy(attempts=1)


def backend_timeout(timeout_s: float) -> httpx.Timeout:
    """Read/write/pool timeout ``timeout_s``; connect timeout at most :data:`MAX_CONNECT_TIMEOUT_S`."""
    if timeout_s <= 0:
        raise ValueError(f"backend timeout must be positive, got {timeout_s}")
    return httpx.Timeout(timeout_s, connect=min(MAX_CONNECT_TIMEOUT_S, timeout_s))


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    service: str,
    retry: RetryPolicy = NO_RETRY,
    on_retry: Callable[[int, float, BackendError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request, retrying retryable failures; return a 2xx response or raise.

    Args:
        client: the httpx client (auth headers, timeouts).
        method, url: the request; ``kwargs`` go to :meth:`httpx.Client.request`.
        service: how messages name the server, e.g. ``"backend at http://gpu:8000"``.
        retry: how often to retry :class:`BackendUnreachable` and :class:`BackendBusy`.
        on_retry: told (failed attempt, wait in s, error) before each wait.

    Raises:
        BackendUnreachable, BackendBusy, BackendTimeout, BackendError, InputError (HTTP 422).
    """
    attempt = 1
    while True:
        try:
            response = client.request(method, url, **kwargs)
            error = _status_error(response, service)
        except httpx.ConnectError as exc:
            error = BackendUnreachable(
                f"{service} is unreachable: {exc or type(exc).__name__}; check SPINE_BACKEND_URL "
                "or unset it to run on this machine"
            )
        except httpx.ConnectTimeout as exc:
            error = BackendUnreachable(
                f"{service} is unreachable: no connection within {_timeout_of(client, 'connect')} s "
                f"({exc or 'connect timeout'}); check SPINE_BACKEND_URL or unset it to run on this machine"
            )
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"{service} did not answer within {_timeout_of(client, 'read')} s "
                f"({type(exc).__name__}); the study may be large or the backend busy: raise "
                "SPINE_BACKEND_TIMEOUT_S or try again later"
            ) from exc
        except httpx.TransportError as exc:
            raise BackendError(
                f"the connection to {service} broke ({type(exc).__name__}: {exc}); try again, and "
                "check the backend's log if it keeps happening"
            ) from exc
        if error is None:
            return response
        if not isinstance(error, (BackendUnreachable, BackendBusy)) or attempt >= retry.attempts:
            raise error
        wait = retry.wait_s(attempt, error.retry_after_s if isinstance(error, BackendBusy) else None)
        if on_retry is not None:
            on_retry(attempt, wait, error)
        sleep(wait)
        attempt += 1


def _status_error(response: httpx.Response, service: str) -> Exception | None:
    """The error an HTTP status stands for, or None for a success."""
    code = response.status_code
    if code < 400:
        return None
    message = error_message(response)
    if code in (401, 403):
        return BackendError(
            f"{service} refused the token (HTTP {code}: {message}); set SPINE_BACKEND_TOKEN to the "
            "token the backend was started with"
        )
    if code == 413:
        return BackendError(
            f"{service} refused the study as too large (HTTP 413: {message}); raise the server's "
            "request limit (spine serve --max-request-mb) or unset SPINE_BACKEND_URL to run on this machine"
        )
    if code == 422:
        if _error_code(response) == "out_of_field":  # the models' own words: "cannot label this study: ..."
            return OutOfFieldError(message)
        return InputError(f"{service} cannot use this volume: {message}")
    if code == 503:
        busy = BackendBusy(f"{service} is busy (HTTP 503: {message}); try again in a moment")
        busy.retry_after_s = _retry_after(response)
        return busy
    if code == 504:
        return BackendTimeout(
            f"{service} gave up on the job (HTTP 504: {message}); the server's job timeout is too "
            "short for this study or the GPU is overloaded"
        )
    if code == 404:
        return BackendError(
            f"{service} has no {response.request.url.path} (HTTP 404: {message}); check that "
            "SPINE_BACKEND_URL points at the right server"
        )
    if code >= 500:
        return BackendError(f"{service} failed (HTTP {code}): {message}; see the backend's log")
    return BackendError(f"{service} refused the request (HTTP {code}): {message}")


def error_message(response: httpx.Response) -> str:
    """The server's own words: JSON ``message``/``detail`` or the start of the body text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    text = response.text.strip() if response.content else ""
    return text[:300] or response.reason_phrase or "no message"


def _error_code(response: httpx.Response) -> str | None:
    """The ``error`` code of a JSON error body, if it has one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return str(data["error"]) if isinstance(data, dict) and data.get("error") else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date or nothing: use our own backoff


def _timeout_of(client: httpx.Client, which: str) -> str:
    value = getattr(client.timeout, which, None)
    return "?" if value is None else f"{value:g}"


class HttpPredictor:
    """A predictor that runs on a ``spine serve`` backend over HTTP(S).

    Args:
        url: base URL of the backend, e.g. ``http://gpu-box:8000``.
        token: bearer token the backend was started with.
        timeout_s: read/write timeout of one request (connect timeout at most 10 s).
        retry: retries for unreachable/busy backends.
        compress_level: zlib level for the uploaded volume (0 = none, fastest on a fast LAN).
        transport: an httpx transport (tests or custom TLS); None = the default.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        compress_level: int = 1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise InputError(f"backend URL '{url}' must start with http:// or https://")
        self.url = base
        self.retry = retry
        self.compress_level = compress_level
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(headers=headers, timeout=backend_timeout(timeout_s), transport=transport)
        self._service = f"backend at {base}"
        self._info: ModelInfo | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> HttpPredictor:
        """From ``SPINE_BACKEND_URL``, ``SPINE_BACKEND_TOKEN`` and ``SPINE_BACKEND_TIMEOUT_S``."""
        return cls(
            settings.backend_url, settings.backend_token, timeout_s=settings.backend_timeout_s, **kwargs
        )

    def health(self) -> dict[str, Any]:
        """``GET /health``: status, device, whether models are loaded, the server's limits."""
        response = send(self._client, "GET", f"{self.url}/health", service=self._service, retry=self.retry)
        return dict(response.json())

    def info(self) -> ModelInfo:
        """``GET /models``: the model(s) the backend runs (cached after the first call)."""
        if self._info is None:
            response = send(
                self._client, "GET", f"{self.url}/models", service=self._service, retry=self.retry
            )
            try:
                self._info = wire.model_info_from_json(response.json()["model"])
            except (ValueError, KeyError, TypeError, InputError) as exc:
                raise BackendError(
                    f"{self._service} answered /models with something else than model info ({exc}); "
                    "is SPINE_BACKEND_URL a SpineReview backend?"
                ) from exc
        return self._info

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        """Send the volume, wait for the prediction, check it lies on the volume's grid.

        Raises:
            BackendError (or a subclass) when the backend fails or answers a mismatching
            prediction; InputError when the backend refuses the volume (HTTP 422).
        """
        report = progress or (lambda fraction, text: None)
        started = time.perf_counter()
        report(0.0, "encoding the study")
        body = wire.encode_volume(volume, compress_level=self.compress_level)
        report(0.1, f"sending {len(body) / 2**20:.1f} MB to the {self._service}")

        def on_retry(attempt: int, wait: float, error: BackendError) -> None:
            report(0.1, f"{error} (retry {attempt + 1}/{self.retry.attempts} in {wait:.0f} s)")

        response = send(
            self._client,
            "POST",
            f"{self.url}/predict",
            service=self._service,
            retry=self.retry,
            on_retry=on_retry,
            content=body,
            headers={"Content-Type": wire.VOLUME_MEDIA_TYPE, "Accept": wire.PREDICTION_MEDIA_TYPE},
        )
        report(0.9, "checking the answer")
        try:
            prediction = wire.decode_prediction(
                response.content,
                expect_shape=volume.shape,
                expect_affine=volume.affine,
                max_decoded_bytes=int(np.prod(volume.shape)) + MAX_ANSWER_EXTRA_BYTES,
            )
        except (InputError, MaskError) as exc:
            raise BackendError(
                f"{self._service} answered a prediction that does not fit the study sent: {exc}; "
                "nothing was kept. Are the app and the backend the same SpineReview version?"
            ) from exc
        prediction.timings["http_round_trip"] = time.perf_counter() - started
        report(1.0, "done")
        return prediction

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
