"""What the committee page shows: the dispute queue and everything about one dispute.

Read-only; every function takes an open session and the viewing user, and only adjudicators and
admins see disputes (they show each reader's calls and boxes, which annotators must not see).
Slices are described as data (which stored slice, which boxes in which colour); the page draws
them (``pages/parts/dispute_slice.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import (
    DECIDED,
    GRADE_KINDS,
    OPEN,
    ActorLike,
    chair_for,
    decision_source,
    dispute_state,
    latest_prediction,
    load_actor,
    report_labels,
    study_readers,
    submitted_readers,
)
from db.relabel import study_relabels
from spine_core import adjudication as adj
from spine_core.boxes import Box
from spine_core.colours import READER_PALETTE, RGB, UNION_COLOUR, reader_colours
from spine_core.config import Settings
from spine_core.consensus import union_boxes
from spine_core.errors import InputError, NotFound, SpineError
from spine_core.roles import Permission, can

MAX_SLICES = 12


def _viewer(session: Session, viewer: ActorLike) -> m.User:
    user = load_actor(session, viewer)
    check_permission(user, Permission.read_disputes)
    return user


# --------------------------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueItem:
    """One line of the dispute queue."""

    dispute_id: int
    study_id: int
    study_uid: str
    level: str
    kind: str
    status: str
    round: int
    priority: int
    votes: int
    opened_at: dt.datetime
    flagged: bool = False  # the disagreement disappeared after votes were cast


def dispute_queue(
    session: Session,
    viewer: ActorLike,
    *,
    status: str = OPEN,
    levels: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    study_id: int | None = None,
) -> list[QueueItem]:
    """Disputes by priority: readers-vs-report first, then readers-disagree, then model, each
    head to feet; oldest first within a level.

    Raises:
        PermissionDenied: the viewer is neither adjudicator nor admin.
        InputError: an unknown status or kind.
    """
    _viewer(session, viewer)
    if status not in (OPEN, DECIDED, "all"):
        raise InputError(f"unknown dispute status {status!r}; use open, decided or all")
    known = {k.value for k in adj.DisputeKind}
    if kinds is not None and not set(kinds) <= known:
        raise InputError(f"unknown dispute kind(s) {sorted(set(kinds) - known)}; use {sorted(known)}")
    votes = (
        select(func.count(m.Vote.id))
        .where(m.Vote.dispute_id == m.Dispute.id, m.Vote.round == m.Dispute.round)
        .correlate(m.Dispute).scalar_subquery()
    )
    stmt = (
        select(m.Dispute, m.Study.study_uid, votes)
        .join(m.Study, m.Study.id == m.Dispute.study_id)
        .order_by(m.Dispute.priority, m.Dispute.opened_at, m.Dispute.id)
    )
    if status != "all":
        stmt = stmt.where(m.Dispute.status == status)
    if levels:
        stmt = stmt.where(m.Dispute.level.in_(sorted(levels)))
    if kinds:
        stmt = stmt.where(m.Dispute.kind.in_(sorted(kinds)))
    if study_id is not None:
        stmt = stmt.where(m.Dispute.study_id == study_id)
    return [
        QueueItem(d.id, d.study_id, uid, d.level, d.kind, d.status, d.round, d.priority, int(n or 0),
                  d.opened_at, bool((d.details or {}).get("no_longer_disputed")))
        for d, uid, n in session.execute(stmt)
    ]


# --------------------------------------------------------------------------------------------
# One dispute
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderBox:
    """A reader's box at the disputed level, in stored-slice pixels, with the reader's colour."""

    reader: str
    box_id: int
    slice_index: int
    x: float
    y: float
    width: float
    height: float
    colour: RGB


@dataclass(frozen=True)
class UnionView:
    """The union ground truth of the readers' boxes on one slice (RSNA rule)."""

    x: float
    y: float
    width: float
    height: float
    readers: tuple[str, ...]
    colour: RGB = UNION_COLOUR


@dataclass(frozen=True)
class SliceView:
    """A stored slice to show: its boxes and unions (none for a centroid fallback)."""

    slice_index: int
    instance_number: int
    boxes: tuple[ReaderBox, ...] = ()
    unions: tuple[UnionView, ...] = ()
    why: str = "boxes"  # "boxes" | "centroid"


@dataclass(frozen=True)
class VoteView:
    round: int
    voter: str
    choice: str
    rationale: str
    at: dt.datetime


@dataclass(frozen=True)
class DecisionView:
    id: int
    round: int
    fractured: bool | None
    policy: str
    reason: str
    decided_by: str
    decided_at: dt.datetime
    superseded: bool
    source: str
    #: grade disputes: the grade decided (None: cannot tell) and its morphology
    grade: int | None = None
    morphology: str | None = None
    is_grade: bool = False

    @property
    def verdict(self) -> str:
        if self.is_grade:
            if self.grade is None:
                return "cannot tell"
            return f"grade {self.grade}" + (f" {self.morphology}" if self.morphology else "")
        if self.fractured is None:
            return "cannot tell"
        return "fractured" if self.fractured else "not fractured"


@dataclass(frozen=True)
class DisputeDetail:
    """Everything the committee page shows about one dispute."""

    dispute_id: int
    study_id: int
    study_uid: str
    level: str
    kind: str
    status: str
    round: int
    details: dict[str, Any]
    opened_at: dt.datetime
    closed_at: dt.datetime | None
    series_id: int | None
    report_text: str
    report_labels: dict[str, bool]
    report_source: str
    model_name: str
    model_probabilities: dict[str, float]
    slices: tuple[SliceView, ...]
    reader_colours: dict[str, RGB]
    votes: tuple[VoteView, ...]
    decisions: tuple[DecisionView, ...]
    policy: str
    tally: adj.Outcome | None
    vote_refusal: str | None  # why the viewer may not vote now (None: may vote)
    final_label: tuple[bool, str] | None
    other_slices: int = 0  # slices with boxes beyond MAX_SLICES, not shown
    study_readers: tuple[str, ...] = field(default_factory=tuple)
    #: every slice with boxes at the level (the viewer shows them all), in stored order
    all_slices: tuple[SliceView, ...] = ()
    #: the stored slice to open at: the one most readers boxed (then head to feet), else the
    #: level's centroid; None when neither is known
    focus_slice: int | None = None
    #: grade disputes (kind grades_*): the tally of the current round's grade votes (``tally``
    #: is None for them) and the level's final grade (grade, morphology, source) if it has one
    grade_tally: adj.GradeOutcome | None = None
    final_grade: tuple[int, str | None, str] | None = None
    #: what each reader who renumbered the study calls the disputed vertebra (db.relabel)
    reader_names: dict[str, str] = field(default_factory=dict)

    @property
    def is_grade_dispute(self) -> bool:
        return self.kind in GRADE_KINDS

    @property
    def current_votes(self) -> tuple[VoteView, ...]:
        return tuple(v for v in self.votes if v.round == self.round)


def _series(session: Session, study_id: int) -> m.Series | None:
    return session.scalars(
        select(m.Series).where(m.Series.study_id == study_id).order_by(m.Series.id).limit(1)
    ).first()


def _instance(series: m.Series | None, slice_index: int) -> int:
    numbers = list(series.instance_numbers or []) if series is not None else []
    return int(numbers[slice_index]) if 0 <= slice_index < len(numbers) else slice_index + 1


def _centroid_slice(session: Session, study_id: int, level: str, series: m.Series | None) -> int | None:
    """The stored slice through the level's centroid (dataset centroids first), if known."""
    if series is None:
        return None
    row = session.scalars(
        select(m.Centroid).where(m.Centroid.study_id == study_id, m.Centroid.level == level)
        .order_by((m.Centroid.source != "dataset"), m.Centroid.id).limit(1)
    ).first()
    if row is None:
        return None
    affine = np.asarray(series.affine, dtype=np.float64)
    index = np.linalg.solve(affine[:3, :3], np.array([row.x, row.y, row.z]) - affine[:3, 3])
    a0 = int(np.rint(index[0]))
    return a0 if 0 <= a0 < int(series.shape[0]) else None


def _slices(session: Session, study_id: int, level: str, series: m.Series | None,
            colours: dict[str, RGB], min_iou: float) -> tuple[list[SliceView], list[SliceView]]:
    """(the most-read slices, at most MAX_SLICES, most-read first; every slice with boxes in
    stored order), or the centroid's slice in both when no reader boxed the level."""
    rows = session.execute(
        select(m.Box, m.User.username).join(m.User, m.User.id == m.Box.reader_id)
        .where(m.Box.study_id == study_id, m.Box.level == level, m.Box.deleted_at.is_(None),
               m.Box.source != "dataset")
        .order_by(m.Box.slice_index, m.User.username, m.Box.id)
    ).all()
    by_slice: dict[int, list[ReaderBox]] = {}
    for box, reader in rows:
        colour = colours.setdefault(reader, READER_PALETTE[len(colours) % len(READER_PALETTE)])
        by_slice.setdefault(box.slice_index, []).append(
            ReaderBox(reader, box.id, box.slice_index, box.x, box.y, box.width, box.height, colour))
    if not by_slice:
        centroid = _centroid_slice(session, study_id, level, series)
        if centroid is None:
            return [], []
        only = [SliceView(centroid, _instance(series, centroid), why="centroid")]
        return only, list(only)
    views: dict[int, SliceView] = {}
    for k in sorted(by_slice):
        boxes = by_slice[k]
        core = [Box(k, b.x, b.y, b.width, b.height, b.reader, level, b.box_id) for b in boxes]
        unions = tuple(
            UnionView(u.x, u.y, u.width, u.height, tuple(str(r) for r in u.readers))
            for u in union_boxes(core, min_iou=min_iou)
        )
        views[k] = SliceView(k, _instance(series, k), tuple(boxes), unions)
    # Most-read slices first (where readers overlap), then head to feet in stored order.
    order = sorted(by_slice, key=lambda k: (-len({b.reader for b in by_slice[k]}), k))
    return [views[k] for k in order[:MAX_SLICES]], list(views.values())


def _vote_refusal(session: Session, user: m.User, dispute: m.Dispute, state: adj.DisputeState,
                  readers: set[str]) -> str | None:
    if not can(user.role, Permission.vote):
        return f"only adjudicators vote; you are signed in as {user.role}"
    try:
        if state.kind in adj.GRADE_KINDS:
            adj.validate_grade_vote(state, adj.GradeVote(user.username, None, None, "(check)"),
                                    study_readers=readers)
        else:
            adj.validate_vote(state, adj.Vote(user.username, adj.VoteChoice.cannot_tell,
                                              "(check)"), study_readers=readers)
    except SpineError as exc:
        return str(exc)
    return None


def dispute_detail(session: Session, viewer: ActorLike, dispute_id: int,
                   settings: Settings) -> DisputeDetail:
    """The dispute with its study's report, the model's probabilities, the readers' boxes at the
    level (one colour per reader) and their union, the votes, decisions and the current tally.

    Raises:
        PermissionDenied: the viewer is neither adjudicator nor admin.
        NotFound: no such dispute.
    """
    user = _viewer(session, viewer)
    dispute = session.get(m.Dispute, int(dispute_id))
    if dispute is None:
        raise NotFound(f"dispute {dispute_id} does not exist; reload the dispute queue")
    study = session.get(m.Study, dispute.study_id)
    assert study is not None
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    series = _series(session, study.id)
    readers = study_readers(session, study.id)
    colours = reader_colours(submitted_readers(session, study.id))
    most_read, every = _slices(session, study.id, dispute.level, series, colours,
                               float(settings.union_min_iou))
    slices = sorted(most_read, key=lambda v: v.slice_index)
    state = dispute_state(session, dispute)
    votes = tuple(
        VoteView(v.round, name, v.choice, v.rationale, v.created_at)
        for v, name in session.execute(
            select(m.Vote, m.User.username).join(m.User, m.User.id == m.Vote.voter_id)
            .where(m.Vote.dispute_id == dispute.id).order_by(m.Vote.round, m.Vote.id))
    )
    decisions = tuple(
        DecisionView(d.id, d.round, d.fractured, d.policy, d.reason, d.decided_by, d.decided_at,
                     d.superseded, decision_source(dispute, d), d.grade, d.morphology,
                     dispute.kind in GRADE_KINDS)
        for d in session.scalars(select(m.Decision).where(m.Decision.dispute_id == dispute.id)
                                 .order_by(m.Decision.id))
    )
    tally = None
    grade_tally = None
    final_grade = None
    if dispute.kind in GRADE_KINDS:
        grade_row = session.scalars(select(m.FinalGrade).where(
            m.FinalGrade.study_id == study.id, m.FinalGrade.level == dispute.level)).first()
        if grade_row is not None:
            final_grade = (grade_row.grade, grade_row.morphology, grade_row.source)
        if dispute.status == OPEN:
            chair = chair_for(session, (str(v.voter) for v in state.current_grade_votes))
            grade_tally = adj.tally_grades(state.current_grade_votes, int(settings.quorum), chair)
    elif dispute.status == OPEN:
        chair = chair_for(session, (str(v.voter) for v in state.current_votes))
        tally = adj.tally(state.current_votes, settings.adjudication_policy, int(settings.quorum),
                          chair, report=report_labels(session, study.id).get(dispute.level))
    prediction = latest_prediction(session, study.id)
    model_name, probs = "", {}
    if prediction is not None:
        version = session.get(m.ModelVersion, prediction.model_version_id)
        model_name = f"{version.name} {version.version}" if version is not None else ""
        probs = {str(k): float(v) for k, v in (prediction.level_probabilities or {}).items()
                 if v is not None}
    final_row = session.scalars(
        select(m.FinalLabel).where(m.FinalLabel.study_id == study.id,
                                   m.FinalLabel.level == dispute.level)
    ).first()
    return DisputeDetail(
        dispute_id=dispute.id, study_id=study.id, study_uid=study.study_uid, level=dispute.level,
        kind=dispute.kind, status=dispute.status, round=dispute.round,
        details=dict(dispute.details or {}), opened_at=dispute.opened_at,
        closed_at=dispute.closed_at, series_id=series.id if series is not None else None,
        report_text=report.text if report is not None else "",
        report_labels=dict(report.labels or {}) if report is not None else {},
        report_source=report.source if report is not None else "",
        model_name=model_name, model_probabilities=probs, slices=tuple(slices),
        reader_colours=dict(colours), votes=votes, decisions=decisions,
        policy=adj.Policy.parse(settings.adjudication_policy).value, tally=tally,
        vote_refusal=_vote_refusal(session, user, dispute, state, readers),
        final_label=(final_row.fractured, final_row.source) if final_row is not None else None,
        other_slices=len(every) - len(slices), study_readers=tuple(sorted(readers)),
        all_slices=tuple(every), focus_slice=most_read[0].slice_index if most_read else None,
        grade_tally=grade_tally, final_grade=final_grade,
        reader_names={r: mapping[dispute.level] for r, mapping in
                      study_relabels(session, study.id).items() if dispute.level in mapping},
    )
