"""Reading time: when a reader first opened a study, when they submitted it, and how many seconds
they actively read it.

The reading page sends a heartbeat every few seconds with the seconds of *active* reading since
its previous heartbeat (time the tab was visible and the reader scrolled, drew or typed; an idle
tab sends 0). :func:`record_reading` adds them up, with two guards:

* each heartbeat counts at most ``cap_s`` seconds (:data:`HEARTBEAT_CAP_S`), so a tab left open
  (or a page that claims too much) adds little;
* the heartbeat's seconds are the interval ``[now - active_s, now]``; only the part after the
  end of the time already counted (``active_until``) is added, so two tabs (or devices) sending
  heartbeats for the same minutes count them once.

``opened_at`` is stamped the first time (:func:`open_study`, or the first heartbeat);
``submitted_at`` follows the reader's submission (``db.annotations.submit``; cleared by reopen).
Only the assigned annotator's own reading counts, and only until they submit.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from spine_core.errors import InputError, PermissionDenied
from spine_core.roles import Permission, can

#: Most seconds one heartbeat adds (the page sends one every 15–30 s).
HEARTBEAT_CAP_S = 60.0


@dataclass(frozen=True)
class ReadingTimeRow:
    """One reader's reading of one study, as admins see it."""

    study_id: int
    study_uid: str
    reader: str
    status: str
    opened_at: dt.datetime | None
    submitted_at: dt.datetime | None
    active_s: float
    heartbeats: int


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InputError("the heartbeat time must be an aware UTC datetime")
    return now.astimezone(dt.UTC)


def _assignment(session: Session, actor: m.User, study_id: int) -> m.Assignment:
    if not can(actor.role, Permission.annotate):
        raise PermissionDenied(f"only annotators' reading is timed; you are {actor.role}")
    assignment = session.scalars(
        select(m.Assignment).where(m.Assignment.study_id == study_id,
                                   m.Assignment.reader_id == actor.id)
    ).first()
    if assignment is None:
        raise PermissionDenied("this study is not assigned to you; ask an admin to assign it")
    return assignment


def _row(session: Session, study_id: int, reader_id: int, now: dt.datetime, *,
         lock: bool = False) -> m.ReadingTime:
    """The reading row of (study, reader), created at ``now`` if missing (safe against a
    concurrent insert from another tab), locked for this transaction when ``lock``."""
    def current() -> m.ReadingTime | None:
        stmt = select(m.ReadingTime).where(m.ReadingTime.study_id == study_id,
                                           m.ReadingTime.reader_id == reader_id)
        if lock:
            stmt = stmt.with_for_update()
        return session.scalars(stmt.execution_options(populate_existing=True)).first()

    row = current()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = m.ReadingTime(study_id=study_id, reader_id=reader_id, opened_at=now,
                                active_s=0.0, heartbeats=0)
            session.add(row)
    except IntegrityError:  # the other tab's first heartbeat inserted it first
        row = current()
        if row is None:
            raise
    return row


def open_study(session: Session, actor: m.User, study_id: int, *,
               now: dt.datetime | None = None) -> m.ReadingTime:
    """Stamp ``opened_at`` the first time the reader opens the study (later opens change nothing)."""
    _assignment(session, actor, study_id)
    return _row(session, study_id, actor.id, _now(now))


def record_reading(
    session: Session, actor: m.User, study_id: int, active_s: float, *,
    now: dt.datetime | None = None, cap_s: float = HEARTBEAT_CAP_S,
) -> m.ReadingTime:
    """One heartbeat: ``active_s`` seconds of active reading up to ``now`` (see the module
    docstring for the cap and the two-tab rule). After the reader submitted, heartbeats count
    nothing. Returns the reading row (``active_s`` is the total so far).

    Raises:
        InputError: ``active_s`` negative or not a finite number.
        PermissionDenied: not an annotator assigned to the study.
    """
    if not isinstance(active_s, (int, float)) or not math.isfinite(active_s) or active_s < 0:
        raise InputError(f"active reading time must be a number of seconds ≥ 0, got {active_s!r}")
    when = _now(now)
    assignment = _assignment(session, actor, study_id)
    row = _row(session, study_id, actor.id, when, lock=True)
    if assignment.status == m.AssignmentStatus.submitted.value:
        return row
    claimed = min(float(active_s), float(cap_s))
    start = when - dt.timedelta(seconds=claimed)
    if row.active_until is not None and row.active_until > start:
        start = row.active_until
    credit = max(0.0, (when - start).total_seconds())
    row.heartbeats += 1
    if credit > 0:
        row.active_s += credit
        row.active_until = when
    session.flush()
    return row


def mark_submitted(session: Session, study_id: int, reader_id: int,
                   when: dt.datetime | None) -> None:
    """Follow the reader's submission (``when``) or reopening (None); called by
    ``db.annotations.submit`` / ``reopen`` in their transaction."""
    if when is None:
        row = session.scalars(select(m.ReadingTime).where(
            m.ReadingTime.study_id == study_id, m.ReadingTime.reader_id == reader_id)).first()
        if row is not None:
            row.submitted_at = None
        return
    row = _row(session, study_id, reader_id, when)
    row.submitted_at = when
    session.flush()


def reading_times(session: Session, admin: m.User, *, study_id: int | None = None
                  ) -> list[ReadingTimeRow]:
    """Every assignment's reading time (admins only), by study and reader; assignments never
    opened have no ``opened_at`` and 0 seconds."""
    if not can(admin.role, Permission.assign_readers):
        raise PermissionDenied("only admins see the readers' reading times")
    return reading_time_rows(session, study_id=study_id)


def reading_time_rows(session: Session, *, study_id: int | None = None) -> list[ReadingTimeRow]:
    """:func:`reading_times` without the permission check (admin exports and the CLI)."""
    stmt = (
        select(m.Assignment, m.Study.study_uid, m.User.username, m.ReadingTime)
        .join(m.Study, m.Study.id == m.Assignment.study_id)
        .join(m.User, m.User.id == m.Assignment.reader_id)
        .outerjoin(m.ReadingTime, (m.ReadingTime.study_id == m.Assignment.study_id)
                   & (m.ReadingTime.reader_id == m.Assignment.reader_id))
        .order_by(m.Study.study_uid, m.User.username)
    )
    if study_id is not None:
        stmt = stmt.where(m.Assignment.study_id == study_id)
    out: list[ReadingTimeRow] = []
    for assignment, uid, reader, reading in session.execute(stmt):
        out.append(ReadingTimeRow(
            study_id=assignment.study_id, study_uid=uid, reader=reader, status=assignment.status,
            opened_at=reading.opened_at if reading else None,
            submitted_at=reading.submitted_at if reading else assignment.submitted_at,
            active_s=float(reading.active_s) if reading else 0.0,
            heartbeats=int(reading.heartbeats) if reading else 0,
        ))
    return out


@dataclass(frozen=True)
class ReaderSummary:
    """One reader's reading times over all their assignments (what a reading study reports)."""

    reader: str
    assigned: int
    opened: int
    submitted: int
    median_active_s: float | None  # over submitted readings; None before the first submission
    total_active_s: float


def reader_summaries(rows: Sequence[ReadingTimeRow]) -> list[ReaderSummary]:
    """Per reader, by name: assignments, opened, submitted, median and total active time."""
    by_reader: dict[str, list[ReadingTimeRow]] = {}
    for row in rows:
        by_reader.setdefault(row.reader, []).append(row)
    out = []
    for reader, mine in sorted(by_reader.items()):
        done = [r.active_s for r in mine if r.submitted_at is not None]
        out.append(ReaderSummary(
            reader=reader, assigned=len(mine), opened=sum(r.opened_at is not None for r in mine),
            submitted=len(done), median_active_s=float(statistics.median(done)) if done else None,
            total_active_s=float(sum(r.active_s for r in mine))))
    return out
