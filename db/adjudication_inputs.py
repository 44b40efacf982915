"""What the adjudication rules need, loaded from the database: who acts, the submitted readers'
calls (implicit ones filled in), the report's labels, the model's probabilities, a dispute's
history, the committee chair.

Read-only helpers shared by :mod:`db.disputes` (writes) and :mod:`db.dispute_views` /
:mod:`db.dispute_stats` (pages). See :mod:`db.disputes` for what counts as a reader's call.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from spine_core import adjudication as adj
from spine_core.adjudication import DisputeStatus, LevelCall
from spine_core.errors import LabelVocabularyError, NotFound, PermissionDenied
from spine_core.labels import CERVICAL, level_id, level_name
from spine_core.roles import Role

#: Kinds answered by the readers and the report (one open dispute per level among these).
READER_KINDS = frozenset(
    {adj.DisputeKind.readers_disagree.value, adj.DisputeKind.readers_vs_report.value}
)
MODEL_KIND = adj.DisputeKind.model_vs_final.value
#: Kinds about Genant grades (db.grade_disputes); voted on with grades.
GRADE_KINDS = frozenset(k.value for k in adj.GRADE_KINDS)
OPEN = DisputeStatus.open.value
DECIDED = DisputeStatus.decided.value
#: System accounts that own dataset reference boxes; never counted as readers.
DATASET_READERS = frozenset({"dataset"})


class ActorLike(Protocol):
    """Anything naming a user by id: a ``db.models.User`` or the pages' ``SignedInUser``."""

    @property
    def id(self) -> int: ...


# --------------------------------------------------------------------------------------------
# Actors
# --------------------------------------------------------------------------------------------


def load_actor(session: Session, actor: ActorLike) -> m.User:
    """The acting user as stored now (role and chair taken from the database, not the caller).

    Raises:
        PermissionDenied: the account does not exist any more or is deactivated.
    """
    user = session.get(m.User, int(actor.id))
    if user is None or not user.active:
        raise PermissionDenied(
            "your account is missing or deactivated; sign in again or ask an admin"
        )
    return user


# --------------------------------------------------------------------------------------------
# What the rules need, loaded from the database
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInputs:
    """Everything dispute detection needs about one study.

    ``calls``: submitted reader (user name) -> level -> call, implicit calls included;
    ``implicit``: reader -> levels whose call is implicit (not marked, counted not fractured).
    """

    study: m.Study
    calls: dict[str, dict[str, str]]
    implicit: dict[str, list[str]]
    report: dict[str, bool]
    model_probs: dict[str, float]
    model_name: str = ""
    scope: tuple[str, ...] = ()


def get_study(session: Session, study_id: int) -> m.Study:
    study = session.get(m.Study, int(study_id))
    if study is None:
        raise NotFound(f"study {study_id} does not exist; pick a study from the case list")
    return study


def _safe_level(name: str) -> str | None:
    try:
        return level_name(level_id(str(name)))
    except LabelVocabularyError:
        return None


def submitted_calls(session: Session, study_id: int) -> dict[str, dict[str, str]]:
    """Explicit calls of the readers who submitted the study: reader -> level -> call."""
    rows = session.execute(
        select(m.User.username, m.LevelLabel.level, m.LevelLabel.call)
        .join(m.User, m.User.id == m.LevelLabel.reader_id)
        .join(m.Assignment, (m.Assignment.reader_id == m.LevelLabel.reader_id)
              & (m.Assignment.study_id == m.LevelLabel.study_id))
        .where(m.LevelLabel.study_id == study_id,
               m.Assignment.status == m.AssignmentStatus.submitted.value)
    ).all()
    out: dict[str, dict[str, str]] = {}
    for username, level, call in rows:
        out.setdefault(username, {})[level] = call
    return out


def submitted_readers(session: Session, study_id: int) -> list[str]:
    """User names of the readers who submitted the study, sorted."""
    return sorted(session.scalars(
        select(m.User.username).join(m.Assignment, m.Assignment.reader_id == m.User.id)
        .where(m.Assignment.study_id == study_id,
               m.Assignment.status == m.AssignmentStatus.submitted.value)
    ))


def scope_levels(dataset: str, report: Collection[str], explicit: Mapping[str, Mapping[str, str]],
                 mask_levels: Iterable[str] = ()) -> tuple[str, ...]:
    """Levels of a study every submitted reader is taken to have looked at (module docstring)."""
    levels: set[str] = set(report)
    for calls in explicit.values():
        levels.update(calls)
    levels.update(n for n in (_safe_level(x) for x in mask_levels) if n)
    if dataset == "rsna":
        levels.update(CERVICAL)
    return tuple(sorted(levels, key=adj.craniocaudal_key))


def fill_implicit(readers: Iterable[str], explicit: Mapping[str, Mapping[str, str]],
                  scope: Iterable[str]) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Each submitted reader's call on every scope level (unmarked -> not fractured), and the
    levels that were unmarked per reader."""
    levels = list(scope)
    calls: dict[str, dict[str, str]] = {}
    implicit: dict[str, list[str]] = {}
    for reader in readers:
        own = explicit.get(reader, {})
        calls[reader] = {lvl: own.get(lvl, LevelCall.not_fractured.value) for lvl in levels}
        missing = [lvl for lvl in levels if lvl not in own]
        if missing:
            implicit[reader] = missing
    return calls, implicit


def mask_levels(session: Session, study_id: int) -> list[str]:
    """Level names of the study's dataset masks."""
    out: list[str] = []
    for names in session.scalars(
        select(m.Mask.levels).join(m.Series, m.Series.id == m.Mask.series_id)
        .where(m.Series.study_id == study_id, m.Mask.source == "dataset")
    ):
        out.extend(str(n) for n in names or [])
    return out


def latest_prediction(session: Session, study_id: int) -> m.Prediction | None:
    """The study's most recent model run, if any."""
    return session.scalars(
        select(m.Prediction).where(m.Prediction.study_id == study_id)
        .order_by(m.Prediction.created_at.desc(), m.Prediction.id.desc()).limit(1)
    ).first()


def report_labels(session: Session, study_id: int) -> dict[str, bool]:
    report = session.scalars(select(m.Report).where(m.Report.study_id == study_id)).first()
    if report is None:
        return {}
    out: dict[str, bool] = {}
    for key, value in (report.labels or {}).items():
        name = _safe_level(key)
        if name is not None and value is not None:
            out[name] = bool(value)
    return out


def study_inputs(session: Session, study_id: int) -> StudyInputs:
    """Submitted readers' calls (implicit ones filled in), report labels and model probabilities."""
    study = get_study(session, study_id)
    explicit = submitted_calls(session, study.id)
    readers = submitted_readers(session, study.id)
    report = report_labels(session, study.id)
    scope = scope_levels(study.dataset, report, explicit, mask_levels(session, study.id))
    calls, implicit = fill_implicit(readers, explicit, scope)
    probs: dict[str, float] = {}
    model_name = ""
    prediction = latest_prediction(session, study.id)
    if prediction is not None:
        for key, p in (prediction.level_probabilities or {}).items():
            name = _safe_level(key)
            if name is not None and p is not None:
                probs[name] = float(p)
        version = session.get(m.ModelVersion, prediction.model_version_id)
        model_name = f"{version.name} {version.version}" if version is not None else ""
    return StudyInputs(study, calls, implicit, report, probs, model_name, scope)


def study_readers(session: Session, study_id: int) -> set[str]:
    """Everyone who read the study (assigned, drew a box or marked a level): they never vote."""
    assigned = select(m.Assignment.reader_id).where(m.Assignment.study_id == study_id)
    boxed = select(m.Box.reader_id).where(m.Box.study_id == study_id, m.Box.source != "dataset")
    labelled = select(m.LevelLabel.reader_id).where(m.LevelLabel.study_id == study_id)
    ids = assigned.union(boxed, labelled).subquery()
    names = set(session.scalars(select(m.User.username).where(m.User.id.in_(select(ids)))))
    return names - DATASET_READERS


# --------------------------------------------------------------------------------------------
# Dispute state as the pure rules see it
# --------------------------------------------------------------------------------------------


def dispute_votes(session: Session, dispute_id: int) -> list[tuple[m.Vote, str]]:
    return [(v, name) for v, name in session.execute(
        select(m.Vote, m.User.username).join(m.User, m.User.id == m.Vote.voter_id)
        .where(m.Vote.dispute_id == dispute_id).order_by(m.Vote.round, m.Vote.id)
    )]


def dispute_decisions(session: Session, dispute_id: int) -> list[m.Decision]:
    return list(session.scalars(
        select(m.Decision).where(m.Decision.dispute_id == dispute_id).order_by(m.Decision.id)
    ))


def decision_source(dispute: m.Dispute, decision: m.Decision) -> str:
    """How a decision was reached: majority, chair, report, override (kept in dispute details)."""
    info = (dispute.details or {}).get("decisions", {}).get(str(decision.id), {})
    return str(info.get("source", "majority"))


def dispute_state(session: Session, dispute: m.Dispute) -> adj.DisputeState:
    """The dispute's history as :class:`spine_core.adjudication.DisputeState`."""
    kind = adj.DisputeKind(dispute.kind)
    rows = dispute_votes(session, dispute.id)
    votes: tuple[adj.Vote, ...] = ()
    grade_votes: tuple[adj.GradeVote, ...] = ()
    if kind in adj.GRADE_KINDS:
        for v, name in rows:
            grade, morphology = adj.parse_grade_choice(v.choice) or (None, None)
            grade_votes += (adj.GradeVote(name, grade, morphology, v.rationale, v.round),)
    else:
        votes = tuple(adj.Vote(name, adj.parse_choice(v.choice), v.rationale, v.round)
                      for v, name in rows)
    decisions = tuple(
        adj.Decision(d.round, d.fractured, adj.Policy.parse(d.policy), d.reason, d.decided_by,
                     decision_source(dispute, d), d.superseded, d.grade, d.morphology)
        for d in dispute_decisions(session, dispute.id)
    )
    reasons = tuple(str(r.get("reason", "")) for r in (dispute.details or {}).get("reopened", []))
    return adj.DisputeState(dispute.level, kind, adj.DisputeStatus(dispute.status), dispute.round,
                            votes, decisions, reasons, grade_votes)


def chair_for(session: Session, voters: Iterable[str]) -> str | None:
    """The committee chair for a round: a chair who voted in it, else the first active chair."""
    chairs = list(session.scalars(
        select(m.User.username).where(m.User.is_chair.is_(True), m.User.active.is_(True),
                                      m.User.role == Role.adjudicator.value)
        .order_by(m.User.id)
    ))
    voted = set(voters)
    for name in chairs:
        if name in voted:
            return name
    return chairs[0] if chairs else None

