"""One study predicted in a background thread, with the predictor's progress, for the pages.

A page starts a :class:`StudyPredictionRun` and keeps drawing while it runs: the run reports the
predictor's progress callback into a :class:`RunSnapshot` that any thread may read, and ends with
the stored prediction's id or with the error, classified by :func:`failure_kind` so the page can
say what went wrong (unreachable, busy, too slow...) and offer a retry. The storing itself is
:func:`db.predictions.predict_study`: a failed run stores nothing.

:data:`RUNS` holds the runs of this process by (database, study): a second user asking for the
same study while it runs sees that run instead of starting another one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field, replace

from db.predictions import predict_study
from db.workspace import Workspace
from spine_core.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    ConflictError,
    InputError,
    ModelLoadError,
    PredictionError,
    SpineError,
)
from spine_core.inference.protocol import Predictor

log = logging.getLogger(__name__)


def failure_kind(exc: BaseException) -> str:
    """What kind of failure ``exc`` is, most precise first: ``unreachable``, ``busy``,
    ``timeout``, ``backend``, ``model`` (weights cannot load), ``prediction`` (an answer that
    cannot be stored), ``conflict``, ``input`` (the study cannot be used), ``error`` (another
    :class:`SpineError`) or ``bug`` (anything else)."""
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (BackendUnreachable, "unreachable"), (BackendBusy, "busy"), (BackendTimeout, "timeout"),
        (BackendError, "backend"), (ModelLoadError, "model"), (PredictionError, "prediction"),
        (ConflictError, "conflict"), (InputError, "input"), (SpineError, "error"),
    )
    return next((kind for cls, kind in kinds if isinstance(exc, cls)), "bug")


@dataclass(frozen=True)
class RunSnapshot:
    """The state of a run at one moment (a copy: safe to read from any thread).

    ``prediction_id`` is set when the run stored a prediction; ``error`` (with its
    :func:`failure_kind` as ``kind``, or ``exists`` when the model version had already predicted
    the study and ``replace`` was not asked) when it did not, in which case nothing was stored.
    """

    study_id: int
    started_by: str
    fraction: float = 0.0
    message: str = "starting"
    running: bool = True
    prediction_id: int | None = None
    error: str = ""
    kind: str = ""
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None

    @property
    def failed(self) -> bool:
        return not self.running and bool(self.error)

    @property
    def succeeded(self) -> bool:
        return not self.running and not self.error


class StudyPredictionRun:
    """Predict one study in a daemon thread (see the module docstring).

    ``replace``: store over this model version's earlier prediction of the study (a user who
    asks for a prediction wants a fresh one); without it an existing one is kept and reported.
    """

    def __init__(self, ws: Workspace, predictor: Predictor, study_id: int, *, actor: str,
                 replace: bool = True) -> None:
        self.ws = ws
        self.predictor = predictor
        self.study_id = int(study_id)
        self.actor = actor
        self.replace = replace
        self._lock = threading.Lock()
        self._state = RunSnapshot(self.study_id, actor)
        self._thread = threading.Thread(target=self._run, name=f"spine-predict-{study_id}",
                                        daemon=True)

    def start(self) -> StudyPredictionRun:
        self._thread.start()
        return self

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return self._state

    @property
    def running(self) -> bool:
        return self.snapshot().running

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the run to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _progress(self, fraction: float, message: str) -> None:
        """The predictor's progress callback (any thread): never goes backwards, stays in 0..1."""
        try:
            value = min(max(float(fraction), 0.0), 1.0)
        except (TypeError, ValueError):
            return
        with self._lock:
            s = self._state
            if s.running:
                self._state = replace(s, fraction=max(s.fraction, value),
                                      message=str(message) or s.message)

    def _run(self) -> None:
        self._progress(0.0, "opening the study")
        prediction_id: int | None = None
        error, kind = "", ""
        try:
            row = predict_study(self.ws, self.predictor, self.study_id, actor=self.actor,
                                replace=self.replace, progress=self._progress)
            if row is None:
                error, kind = ("this model version already predicted the study; nothing new "
                               "was stored"), "exists"
            else:
                prediction_id = int(row.id)
        except SpineError as exc:
            error, kind = str(exc), failure_kind(exc)
        except Exception as exc:  # noqa: BLE001 - the thread must end with a message, not silently
            log.exception("prediction of study %s failed unexpectedly", self.study_id)
            error, kind = f"unexpected {type(exc).__name__}: {exc}", "bug"
        with self._lock:
            self._state = replace(
                self._state, running=False, prediction_id=prediction_id, error=error, kind=kind,
                fraction=1.0 if not error else self._state.fraction,
                message="stored" if not error else "failed",
                finished_at=dt.datetime.now(dt.UTC),
            )


class RunBoard:
    """The single-study runs of this process, by (database URL, study id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], StudyPredictionRun] = {}

    def current(self, database: str, study_id: int) -> StudyPredictionRun | None:
        """The running or last finished run of this study in this process."""
        with self._lock:
            return self._runs.get((database, int(study_id)))

    def start(self, database: str, run: StudyPredictionRun) -> StudyPredictionRun:
        """Start ``run`` unless one is still running on the same study.

        Raises:
            ConflictError: one is running (the message says who started it).
        """
        key = (database, run.study_id)
        with self._lock:
            running = self._runs.get(key)
            if running is not None and running.running:
                s = running.snapshot()
                raise ConflictError(
                    f"{s.started_by} is already predicting this study ({s.message}); wait for "
                    "that prediction to finish"
                )
            self._runs[key] = run.start()
            return run


#: The board of this process (the Streamlit server shares it between sessions).
RUNS = RunBoard()
