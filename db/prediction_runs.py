"""One study predicted in a background thread, with the predictor's progress, for the pages.

A page starts a :class:`StudyPredictionRun` and keeps drawing while it runs: the run reports the
predictor's progress callback into a :class:`RunSnapshot` that any thread may read, and ends with
the stored prediction's id or with the error, classified by :func:`failure_kind` so the page can
say what went wrong (unreachable, busy, too slow...) and offer a retry. The storing itself is
:func:`db.predictions.predict_study`: a failed run stores nothing.

:data:`RUNS` holds the runs by (database, study). Each run is a ``prediction_jobs`` row
(:mod:`db.job_rows`, ``kind='study'``): a second user asking for the same study while it runs,
on any app replica, sees that run (a :class:`StoredRun`) instead of starting another one; a run
whose worker died is found failed with the reason, and may be asked for again. With
``SPINE_WORKER=external`` :meth:`RunBoard.submit` queues the run (:mod:`db.job_queue`) for a
``spine worker`` (:mod:`db.job_worker`) instead of running it in the page's process.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session, sessionmaker

from db import job_queue, job_rows
from db import models as m
from db.predictions import predict_study
from db.session import make_sessionmaker
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
        self.job_id: int | None = None
        self._lock = threading.Lock()
        self._state = RunSnapshot(self.study_id, actor)
        self._ended = threading.Event()
        self._saved_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"spine-predict-{study_id}",
                                        daemon=True)

    @classmethod
    def of_claimed(cls, ws: Workspace, predictor: Predictor, row: m.PredictionJobRow
                   ) -> StudyPredictionRun:
        """The run of a row this process already claimed (a ``spine worker``); not started."""
        run = cls(ws, predictor, int(row.study_id or row.study_ids[0]), actor=row.owner,
                  replace=bool(row.replace))
        run.job_id = int(row.id)
        return run

    def claim(self) -> int:
        """Take the study's slot (a ``prediction_jobs`` row).

        Raises:
            ConflictError: the study is being predicted, in this replica or another.
        """
        self.job_id = job_rows.claim(self.ws.sessions, kind=job_rows.STUDY,
                                     lock_key=job_rows.study_key(self.study_id),
                                     owner=self.actor, study_ids=[self.study_id],
                                     study_id=self.study_id, replace=self.replace)
        return self.job_id

    def start(self) -> StudyPredictionRun:
        if self.job_id is None:
            self.claim()
        self._thread.start()
        threading.Thread(target=self._beat, name=f"spine-predict-{self.study_id}-heartbeat",
                         daemon=True).start()
        return self

    def _save(self, force: bool = False, **final: object) -> None:
        """Write the state into the run's row (at most twice a second, unless ``force``)."""
        now = time.monotonic()
        if self.job_id is None or (not force and now - self._saved_at < 0.5):
            return
        self._saved_at = now
        s = self.snapshot()
        try:
            job_rows.save(self.ws.sessions, self.job_id, fraction=s.fraction,
                          message=s.message[:256], **final)
        except Exception:  # noqa: BLE001 - progress is best effort
            log.exception("could not save the progress of prediction run %s", self.job_id)

    def _beat(self) -> None:
        """Beat the row's heartbeat until the run ends."""
        job_rows.keep_beating(self.ws.sessions, lambda: self.job_id, self._ended, None,
                              "prediction run")

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
            if not s.running:
                return
            self._state = replace(s, fraction=max(s.fraction, value),
                                  message=str(message) or s.message)
        self._save()

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
            s = self._state
        self._save(force=True, status=job_rows.FAILED if error else job_rows.DONE,
                   finished_at=s.finished_at, error=error, error_kind=kind,
                   prediction_id=prediction_id)
        self._ended.set()


def snapshot_of(row: m.PredictionJobRow) -> RunSnapshot:
    """A run's state as its row has it."""
    return RunSnapshot(
        study_id=int(row.study_id or 0), started_by=row.owner, fraction=row.fraction,
        message=row.message, running=row.status in (job_rows.QUEUED, job_rows.RUNNING),
        prediction_id=row.prediction_id, error=row.error, kind=row.error_kind,
        started_at=row.started_at, finished_at=row.finished_at,
    )


class StoredRun(job_rows.StoredRow[RunSnapshot]):
    """A run seen through its row: one another replica runs, or one whose worker died."""

    def __init__(self, sessions: sessionmaker[Session], row: m.PredictionJobRow) -> None:
        super().__init__(sessions, row)
        self.study_id = int(row.study_id or 0)

    def _snapshot_of(self, row: m.PredictionJobRow) -> RunSnapshot:
        return snapshot_of(row)

    def _lock_key(self) -> str:
        return job_rows.study_key(self.study_id)


class RunBoard:
    """The single-study runs of every replica, by (database URL, study id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], StudyPredictionRun] = {}
        self._sessions: dict[str, sessionmaker[Session]] = {}

    def _sessions_for(self, database: str, sessions: sessionmaker[Session] | None
                      ) -> sessionmaker[Session]:
        with self._lock:
            if sessions is not None:
                self._sessions.setdefault(database, sessions)
                return sessions
            if database not in self._sessions:
                self._sessions[database] = make_sessionmaker(database)
            return self._sessions[database]

    def current(self, database: str, study_id: int,
                sessions: sessionmaker[Session] | None = None
                ) -> StudyPredictionRun | StoredRun | None:
        """The running or last ended run of this study, started in any replica."""
        sessions = self._sessions_for(database, sessions)
        row = job_rows.latest(sessions, job_rows.study_key(study_id))
        if row is None:
            return None
        with self._lock:
            local = self._runs.get((database, int(row.id)))
        return local if local is not None else StoredRun(sessions, row)

    def start(self, database: str, run: StudyPredictionRun) -> StudyPredictionRun:
        """Start ``run`` unless one is still running on the same study (in any replica).

        Raises:
            ConflictError: one is running (the message says who started it).
        """
        self._sessions_for(database, run.ws.sessions)
        job_id = run.claim()
        with self._lock:
            self._runs = {k: r for k, r in self._runs.items() if r.running}
            self._runs[(database, job_id)] = run
        return run.start()

    def submit(self, database: str, ws: Workspace, predictor: Predictor, study_id: int, *,
               actor: str, replace: bool = True) -> StudyPredictionRun | StoredRun:
        """Predict the study: in a thread here, or queued for a ``spine worker`` when
        ``ws.settings.external_worker`` (``predictor`` is then not used).

        Raises:
            ConflictError: the study is queued or being predicted (the message says by whom).
        """
        if not ws.settings.external_worker:
            return self.start(database, StudyPredictionRun(ws, predictor, study_id, actor=actor,
                                                           replace=replace))
        sessions = self._sessions_for(database, ws.sessions)
        job_id = job_queue.enqueue(sessions, kind=job_rows.STUDY,
                                   lock_key=job_rows.study_key(study_id), owner=actor,
                                   study_ids=[int(study_id)], study_id=int(study_id),
                                   replace=replace)
        row = job_rows.get(sessions, job_id)
        assert row is not None  # just written
        return StoredRun(sessions, row)


#: The board of this process (the Streamlit server shares it between sessions).
RUNS = RunBoard()
