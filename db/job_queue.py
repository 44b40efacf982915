"""Jobs queued in the ``prediction_jobs`` table for a ``spine worker`` process.

With ``SPINE_WORKER=external`` an app replica or the CLI does not run a long job itself: it
:func:`enqueue` s a row with status ``queued`` (no worker, no heartbeat yet). A worker process
:func:`claim_next` s the oldest queued row whose ``lock_key`` no running job holds, turning it
``running`` with its own :func:`~spine_core.job_liveness.worker_id`; from then on the row is a
running job like any other (:mod:`db.job_rows`: progress, heartbeat, end, reaping, retry).

Claiming is atomic on both databases: PostgreSQL locks the candidate row with ``FOR UPDATE SKIP
LOCKED`` (a second worker passes on to the next row instead of waiting), SQLite's writers are
serialised by ``BEGIN IMMEDIATE``, and on both the update only applies ``WHERE status =
'queued'``, so two workers never run one job.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import job_rows
from db import models as m
from db.session import unit_of_work
from spine_core.errors import ConflictError
from spine_core.job_liveness import worker_id

QUEUED = job_rows.QUEUED
#: The statuses of a job that is not over yet.
LIVE = (QUEUED, job_rows.RUNNING)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _lock_enqueue(session: Session, lock_key: str) -> None:
    """Serialise enqueuers of ``lock_key`` until the transaction ends (PostgreSQL: an advisory
    lock; SQLite: ``BEGIN IMMEDIATE`` already holds the database's write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"spine-job:{lock_key}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def enqueue(sessions: sessionmaker[Session], *, kind: str, lock_key: str, owner: str,
            study_ids: Sequence[int | str], replace: bool = False, retry_of: int | None = None,
            study_id: int | None = None, params: Sequence[str] = ()) -> int:
    """A new queued row for a worker to run; its id.

    Raises:
        ConflictError: a job of ``lock_key`` is queued or running (the message says whose).
    """
    job_rows.reap(sessions, lock_key=lock_key)
    with unit_of_work(sessions) as session:
        _lock_enqueue(session, lock_key)
        live = session.scalars(select(m.PredictionJobRow)
                               .where(m.PredictionJobRow.lock_key == lock_key,
                                      m.PredictionJobRow.status.in_(LIVE))
                               .order_by(m.PredictionJobRow.id).limit(1)).one_or_none()
        if live is not None:
            raise ConflictError(job_rows.busy(live))
        now = _now()
        row = m.PredictionJobRow(
            kind=kind, lock_key=lock_key, study_id=study_id, study_ids=job_rows.job_ids(study_ids),
            replace=replace, status=QUEUED, total=len(study_ids), owner=owner[:64], started_at=now,
            heartbeat_at=now, worker="", message="waiting for a worker", retry_of=retry_of,
            params=[str(p) for p in params],
        )
        session.add(row)
        session.flush()
        return int(row.id)


def claim_next(sessions: sessionmaker[Session], *, kinds: Sequence[str] = (job_rows.BATCH,)
               ) -> m.PredictionJobRow | None:
    """Take the oldest queued job of ``kinds`` for this process (status ``running``, this
    worker, a fresh heartbeat); None when there is none that may start now."""
    held = select(m.PredictionJobRow.lock_key).where(m.PredictionJobRow.status == job_rows.RUNNING)
    candidate = (select(m.PredictionJobRow.id)
                 .where(m.PredictionJobRow.status == QUEUED,
                        m.PredictionJobRow.kind.in_(list(kinds)),
                        m.PredictionJobRow.lock_key.not_in(held))
                 .order_by(m.PredictionJobRow.id).limit(1)
                 .with_for_update(skip_locked=True))
    now = _now()
    try:
        with unit_of_work(sessions) as session:
            job_id = session.scalar(candidate)
            if job_id is None:
                return None
            done = session.execute(
                update(m.PredictionJobRow)
                .where(m.PredictionJobRow.id == job_id, m.PredictionJobRow.status == QUEUED)
                .values(status=job_rows.RUNNING, worker=worker_id(), started_at=now,
                        heartbeat_at=now, message="starting"))
            if getattr(done, "rowcount", 0) != 1:
                return None
    except IntegrityError:  # another process started a job of the same lock_key meanwhile
        return None
    return job_rows.get(sessions, int(job_id))


def cancel(sessions: sessionmaker[Session], job_id: int) -> None:
    """Stop a job: a queued one ends ``stopped`` at once; a running one is asked to stop after
    its current study (:func:`db.job_rows.request_cancel`)."""
    with unit_of_work(sessions) as session:
        done = session.execute(
            update(m.PredictionJobRow)
            .where(m.PredictionJobRow.id == job_id, m.PredictionJobRow.status == QUEUED)
            .values(status=job_rows.STOPPED, finished_at=_now(), message="stopped",
                    stopped="stopped before a worker took it up"))
    if getattr(done, "rowcount", 0) != 1:
        job_rows.request_cancel(sessions, job_id)

