"""Grade disputes, persisted: Genant studies whose readers differ by a grade or more, or whose
reader differs from the dataset's grade, go through the committee like fracture disputes.

The rules live in :mod:`spine_core.adjudication` (``find_grade_disputes``, ``tally_grades``,
``final_grades``); this module loads what they need, calls them and writes the results, audited.
It reuses the ``disputes`` / ``votes`` / ``decisions`` tables:

* a grade dispute is a ``Dispute`` of kind ``grades_disagree`` or ``grades_vs_dataset`` (one open
  per level: the dataset one first, every kind found in ``details["kinds"]``);
* a grade vote is a ``Vote`` whose choice is ``grade_2_wedge``, ``grade_0`` or ``cannot_tell``;
* a decision carries ``grade`` and ``morphology`` (``fractured`` stays None);
* the final grade of each level is a ``FinalGrade`` row with its source (``decision``,
  ``readers``, ``dataset``) and the decision it came from.

Only submitted readers count, and only the levels they graded (Genant readers grade each level
explicitly). Grade disputes are always the committee's (quorum, majority, the chair on a tie),
whatever ``Settings.adjudication_policy`` says for fracture calls: the dataset's grade is one side
of the dispute, not the judge. :func:`db.disputes.refresh_disputes` keeps them up to date for
studies read with Genant grades (``studies.call_scheme == 'genant'``) and for films (the grades
of the readers' vertebra boxes, :mod:`db.film_grades`); reopening goes through
:func:`db.disputes.reopen` like any dispute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import (
    DATASET_READERS,
    DECIDED,
    GRADE_KINDS,
    OPEN,
    ActorLike,
    chair_for,
    dispute_state,
    get_study,
    load_actor,
    study_readers,
)
from db.audit import record
from db.disputes import (
    RefreshResult,
    _dispute_snapshot,
    _has_work,
    _lock_dispute,
    _open_dispute,
    _update_status,
    _withdraw_or_flag,
    _write_details,
)
from spine_core import adjudication as adj
from spine_core.config import Settings
from spine_core.errors import VoteRejected
from spine_core.roles import Permission

GradeCall = tuple[int, str | None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------
# What the rules need
# --------------------------------------------------------------------------------------------


def submitted_grades(session: Session, study_id: int) -> dict[str, dict[str, GradeCall]]:
    """Grades of the readers who submitted the study: reader -> level -> (grade, morphology); on
    a film, the grades of their vertebra boxes (:func:`db.film_grades.film_grades`)."""
    from db.film_reading import is_film_study

    if is_film_study(session, study_id):
        from db.film_grades import film_grades

        return film_grades(session, study_id)
    rows = session.execute(
        select(m.User.username, m.LevelGrade.level, m.LevelGrade.grade, m.LevelGrade.morphology)
        .join(m.User, m.User.id == m.LevelGrade.reader_id)
        .join(m.Assignment, (m.Assignment.reader_id == m.LevelGrade.reader_id)
              & (m.Assignment.study_id == m.LevelGrade.study_id))
        .where(m.LevelGrade.study_id == int(study_id),
               m.Assignment.status == m.AssignmentStatus.submitted.value))
    out: dict[str, dict[str, GradeCall]] = {}
    for name, level, grade, morph in rows:
        if name not in DATASET_READERS:
            out.setdefault(name, {})[level] = (int(grade), morph)
    return out


def dataset_grades(session: Session, study_id: int) -> dict[str, GradeCall]:
    """The dataset's own grades of the study (imported from its genant_grades.csv)."""
    rows = session.execute(
        select(m.LevelGrade.level, m.LevelGrade.grade, m.LevelGrade.morphology)
        .join(m.User, m.User.id == m.LevelGrade.reader_id)
        .where(m.LevelGrade.study_id == int(study_id), m.User.username.in_(sorted(DATASET_READERS))))
    return {level: (int(grade), morph) for level, grade, morph in rows}


def _grade_disputes(session: Session, study_id: int) -> list[m.Dispute]:
    return list(session.scalars(
        select(m.Dispute).where(m.Dispute.study_id == int(study_id),
                                m.Dispute.kind.in_(sorted(GRADE_KINDS))).order_by(m.Dispute.id)))


def grade_decisions_in_force(session: Session, study_id: int
                             ) -> dict[str, tuple[m.Dispute, m.Decision]]:
    """Per level, the latest grade decision not superseded (its dispute decided), if any."""
    rows = session.execute(
        select(m.Dispute, m.Decision).join(m.Decision, m.Decision.dispute_id == m.Dispute.id)
        .where(m.Dispute.study_id == int(study_id), m.Dispute.status == DECIDED,
               m.Dispute.kind.in_(sorted(GRADE_KINDS)), m.Decision.superseded.is_(False))
        .order_by(m.Decision.decided_at, m.Decision.id)).all()
    return {dispute.level: (dispute, decision) for dispute, decision in rows}


# --------------------------------------------------------------------------------------------
# Refresh: disputes and final grades
# --------------------------------------------------------------------------------------------


def sync_grade_disputes(session: Session, study: m.Study, actor: str,
                        result: RefreshResult) -> None:
    """Open, update or withdraw the study's grade disputes (the ids go into ``result``)."""
    findings = adj.find_grade_disputes(submitted_grades(session, study.id),
                                       dataset_grades(session, study.id))
    wanted: dict[str, tuple[adj.DisputeFinding, dict[str, object]]] = {}
    for finding in findings:  # most urgent first
        if finding.level not in wanted:
            wanted[finding.level] = (finding, {**finding.details, "kinds": [finding.kind.value]})
        else:
            details = wanted[finding.level][1]
            kinds = details["kinds"]
            assert isinstance(kinds, list)
            kinds.append(finding.kind.value)
            for key, value in finding.details.items():
                details.setdefault(key, value)
    existing = _grade_disputes(session, study.id)
    why = "the readers' grades (and the dataset's) no longer differ on this level"
    for dispute in existing:
        if dispute.status == OPEN and dispute.level not in wanted:
            _withdraw_or_flag(session, dispute, actor, result, why)
    for level, (finding, details) in wanted.items():
        on_level = [d for d in existing if d.level == level and d.id not in result.withdrawn]
        open_ones = [d for d in on_level if d.status == OPEN]
        same = next((d for d in open_ones if d.kind == finding.kind.value), None)
        for other in open_ones:
            if other is same:
                continue
            if same is None and _has_work(session, other):
                same = other  # keep the committee's work
            else:
                _withdraw_or_flag(session, other, actor, result, why)
        if same is not None:
            _write_details(session, same, dict(details), finding.priority, actor,
                           result)
            continue
        if any(d.status == DECIDED for d in on_level):
            continue  # decided by the committee: only an explicit reopen disputes it again
        _open_dispute(session, study, level, finding.kind.value, dict(details), finding.priority,
                      actor, result)


def compute_final_grades(session: Session, study_id: int
                         ) -> tuple[dict[str, tuple[int, str | None, str]], dict[str, int]]:
    """(level -> (grade, morphology, source), level -> decision id for decided levels)."""
    open_levels = {d.level for d in _grade_disputes(session, study_id) if d.status == OPEN}
    decisions: dict[str, adj.Decision] = {}
    ids: dict[str, int] = {}
    for level, (_dispute, decision) in grade_decisions_in_force(session, study_id).items():
        if level in open_levels:
            continue
        decisions[level] = adj.Decision(decision.round, None, adj.Policy.parse(decision.policy),
                                        decision.reason, decision.decided_by, "decision",
                                        grade=decision.grade, morphology=decision.morphology)
        if decision.grade is not None:
            ids[level] = decision.id
    final = adj.final_grades(submitted_grades(session, study_id), dataset_grades(session, study_id),
                             decisions, open_levels)
    return final, {lvl: i for lvl, i in ids.items() if final.get(lvl, (0, None, ""))[2] == "decision"}


def write_final_grades(session: Session, study: m.Study, actor: str) -> dict[str, tuple[int, str | None, str]]:
    """Store the study's final grades (audited ``final_grade.set`` / ``final_grade.clear``)."""
    final, ids = compute_final_grades(session, study.id)
    rows = {r.level: r for r in session.scalars(
        select(m.FinalGrade).where(m.FinalGrade.study_id == study.id))}
    for level, (grade, morph, source) in final.items():
        after = {"grade": grade, "morphology": morph, "source": source,
                 "decision_id": ids.get(level)}
        row = rows.pop(level, None)
        if row is None:
            session.add(m.FinalGrade(study_id=study.id, level=level, grade=grade, morphology=morph,
                                     source=source, decision_id=ids.get(level), updated_at=_now(),
                                     updated_by=actor))
            record(session, actor, "final_grade.set", "final_grade", f"{study.study_uid}:{level}",
                   None, after)
            continue
        before = {"grade": row.grade, "morphology": row.morphology, "source": row.source,
                  "decision_id": row.decision_id}
        if before != after:
            row.grade, row.morphology, row.source = grade, morph, source
            row.decision_id, row.updated_at, row.updated_by = ids.get(level), _now(), actor
            record(session, actor, "final_grade.set", "final_grade", f"{study.study_uid}:{level}",
                   before, after)
    for level, row in rows.items():
        before = {"grade": row.grade, "morphology": row.morphology, "source": row.source,
                  "decision_id": row.decision_id}
        session.delete(row)
        record(session, actor, "final_grade.clear", "final_grade", f"{study.study_uid}:{level}",
               before, {"reason": "the level's grade is disputed or nothing grades it any more"})
    session.flush()
    return final


def settle_grades_of(session: Session, study_id: int, actor: str) -> None:
    """After a grade decision or a reopen: the study's final grades and status again."""
    study = get_study(session, study_id)
    write_final_grades(session, study, actor)
    _update_status(session, study, actor)


def refresh_grade_disputes(session: Session, study_id: int, settings: Settings, *,
                           actor: str = "system") -> RefreshResult:
    """:func:`db.disputes.refresh_disputes` (which brings grade disputes up to date for a Genant
    study); returns its RefreshResult."""
    from db.disputes import refresh_disputes

    return refresh_disputes(session, study_id, settings, actor=actor)


# --------------------------------------------------------------------------------------------
# Votes and decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeVoteResult:
    """A recorded grade vote and the tally that followed it (``decision_id`` when it decided)."""

    vote_id: int
    outcome: adj.GradeOutcome
    decision_id: int | None = None


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from spine_core.config import load_settings

    return load_settings()


def _grade_dispute(session: Session, dispute_id: int) -> m.Dispute:
    dispute = _lock_dispute(session, dispute_id)
    if dispute.kind not in GRADE_KINDS:
        raise VoteRejected(f"dispute {dispute.id} on {dispute.level} is about fracture calls, not "
                           "grades: vote fractured, not fractured or cannot tell")
    return dispute


def _tally(session: Session, dispute: m.Dispute, settings: Settings) -> adj.GradeOutcome:
    state = dispute_state(session, dispute)
    chair = chair_for(session, (str(v.voter) for v in state.current_grade_votes))
    return adj.tally_grades(state.current_grade_votes, int(settings.quorum), chair)


def _record_decision(session: Session, dispute: m.Dispute, outcome: adj.GradeOutcome,
                     decided_by: str) -> m.Decision:
    state = dispute_state(session, dispute)
    if state.status is not adj.DisputeStatus.open or not outcome.decided:
        raise VoteRejected(f"{state.describe()} cannot be closed: {outcome.reason}")
    before = _dispute_snapshot(dispute)
    decision = m.Decision(dispute_id=dispute.id, round=dispute.round, fractured=None,
                          grade=outcome.grade, morphology=outcome.morphology,
                          policy=outcome.policy.value, reason=outcome.reason,
                          decided_by=decided_by, decided_at=_now(), superseded=False)
    session.add(decision)
    session.flush()
    details = dict(dispute.details or {})
    details["decisions"] = {**details.get("decisions", {}),
                            str(decision.id): {"source": outcome.source, "counts": outcome.counts}}
    dispute.details = details
    dispute.status = DECIDED
    dispute.closed_at = decision.decided_at
    session.flush()
    record(session, decided_by, "decision.record", "decision", decision.id, None, {
        "dispute": dispute.id, "level": dispute.level, "kind": dispute.kind,
        "round": decision.round, "grade": decision.grade, "morphology": decision.morphology,
        "policy": decision.policy, "source": outcome.source, "reason": decision.reason,
        "counts": outcome.counts,
    })
    record(session, decided_by, "dispute.decide", "dispute", dispute.id, before,
           _dispute_snapshot(dispute))
    settle_grades_of(session, dispute.study_id, decided_by)
    return decision


def cast_grade_vote(session: Session, actor: ActorLike, dispute_id: int, grade: int | None,
                    morphology: str | None, rationale: str, *,
                    settings: Settings | None = None) -> GradeVoteResult:
    """Record an adjudicator's grade vote (``grade`` None: cannot tell), then tally the round:
    when it decides, the decision and the level's final grade are written.

    Raises:
        PermissionDenied: the voter is not an active adjudicator.
        NotFound: no such dispute. VoteRejected: a fracture dispute, no rationale, the voter read
            the study, a second vote in this round, or the dispute is decided.
        GenantError (an InputError): a grade outside 0-3 or a morphology on grade 0.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.vote)
    dispute = _grade_dispute(session, dispute_id)
    checked = adj.validate_grade_vote(
        dispute_state(session, dispute),
        adj.GradeVote(user.username, grade, morphology, rationale or ""),
        study_readers=study_readers(session, dispute.study_id))
    vote = m.Vote(dispute_id=dispute.id, round=checked.round, voter_id=user.id,
                  choice=checked.choice, rationale=checked.rationale, created_at=_now())
    session.add(vote)
    session.flush()
    record(session, user.username, "vote.cast", "vote", vote.id, None, {
        "dispute": dispute.id, "level": dispute.level, "round": vote.round,
        "choice": vote.choice, "rationale": vote.rationale,
    })
    outcome = _tally(session, dispute, cfg)
    decision_id = None
    if outcome.decided:
        decision_id = _record_decision(session, dispute, outcome, user.username).id
    return GradeVoteResult(vote.id, outcome, decision_id)


def try_decide_grade(session: Session, actor: ActorLike, dispute_id: int,
                     settings: Settings | None = None) -> adj.GradeOutcome:
    """Close the grade dispute when the votes decide it; the outcome says why or why not.

    Raises:
        PermissionDenied: neither adjudicator nor admin. VoteRejected: a fracture dispute, the
            dispute is decided, or the actor read the study.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.decide)
    dispute = _grade_dispute(session, dispute_id)
    if user.username in study_readers(session, dispute.study_id):
        raise VoteRejected(f"{user.username} read this study and cannot decide its disputes: "
                           "adjudicators must be independent of the readers")
    if dispute.status != OPEN:
        raise VoteRejected(f"the grade dispute on {dispute.level} is already decided: reopen it "
                           "with a reason before deciding again")
    outcome = _tally(session, dispute, cfg)
    if outcome.decided:
        _record_decision(session, dispute, outcome, user.username)
    return outcome


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalGradeView:
    """The final grade of a level and where it came from."""

    level: str
    grade: int
    morphology: str | None
    source: str  # decision | readers | dataset
    decision_id: int | None = None


def final_grades_of(session: Session, study_id: int) -> dict[str, FinalGradeView]:
    """Level -> final grade as exports use it: computed from the readers' grades, the dataset's
    and the decisions in force (so a study never refreshed has its dataset's grades); levels under
    an open grade dispute are left out (see :func:`provisional_grades_of`)."""
    final, ids = compute_final_grades(session, int(study_id))
    return {lvl: FinalGradeView(lvl, g, mo, src, ids.get(lvl)) for lvl, (g, mo, src) in final.items()}


def provisional_grades_of(session: Session, study_id: int
                          ) -> tuple[dict[str, FinalGradeView], list[str]]:
    """:func:`final_grades_of` plus, for each level under an open grade dispute, the dataset's
    grade (source ``provisional``); and the undecided levels, head to feet."""
    final = final_grades_of(session, study_id)
    open_levels = sorted({d.level for d in _grade_disputes(session, study_id) if d.status == OPEN},
                         key=adj.craniocaudal_key)
    truth = dataset_grades(session, study_id)
    for level in open_levels:
        if level in truth and level not in final:
            final[level] = FinalGradeView(level, truth[level][0], truth[level][1], "provisional")
    return final, open_levels


def grade_dispute_levels(session: Session, study_id: int) -> Mapping[str, str]:
    """Level -> status of the study's grade disputes (open wins over decided)."""
    out: dict[str, str] = {}
    for d in _grade_disputes(session, study_id):
        if out.get(d.level) != OPEN:
            out[d.level] = d.status
    return out
