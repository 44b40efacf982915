"""Prediction jobs as ``prediction_jobs`` rows: what every app replica sees of every batch and run.

A job's worker (:mod:`db.prediction_jobs`, :mod:`db.prediction_runs`) claims a row
(:func:`claim`: at most one running row per ``lock_key``, enforced by a partial unique index, so
two replicas cannot start the same batch), writes its progress (:func:`save`), beats its
heartbeat (:func:`beat`, which also tells it whether someone asked it to stop) and ends it
(:func:`save` with a final status). :func:`reap` marks running rows whose worker died failed,
with the reason (:func:`spine_core.job_liveness.dead_reason`); such a job can be retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.session import unit_of_work
from spine_core import job_liveness
from spine_core.errors import ConflictError
from spine_core.job_liveness import STALE_AFTER_S, dead_reason, worker_id

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED, STOPPED = "running", "done", "failed", "stopped"
BATCH, STUDY, PACS, TRAIN = "batch", "study", "pacs", "train"
QUEUED = "queued"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def batch_key() -> str:
    return BATCH


def study_key(study_id: int) -> str:
    return f"{STUDY}:{int(study_id)}"


def pacs_key() -> str:
    """One PACS import at a time per database."""
    return PACS


def train_key() -> str:
    """One training at a time per database (it takes a machine's CPUs or GPU for long)."""
    return TRAIN


def job_ids(ids: Sequence[int | str]) -> list[int | str]:
    """A job's ``study_ids`` as stored: database ids as ints, StudyInstanceUIDs as strings."""
    return [i if isinstance(i, str) else int(i) for i in ids]


def busy(row: m.PredictionJobRow) -> str:
    """Why a new job cannot start while ``row`` (queued or running) holds its lock, in one line."""
    waiting = row.status == QUEUED
    if row.kind == STUDY:
        return (f"{row.owner} already asked for this study's prediction (it is waiting for a "
                "worker); wait for it" if waiting else
                f"{row.owner} is already predicting this study ({row.message}); wait for that "
                "prediction to finish")
    if row.kind == TRAIN:
        return (f"a training queued by {row.owner} is waiting for a worker" if waiting else
                f"a training started by {row.owner} is running ({row.message}); wait for it "
                "to finish or stop it first")
    what = "a PACS import" if row.kind == PACS else "a prediction batch"
    state = ("is waiting for a worker" if waiting
             else f"is running ({row.done} of {row.total} studies done)")
    return f"{what} started by {row.owner} {state}; wait for it to finish or stop it first"


def reap(sessions: sessionmaker[Session], *, lock_key: str | None = None,
         stale_after_s: float = STALE_AFTER_S, now: dt.datetime | None = None) -> list[int]:
    """Mark running jobs whose worker is dead failed, with the reason; their ids.

    Reads first (no write lock while every worker is alive); a dead job is then marked only if
    its heartbeat did not move meanwhile.
    """
    now = now or _now()
    me = worker_id()
    query = select(m.PredictionJobRow.id, m.PredictionJobRow.worker,
                   m.PredictionJobRow.heartbeat_at).where(m.PredictionJobRow.status == RUNNING)
    if lock_key is not None:
        query = query.where(m.PredictionJobRow.lock_key == lock_key)
    with unit_of_work(sessions, readonly=True) as session:
        running = session.execute(query).all()
    dead = [(job_id, beat, reason) for job_id, worker, beat in running
            if (reason := dead_reason(worker, (now - beat).total_seconds(),
                                      stale_after_s=stale_after_s, me=me)) is not None]
    reaped: list[int] = []
    for job_id, heartbeat, reason in dead:
        with unit_of_work(sessions) as session:
            done = session.execute(
                update(m.PredictionJobRow)
                .where(m.PredictionJobRow.id == job_id, m.PredictionJobRow.status == RUNNING,
                       m.PredictionJobRow.heartbeat_at == heartbeat)
                .values(status=FAILED, error=reason[:2000], error_kind="worker",
                        finished_at=now, message="failed"))
            if getattr(done, "rowcount", 0) == 1:
                reaped.append(int(job_id))
    return reaped


def claim(sessions: sessionmaker[Session], *, kind: str, lock_key: str, owner: str,
          study_ids: Sequence[int | str], study_id: int | None = None, replace: bool = False,
          retry_of: int | None = None) -> int:
    """A new running row for this process's worker; its id.

    Raises:
        ConflictError: a live job (queued or running) holds ``lock_key`` (the message says whose,
            how far).
    """
    reap(sessions, lock_key=lock_key)
    waiting = get_latest(sessions, lock_key)
    if waiting is not None and waiting.status == QUEUED:  # queued for a worker by a replica
        raise ConflictError(busy(waiting))
    now = _now()
    try:
        with unit_of_work(sessions) as session:
            row = m.PredictionJobRow(
                kind=kind, lock_key=lock_key, study_id=study_id,
                study_ids=job_ids(study_ids), replace=replace, status=RUNNING,
                total=len(study_ids), owner=owner[:64], started_at=now, heartbeat_at=now,
                worker=worker_id(), message="starting", retry_of=retry_of,
            )
            session.add(row)
            session.flush()
            return int(row.id)
    except IntegrityError:
        running = latest(sessions, lock_key)
        if running is None or running.status != RUNNING:
            raise ConflictError("another job on the same studies started at the same moment; "
                                "look again in a moment") from None
        raise ConflictError(busy(running)) from None


def save(sessions: sessionmaker[Session], job_id: int, **values: Any) -> None:
    """Write ``values`` into the job's row (progress, or the end with a final status); a row
    that a reaper already marked failed stays failed."""
    with unit_of_work(sessions) as session:
        session.execute(update(m.PredictionJobRow)
                        .where(m.PredictionJobRow.id == job_id,
                               m.PredictionJobRow.status == RUNNING)
                        .values(heartbeat_at=_now(), **values))


def beat(sessions: sessionmaker[Session], job_id: int) -> bool:
    """Beat the heartbeat of a running job; whether someone asked it to stop (or it is no
    longer running here: a reaper gave it up)."""
    with unit_of_work(sessions) as session:
        done = session.execute(update(m.PredictionJobRow)
                               .where(m.PredictionJobRow.id == job_id,
                                      m.PredictionJobRow.status == RUNNING)
                               .values(heartbeat_at=_now()))
        cancel = session.scalar(select(m.PredictionJobRow.cancel_requested)
                                .where(m.PredictionJobRow.id == job_id))
    return bool(cancel) or getattr(done, "rowcount", 1) == 0


def keep_beating(sessions: sessionmaker[Session], job_id: Callable[[], int | None],
                 ended: threading.Event, stop: threading.Event | None, what: str) -> None:
    """Beat the heartbeat of the job ``job_id()`` every :data:`~spine_core.job_liveness.HEARTBEAT_S`
    until ``ended`` is set (run it in a thread of its own); set ``stop`` when someone asked the job
    to stop, from any replica. A failed beat is logged (``what`` names the job) and tried again:
    only many missed beats make the job look dead."""
    while not ended.wait(job_liveness.HEARTBEAT_S):
        job = job_id()
        if job is None:
            continue
        try:
            if beat(sessions, job) and stop is not None:
                stop.set()
        except Exception:  # noqa: BLE001 - a missed beat is retried; many mean a dead worker
            log.warning("heartbeat of %s %s failed", what, job, exc_info=True)


def request_cancel(sessions: sessionmaker[Session], job_id: int) -> None:
    """Ask the job's worker, in whichever replica, to stop after the current study."""
    with unit_of_work(sessions) as session:
        session.execute(update(m.PredictionJobRow).where(m.PredictionJobRow.id == job_id)
                        .values(cancel_requested=True))


def latest(sessions: sessionmaker[Session], lock_key: str) -> m.PredictionJobRow | None:
    """The newest job of ``lock_key`` (running or ended), after reaping dead workers' jobs."""
    reap(sessions, lock_key=lock_key)
    return get_latest(sessions, lock_key)


def get_latest(sessions: sessionmaker[Session], lock_key: str) -> m.PredictionJobRow | None:
    """The newest job of ``lock_key`` as stored (no reaping)."""
    with unit_of_work(sessions, readonly=True) as session:
        return session.scalars(select(m.PredictionJobRow)
                               .where(m.PredictionJobRow.lock_key == lock_key)
                               .order_by(m.PredictionJobRow.id.desc()).limit(1)).one_or_none()


def get(sessions: sessionmaker[Session], job_id: int) -> m.PredictionJobRow | None:
    with unit_of_work(sessions, readonly=True) as session:
        return session.get(m.PredictionJobRow, job_id)


class RowStatus:
    """``running`` and ``queued`` of a job snapshot, read from its ``status`` field (the
    snapshots of the job kinds one row holds entirely: PACS imports, trainings)."""

    status: str

    @property
    def running(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    @property
    def queued(self) -> bool:
        return self.status == QUEUED


class _Snapshot(Protocol):
    @property
    def running(self) -> bool: ...


S = TypeVar("S", bound=_Snapshot)


class StoredRow(Generic[S]):
    """A job seen through its row: one another replica runs, or one whose worker died.

    Subclasses say how a row reads (:meth:`_snapshot_of`) and which lock key its worker holds
    (:meth:`_lock_key`, for :func:`reap`)."""

    def __init__(self, sessions: sessionmaker[Session], row: m.PredictionJobRow) -> None:
        self.sessions = sessions
        self.job_id = int(row.id)
        self._row = row

    def _snapshot_of(self, row: m.PredictionJobRow) -> S:
        raise NotImplementedError

    def _lock_key(self) -> str:
        raise NotImplementedError

    def snapshot(self) -> S:
        row = get(self.sessions, self.job_id)
        if row is not None:
            self._row = row
        return self._snapshot_of(self._row)

    @property
    def running(self) -> bool:
        return self.snapshot().running

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait (polling the row) for the job to end, or its worker to be found dead."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            reap(self.sessions, lock_key=self._lock_key())
            if not self.running:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
