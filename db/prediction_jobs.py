"""Batch prediction in a background thread, one batch per database at a time, for all replicas.

A page submits a batch to the :data:`JOBS` board (:meth:`JobBoard.submit`) and polls its
:meth:`~PredictionJob.snapshot`; the batch goes on when the user leaves the page or reloads it.
By default it runs in a :class:`PredictionJob` thread of the process that submits it; with
``SPINE_WORKER=external`` it is queued (:mod:`db.job_queue`) and a ``spine worker`` process runs
it (:mod:`db.job_worker`), the page seeing it as a :class:`StoredJob`.
The batch is a ``prediction_jobs`` row (:mod:`db.job_rows`): its status, progress, owner, start,
end and error are in the database, so a user of any app replica sees the running batch (a
:class:`StoredJob`), may stop it, and cannot start a second one. The worker thread beats the
row's heartbeat; when its process dies the row is marked failed with the reason, and
:meth:`JobBoard.retry` runs it again. Every study is stored on its own by
:func:`db.predictions.predict_many` (a stopped or failed batch keeps what it finished; running
again resumes).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import job_queue, job_rows
from db import models as m
from db.predictions import BatchReport, predict_many
from db.session import make_sessionmaker
from db.workspace import Workspace
from spine_core.errors import ConflictError, SpineError
from spine_core.inference.protocol import Predictor

log = logging.getLogger(__name__)

#: A batch gives up after this many failures in a row (e.g. a backend that went down).
MAX_FAILURES_IN_A_ROW = 5


@dataclass(frozen=True)
class JobSnapshot:
    """The state of a batch at one moment (a copy: safe to read from any thread)."""

    total: int
    done: int = 0
    predicted: int = 0
    skipped: int = 0
    failed: int = 0
    problems: tuple[str, ...] = ()
    model: str = ""
    started_by: str = ""
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    running: bool = True  # queued or running: not over yet
    queued: bool = False  # waiting for a ``spine worker`` to take it up
    error: str = ""  # the batch could not run at all (e.g. the models failed to load)
    stopped: str = ""  # why it ended early

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def summary(self) -> str:
        if self.error:
            return f"prediction failed: {self.error}"
        text = (f"{self.predicted} studies predicted, {self.skipped} already predicted"
                + (f", {self.failed} failed" if self.failed else ""))
        if self.queued:
            return f"waiting for a worker to start it ({self.total} studies)"
        if self.running:
            return f"{self.done} of {self.total} studies done: {text}"
        return f"{text}; {self.stopped}" if self.stopped else text


class PredictionJob:
    """One batch of studies predicted in a daemon thread (see the module docstring)."""

    def __init__(self, ws: Workspace, predictor: Predictor, study_ids: Sequence[int], *,
                 actor: str, replace: bool = False, retry_of: int | None = None) -> None:
        self.ws = ws
        self.predictor = predictor
        self.study_ids = [int(i) for i in study_ids]
        self.actor = actor
        self.replace = replace
        self.retry_of = retry_of
        self.job_id: int | None = None
        self._lock = threading.Lock()
        self._state = JobSnapshot(total=len(self.study_ids), started_by=actor)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._halt: Callable[[], str] = lambda: ""
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spine-predict-batch", daemon=True)

    @classmethod
    def of_claimed(cls, ws: Workspace, predictor: Predictor, row: m.PredictionJobRow, *,
                   halt: Callable[[], str] = lambda: "") -> PredictionJob:
        """The batch of a row this process already claimed (a ``spine worker``); not started.

        ``halt()`` is asked between studies: a non-empty answer stops the batch with that reason
        (a flag the caller sets, e.g. from a signal handler, with no lock to take).
        """
        job = cls(ws, predictor, [int(i) for i in row.study_ids], actor=row.owner,
                  replace=bool(row.replace), retry_of=row.retry_of)
        job.job_id = int(row.id)
        job._halt = halt
        return job

    def claim(self) -> int:
        """Take the database's batch slot (a ``prediction_jobs`` row).

        Raises:
            ConflictError: a batch is running, in this replica or another.
        """
        self.job_id = job_rows.claim(self.ws.sessions, kind=job_rows.BATCH,
                                     lock_key=job_rows.batch_key(), owner=self.actor,
                                     study_ids=self.study_ids, replace=self.replace,
                                     retry_of=self.retry_of)
        return self.job_id

    def start(self) -> PredictionJob:
        if self.job_id is None:
            self.claim()
        self._thread.start()
        threading.Thread(target=self._beat, name="spine-predict-heartbeat", daemon=True).start()
        return self

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._state

    def cancel(self, reason: str = "") -> None:
        """Stop after the study being predicted now (it is still stored); ``reason`` replaces
        "stopped on request" in the summary."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the batch to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self.snapshot().running

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]
        self._save()

    def _save(self, **final: Any) -> None:
        """Write the state into the job's row (a failed write is logged: the batch goes on)."""
        if self.job_id is None:
            return
        s = self.snapshot()
        try:
            job_rows.save(self.ws.sessions, self.job_id, done=s.done, predicted=s.predicted,
                          skipped=s.skipped, failures=s.failed, fraction=s.fraction,
                          model=s.model[:200], problems=list(s.problems[:200]),
                          message=s.summary()[:256], **final)
        except Exception:  # noqa: BLE001 - progress is best effort; the predictions are stored
            log.exception("could not save the progress of prediction batch %s", self.job_id)

    def _beat(self) -> None:
        """Beat the row's heartbeat until the batch ends; stop when asked from any replica."""
        job_rows.keep_beating(self.ws.sessions, lambda: self.job_id, self._ended, self._stop,
                              "prediction batch")

    def _on_study(self, study_id: int, outcome: str) -> None:
        with self._lock:
            s = self._state
            self._state = replace(
                s, done=s.done + 1,
                predicted=s.predicted + (outcome == "predicted"),
                skipped=s.skipped + (outcome == "skipped"),
                failed=s.failed + (outcome == "failed"),
            )
        self._save()

    def _should_stop(self) -> bool:
        return self._stop.is_set() or bool(self._halt())

    def _run(self) -> None:
        report = BatchReport()
        error = ""
        try:
            info = self.predictor.info()  # loads local models / asks the backend: fail once, early
            self._update(model=f"{info.name} {info.version}")
            report = predict_many(
                self.ws, self.predictor, self.study_ids, actor=self.actor, replace=self.replace,
                on_study=self._on_study, should_stop=self._should_stop,
                max_consecutive_failures=MAX_FAILURES_IN_A_ROW,
            )
        except SpineError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the thread must end with a message, not silently
            log.exception("prediction batch failed")
            error = f"unexpected {type(exc).__name__}: {exc}"
        finished = dt.datetime.now(dt.UTC)
        with self._lock:
            reason = self._stop_reason or self._halt()
            stopped = (reason or report.stopped) if report.stopped else ""
            self._state = replace(self._state, running=False, finished_at=finished, error=error,
                                  problems=tuple(report.problems), stopped=stopped)
        status = (job_rows.FAILED if error else job_rows.STOPPED if stopped else job_rows.DONE)
        self._save(status=status, finished_at=finished, error=error, stopped=stopped)
        self._ended.set()


def snapshot_of(row: m.PredictionJobRow) -> JobSnapshot:
    """A batch's state as its row has it (a batch of another replica, or one that ended)."""
    return JobSnapshot(
        total=row.total, done=row.done, predicted=row.predicted, skipped=row.skipped,
        failed=row.failures, problems=tuple(str(p) for p in row.problems), model=row.model,
        started_by=row.owner, started_at=row.started_at, finished_at=row.finished_at,
        running=row.status in job_queue.LIVE, queued=row.status == job_queue.QUEUED,
        error=row.error, stopped=row.stopped,
    )


class StoredJob(job_rows.StoredRow[JobSnapshot]):
    """A batch seen through its row: one another replica runs, or one whose worker died."""

    def __init__(self, sessions: sessionmaker[Session], row: m.PredictionJobRow) -> None:
        super().__init__(sessions, row)
        self.study_ids = [int(i) for i in row.study_ids]
        self.replace = bool(row.replace)

    def _snapshot_of(self, row: m.PredictionJobRow) -> JobSnapshot:
        return snapshot_of(row)

    def _lock_key(self) -> str:
        return job_rows.batch_key()

    def cancel(self) -> None:
        """Ask the process that runs it to stop after the current study (a queued batch stops
        at once)."""
        job_queue.cancel(self.sessions, self.job_id)


class JobBoard:
    """The batches of every replica, by database URL: at most one running per database.

    Batches this process runs are :class:`PredictionJob` objects (also written to their rows);
    others (another replica's, or queued for a ``spine worker``) are :class:`StoredJob` views of
    their rows.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int], PredictionJob] = {}
        self._sessions: dict[str, sessionmaker[Session]] = {}

    def _sessions_for(self, key: str, sessions: sessionmaker[Session] | None
                      ) -> sessionmaker[Session]:
        with self._lock:
            if sessions is not None:
                self._sessions.setdefault(key, sessions)
                return sessions
            if key not in self._sessions:
                self._sessions[key] = make_sessionmaker(key)
            return self._sessions[key]

    def current(self, key: str, sessions: sessionmaker[Session] | None = None
                ) -> PredictionJob | StoredJob | None:
        """The running or last ended batch of this database, started in any replica (a batch
        whose worker died is found failed, with the reason)."""
        sessions = self._sessions_for(key, sessions)
        row = job_rows.latest(sessions, job_rows.batch_key())
        if row is None:
            return None
        with self._lock:
            local = self._jobs.get((key, int(row.id)))
        return local if local is not None else StoredJob(sessions, row)

    def start(self, key: str, job: PredictionJob) -> PredictionJob:
        """Start ``job`` unless a batch is still running on this database (in any replica).

        Raises:
            ConflictError: one is running (the message says who started it and how far it is).
        """
        self._sessions_for(key, job.ws.sessions)
        job_id = job.claim()
        with self._lock:
            self._jobs = {k: j for k, j in self._jobs.items() if j.running}  # forget ended ones
            self._jobs[(key, job_id)] = job
        return job.start()

    def submit(self, key: str, ws: Workspace, predictor: Predictor, study_ids: Sequence[int], *,
               actor: str, replace: bool = False, retry_of: int | None = None
               ) -> PredictionJob | StoredJob:
        """Run a batch: in a thread here, or queued for a ``spine worker`` when
        ``ws.settings.external_worker`` (``predictor`` is then not used).

        Raises:
            ConflictError: a batch is queued or running on this database.
        """
        if not ws.settings.external_worker:
            return self.start(key, PredictionJob(ws, predictor, study_ids, actor=actor,
                                                 replace=replace, retry_of=retry_of))
        sessions = self._sessions_for(key, ws.sessions)
        job_id = job_queue.enqueue(sessions, kind=job_rows.BATCH, lock_key=job_rows.batch_key(),
                                   owner=actor, study_ids=study_ids, replace=replace,
                                   retry_of=retry_of)
        row = job_rows.get(sessions, job_id)
        assert row is not None  # just written
        return StoredJob(sessions, row)

    def retry(self, key: str, ws: Workspace, predictor: Predictor, *, actor: str
              ) -> PredictionJob | StoredJob:
        """Run the last batch again (it resumes: studies already predicted are skipped), here or
        queued for a worker as :meth:`submit` does.

        Raises:
            ConflictError: it is still running, or there is none.
        """
        last = self.current(key, ws.sessions)
        if last is None:
            raise ConflictError("there is no prediction batch to run again")
        if last.running:
            raise ConflictError("the prediction batch is still running; wait for it or stop it")
        return self.submit(key, ws, predictor, last.study_ids, actor=actor, replace=last.replace,
                           retry_of=last.job_id)


#: The board of this process (the Streamlit server shares it between sessions).
JOBS = JobBoard()
