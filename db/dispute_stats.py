"""Numbers for the dispute dashboard: disputes by level/kind/status, time to decision, and the
readers' agreement over time.

Aggregates only (no reader's individual calls leave this module), so any signed-in role may see
them. Agreement uses the same calls as dispute detection: submitted readers, unmarked scope levels
counted as not fractured (see :mod:`db.disputes`).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.adjudication_inputs import fill_implicit, report_labels, scope_levels
from spine_core.adjudication import craniocaudal_key
from spine_core.consensus import krippendorff_alpha_nominal, percent_agreement
from spine_core.errors import InputError
from spine_core.metrics import UndefinedMetricWarning


@dataclass(frozen=True)
class CountRow:
    level: str
    kind: str
    status: str
    count: int


def dispute_counts(session: Session, *, since: dt.datetime | None = None) -> list[CountRow]:
    """Number of disputes per (level, kind, status), levels head to feet; ``since``: only
    disputes opened then or later."""
    stmt = select(m.Dispute.level, m.Dispute.kind, m.Dispute.status, func.count())
    if since is not None:
        stmt = stmt.where(m.Dispute.opened_at >= since)
    rows = session.execute(
        stmt.group_by(m.Dispute.level, m.Dispute.kind, m.Dispute.status)
    ).all()
    out = [CountRow(level, kind, status, int(n)) for level, kind, status, n in rows]
    return sorted(out, key=lambda r: (craniocaudal_key(r.level), r.kind, r.status))


@dataclass(frozen=True)
class DecisionTime:
    """How long one round of a dispute took from opening (or reopening) to its decision."""

    dispute_id: int
    level: str
    kind: str
    round: int
    policy: str
    superseded: bool
    started_at: dt.datetime
    decided_at: dt.datetime

    @property
    def hours(self) -> float:
        return (self.decided_at - self.started_at).total_seconds() / 3600.0


def _round_start(dispute: m.Dispute, round_: int) -> dt.datetime:
    for entry in (dispute.details or {}).get("reopened", []):
        if int(entry.get("round", 0)) == round_ and entry.get("at"):
            return dt.datetime.fromisoformat(str(entry["at"]))
    return dispute.opened_at


def decision_times(session: Session, *, since: dt.datetime | None = None) -> list[DecisionTime]:
    """One entry per decision (superseded ones included), oldest decision first; ``since``: only
    decisions made then or later."""
    stmt = select(m.Dispute, m.Decision).join(m.Decision, m.Decision.dispute_id == m.Dispute.id)
    if since is not None:
        stmt = stmt.where(m.Decision.decided_at >= since)
    rows = session.execute(stmt.order_by(m.Decision.decided_at, m.Decision.id)).all()
    return [
        DecisionTime(d.id, d.level, d.kind, x.round, x.policy, x.superseded,
                     _round_start(d, x.round), x.decided_at)
        for d, x in rows
    ]


@dataclass(frozen=True)
class AgreementPoint:
    """Readers' agreement on the studies finished in one period (by last submission time).

    ``units``: (study, level) pairs with at least two calls. NaN values mean undefined (e.g. every
    call the same category leaves Krippendorff's alpha undefined).
    """

    period_start: dt.date
    studies: int
    units: int
    percent_agreement: float
    alpha: float


def _period_start(day: dt.date, period: str) -> dt.date:
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise InputError(f"unknown period {period!r}; use day, week or month")


@dataclass(frozen=True)
class MultiReaderStudy:
    """A study read by at least two readers: who submitted it and when the last one did."""

    study_id: int
    readers: tuple[str, ...]
    finished_at: dt.datetime


def studies_read_by_two(session: Session) -> dict[int, MultiReaderStudy]:
    """THE definition of "studies read by at least two readers", for every page that counts
    them (the dispute dashboard, the Agreement page): studies that two or more readers submitted.

    ``finished_at``: the last submission, or, for readers' work imported as submitted (no
    submission time), the last assignment time.
    """
    rows = session.execute(
        select(m.Assignment.study_id, m.User.username, m.Assignment.submitted_at,
               m.Assignment.assigned_at)
        .join(m.User, m.User.id == m.Assignment.reader_id)
        .where(m.Assignment.status == m.AssignmentStatus.submitted.value)
    ).all()
    readers: dict[int, list[str]] = defaultdict(list)
    finished: dict[int, dt.datetime] = {}
    for study_id, username, submitted_at, assigned_at in rows:
        readers[study_id].append(username)
        at = submitted_at or assigned_at
        if at is not None and (study_id not in finished or at > finished[study_id]):
            finished[study_id] = at
    return {sid: MultiReaderStudy(sid, tuple(sorted(names)), finished[sid])
            for sid, names in sorted(readers.items()) if len(names) >= 2 and sid in finished}


def agreement_over_time(session: Session, *, period: str = "week",
                        since: dt.datetime | None = None) -> list[AgreementPoint]:
    """Percent agreement and Krippendorff's alpha of the submitted readers, per period.

    The studies are :func:`studies_read_by_two`; each counts in the period of its last
    submission. ``since``: only studies finished then or later.
    """
    _period_start(dt.date.today(), period)  # refuse a bad period before querying
    chosen = {sid: s for sid, s in studies_read_by_two(session).items()
              if since is None or s.finished_at >= since}
    readers = {sid: list(s.readers) for sid, s in chosen.items()}
    finished = {sid: s.finished_at for sid, s in chosen.items()}
    studies = list(chosen)
    if not studies:
        return []
    explicit: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    for study_id, username, level, call in session.execute(
        select(m.LevelLabel.study_id, m.User.username, m.LevelLabel.level, m.LevelLabel.call)
        .join(m.User, m.User.id == m.LevelLabel.reader_id)
        .where(m.LevelLabel.study_id.in_(studies))
    ):
        if username in readers[study_id]:
            explicit[study_id].setdefault(username, {})[level] = call
    datasets = dict(session.execute(
        select(m.Study.id, m.Study.dataset).where(m.Study.id.in_(studies))).all())
    masks: dict[int, list[str]] = defaultdict(list)
    for study_id, names in session.execute(
        select(m.Series.study_id, m.Mask.levels).join(m.Series, m.Series.id == m.Mask.series_id)
        .where(m.Series.study_id.in_(studies), m.Mask.source == "dataset")
    ):
        masks[study_id].extend(str(n) for n in names or [])

    units_by_period: dict[dt.date, list[list[str]]] = defaultdict(list)
    studies_by_period: dict[dt.date, int] = defaultdict(int)
    for sid in studies:
        report = report_labels(session, sid)
        scope = scope_levels(datasets[sid], report, explicit[sid], masks[sid])
        calls, _ = fill_implicit(readers[sid], explicit[sid], scope)
        key = _period_start(finished[sid].date(), period)
        studies_by_period[key] += 1
        for level in scope:
            units_by_period[key].append([calls[r][level] for r in readers[sid]])

    out: list[AgreementPoint] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for key in sorted(units_by_period):
            units = units_by_period[key]
            pa = percent_agreement(units) if units else math.nan
            alpha = krippendorff_alpha_nominal(units) if units else math.nan
            out.append(AgreementPoint(key, studies_by_period[key], len(units), pa, alpha))
    return out
