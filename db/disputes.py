"""Adjudication, persisted: report labels, disputes, votes, decisions and final labels, audited.

The rules live in :mod:`spine_core.adjudication` (pure functions); this module loads what they
need from the database, calls them, and writes their results with an audit entry for every change
(who, when, before, after). Every function takes an open ``Session`` (the caller owns the
transaction, e.g. ``db.session.unit_of_work``) and checks everything *before* writing, so a refused
action leaves nothing behind.

What counts as a reader's call
------------------------------
Only readers who **submitted** the study count. A submitted reader's explicit level calls are
used as they are; a level in the study's *scope* that the reader did not mark counts as
``not_fractured`` (a reader who submits without marking C3 says C3 is intact; the dispute
``details`` list such calls under ``implicit``). The scope of a study is: the levels its report
labels, the levels any submitted reader called, the levels of its dataset mask, and C1–C7 for
RSNA studies.

One open question per level
---------------------------
Readers disagreeing and readers contradicting the report are two views of one question (is this
level fractured?), so a level has at most one open reader/report dispute: the most urgent kind
(``readers_vs_report`` before ``readers_disagree``), with every kind found listed in
``details["kinds"]``. A level decided by the committee is not disputed again by a refresh; reopen
it with a reason. An open dispute whose disagreement disappeared (a report edit, a late reader) is
withdrawn when nobody voted on it yet, otherwise kept open and flagged
``details["no_longer_disputed"]`` so the committee's work is never thrown away silently.

Model disputes (``Settings.model_dispute_threshold`` > 0) flag levels whose final label came from
the readers or the report, not from a decision, when ``|p - label| >= threshold``.

Policies
--------
* committee: the adjudicators vote; :func:`try_decide` runs after every vote (quorum, majority,
  a tie goes to the chair's vote).
* report: the report's label is the final label while the dispute is open and when it is decided;
  votes are advice, :func:`try_decide` closes a dispute with the report's label and
  :func:`override` replaces it with a written reason. A level without report label falls back to
  the committee rules (and is tried after every vote).

Grade disputes
--------------
A study read with Genant grades (``studies.call_scheme == 'genant'``) also gets grade disputes at
every refresh (:mod:`db.grade_disputes`: kinds ``grades_disagree`` and ``grades_vs_dataset``, voted
on with grades, always decided by the committee, final grades in ``final_grades``). The fracture
functions here refuse grade disputes (:func:`cast_vote`, :func:`try_decide`, :func:`override`);
:func:`reopen` reopens either kind.

The policy in force is stored with every decision. Reading helpers live in
:mod:`db.adjudication_inputs`, report editing in :mod:`db.reports`, the CLI listing in
:mod:`db.dispute_list`; their public names are re-exported here.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import (
    DECIDED,
    GRADE_KINDS,
    MODEL_KIND,
    OPEN,
    READER_KINDS,
    ActorLike,
    StudyInputs,
    chair_for,
    decision_source,
    dispute_decisions,
    dispute_state,
    load_actor,
    report_labels,
    study_inputs,
    study_readers,
)
from db.audit import record, snapshot
from db.reports import set_report
from spine_core import adjudication as adj
from spine_core.config import Settings
from spine_core.errors import NotFound, VoteRejected
from spine_core.roles import Permission

#: Radiographs: a reader's vertebra labels shifted by one level (``db.film_disputes``).
LABELLING_KIND = adj.DisputeKind.labelling.value

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def lock_study(session: Session, study_id: int) -> m.Study:
    """The study row, locked until the transaction ends (PostgreSQL ``FOR UPDATE``; a SQLite
    transaction holds the write lock already): a study's disputes, final labels and status are
    rewritten by one transaction at a time. Always taken before a dispute's lock."""
    study = session.scalars(
        select(m.Study).where(m.Study.id == int(study_id)).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if study is None:
        raise NotFound(f"study {study_id} does not exist; pick a study from the case list")
    return study


def _lock_dispute(session: Session, dispute_id: int) -> m.Dispute:
    """The dispute row, locked after its study's (see :func:`lock_study`), so two votes at once
    are tallied one after the other."""
    study_id = session.scalar(select(m.Dispute.study_id).where(m.Dispute.id == int(dispute_id)))
    if study_id is None:
        raise NotFound(f"dispute {dispute_id} does not exist; reload the dispute queue")
    lock_study(session, study_id)
    dispute = session.scalars(
        select(m.Dispute).where(m.Dispute.id == int(dispute_id)).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if dispute is None:
        raise NotFound(f"dispute {dispute_id} was withdrawn meanwhile; reload the dispute queue")
    return dispute


def _dispute_snapshot(dispute: m.Dispute) -> dict[str, Any]:
    return snapshot(dispute, ("study_id", "level", "kind", "status", "round", "priority", "details"))


def _policy(settings: Settings) -> adj.Policy:
    return adj.Policy.parse(settings.adjudication_policy)


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from spine_core.config import load_settings

    return load_settings()


# --------------------------------------------------------------------------------------------
# Refresh: find disputes, compute final labels, set the study status
# --------------------------------------------------------------------------------------------


@dataclass
class RefreshResult:
    """What :func:`refresh_disputes` changed for one study."""

    study_id: int
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)
    open_disputes: int = 0
    final_labels: dict[str, tuple[bool, str]] = field(default_factory=dict)
    status: str = ""


def _disputes_of(session: Session, study_id: int) -> list[m.Dispute]:
    return list(session.scalars(
        select(m.Dispute).where(m.Dispute.study_id == study_id).order_by(m.Dispute.id)
    ))


def _has_work(session: Session, dispute: m.Dispute) -> bool:
    voted = session.scalar(select(func.count()).where(m.Vote.dispute_id == dispute.id)) or 0
    decided = session.scalar(select(func.count()).where(m.Decision.dispute_id == dispute.id)) or 0
    return bool(voted or decided)


def _withdraw_or_flag(session: Session, dispute: m.Dispute, actor: str, result: RefreshResult,
                      why: str = "the readers and the report no longer disagree on this level"
                      ) -> None:
    """Withdraw a dispute whose disagreement is gone, or flag it when votes were cast on it."""
    if _has_work(session, dispute):
        if not (dispute.details or {}).get("no_longer_disputed"):
            before = _dispute_snapshot(dispute)
            dispute.details = {**(dispute.details or {}), "no_longer_disputed": True}
            session.flush()
            record(session, actor, "dispute.update", "dispute", dispute.id, before,
                   _dispute_snapshot(dispute))
            result.updated.append(dispute.id)
        return
    before = _dispute_snapshot(dispute)
    session.delete(dispute)
    session.flush()
    record(session, actor, "dispute.withdraw", "dispute", dispute.id, before,
           {"reason": why})
    result.withdrawn.append(dispute.id)


def _merge_level_findings(
    findings: list[adj.DisputeFinding], implicit: Mapping[str, list[str]]
) -> dict[str, tuple[adj.DisputeFinding, dict[str, Any]]]:
    """Per level: the most urgent reader/report finding and the details of all found there."""
    out: dict[str, tuple[adj.DisputeFinding, dict[str, Any]]] = {}
    for finding in findings:  # sorted most urgent first
        if finding.kind.value not in READER_KINDS:
            continue
        if finding.level not in out:
            details = dict(finding.details)
            details["kinds"] = [finding.kind.value]
            details["implicit"] = sorted(r for r, lvls in implicit.items() if finding.level in lvls)
            out[finding.level] = (finding, details)
        else:
            _, details = out[finding.level]
            details["kinds"].append(finding.kind.value)
            for key, value in finding.details.items():
                details.setdefault(key, value)
    return out


def _kept_keys(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details written by adjudication (decisions, reopen history), kept across refreshes."""
    return {k: details[k] for k in ("decisions", "reopened") if k in details}


def _write_details(session: Session, dispute: m.Dispute, details: dict[str, Any], priority: int,
                   actor: str, result: RefreshResult) -> None:
    merged = {**details, **_kept_keys(dispute.details or {})}
    if merged == (dispute.details or {}) and dispute.priority == priority:
        return
    before = _dispute_snapshot(dispute)
    dispute.details = merged
    dispute.priority = priority
    session.flush()
    record(session, actor, "dispute.update", "dispute", dispute.id, before, _dispute_snapshot(dispute))
    result.updated.append(dispute.id)


def _open_dispute(session: Session, study: m.Study, level: str, kind: str, details: dict[str, Any],
                  priority: int, actor: str, result: RefreshResult) -> m.Dispute:
    dispute = m.Dispute(study_id=study.id, level=level, kind=kind, status=OPEN, details=details,
                        priority=priority, round=1, opened_at=_now())
    session.add(dispute)
    session.flush()
    record(session, actor, "dispute.open", "dispute", dispute.id, None, _dispute_snapshot(dispute))
    result.opened.append(dispute.id)
    return dispute


def _sync_reader_disputes(session: Session, inputs: StudyInputs, actor: str,
                          result: RefreshResult) -> None:
    findings = adj.find_disputes(inputs.calls, inputs.report)
    wanted = _merge_level_findings(findings, inputs.implicit)
    existing = [d for d in _disputes_of(session, inputs.study.id) if d.kind in READER_KINDS]
    for dispute in existing:
        if dispute.status == OPEN and dispute.level not in wanted:
            _withdraw_or_flag(session, dispute, actor, result)
    for level, (finding, details) in wanted.items():
        on_level = [d for d in existing if d.level == level and d.id not in result.withdrawn]
        open_ones = [d for d in on_level if d.status == OPEN]
        kind = finding.kind.value
        same = next((d for d in open_ones if d.kind == kind), None)
        for other in open_ones:
            if other is same:
                continue
            if same is None and _has_work(session, other):
                same = other  # keep the committee's work: update it instead of opening another
            else:
                _withdraw_or_flag(session, other, actor, result)
        if same is not None:
            _write_details(session, same, details, finding.priority, actor, result)
            continue
        if any(d.status == DECIDED for d in on_level):
            continue  # decided by the committee: only an explicit reopen disputes it again
        _open_dispute(session, inputs.study, level, kind, details, finding.priority, actor, result)


def _sync_model_disputes(session: Session, inputs: StudyInputs, settings: Settings,
                         final: Mapping[str, tuple[bool, str]], actor: str,
                         result: RefreshResult) -> None:
    threshold = float(settings.model_dispute_threshold)
    disputes = _disputes_of(session, inputs.study.id)
    skip = {d.level for d in disputes if d.kind in READER_KINDS and d.status == OPEN}
    skip |= set(decisions_in_force(session, inputs.study.id))
    undecided = {lvl: label for lvl, (label, source) in final.items()
                 if source in ("readers", "report") and lvl not in skip}
    findings: dict[str, adj.DisputeFinding] = {}
    if threshold > 0 and inputs.model_probs:
        rules = adj.DisputeRules(model_vs_final=True, model_threshold=threshold)
        for f in adj.find_disputes({}, None, inputs.model_probs, undecided, rules):
            findings[f.level] = f
    models = {d.level: d for d in disputes if d.kind == MODEL_KIND}
    for level, dispute in models.items():
        if dispute.status == OPEN and level not in findings:
            _withdraw_or_flag(session, dispute, actor, result,
                              "the model no longer contradicts the final label")
    for level, finding in findings.items():
        details = {**finding.details, "model": inputs.model_name, "kinds": [MODEL_KIND]}
        current = models.get(level)
        if current is None:
            _open_dispute(session, inputs.study, level, MODEL_KIND, details, finding.priority,
                          actor, result)
        elif current.status == OPEN:
            _write_details(session, current, details, finding.priority, actor, result)


def decisions_in_force(session: Session, study_id: int) -> dict[str, tuple[m.Dispute, m.Decision]]:
    """Per level, the latest fracture decision not superseded (its dispute decided), if any
    (grade decisions: :func:`db.grade_disputes.grade_decisions_in_force`)."""
    rows = session.execute(
        select(m.Dispute, m.Decision).join(m.Decision, m.Decision.dispute_id == m.Dispute.id)
        .where(m.Dispute.study_id == study_id, m.Dispute.status == DECIDED,
               m.Dispute.kind.not_in(sorted(GRADE_KINDS | {LABELLING_KIND})),
               m.Decision.superseded.is_(False))
        .order_by(m.Decision.decided_at, m.Decision.id)
    ).all()
    out: dict[str, tuple[m.Dispute, m.Decision]] = {}
    for dispute, decision in rows:
        out[dispute.level] = (dispute, decision)
    return out


def _compute_final(session: Session, inputs: StudyInputs, policy: adj.Policy
                   ) -> tuple[dict[str, tuple[bool, str]], dict[str, int]]:
    disputes = _disputes_of(session, inputs.study.id)
    open_reader_levels = {d.level for d in disputes if d.kind in READER_KINDS and d.status == OPEN}
    in_force = decisions_in_force(session, inputs.study.id)
    core: dict[str, adj.Decision] = {}
    ids: dict[str, int] = {}
    for level, (dispute, decision) in in_force.items():
        if level in open_reader_levels:
            continue
        core[level] = adj.Decision(decision.round, decision.fractured, adj.Policy.parse(decision.policy),
                                   decision.reason, decision.decided_by,
                                   decision_source(dispute, decision))
        if decision.fractured is not None:
            ids[level] = decision.id
    final = adj.final_labels(inputs.report, inputs.calls, core, policy)
    from_decision = {lvl for lvl, (_, source) in final.items() if source in ("decision", "report")}
    return final, {lvl: i for lvl, i in ids.items() if lvl in from_decision}


def _write_final(session: Session, study: m.Study, final: Mapping[str, tuple[bool, str]],
                 decision_ids: Mapping[str, int], actor: str) -> None:
    rows = {r.level: r for r in session.scalars(
        select(m.FinalLabel).where(m.FinalLabel.study_id == study.id))}
    for level, (fractured, source) in final.items():
        decision_id = decision_ids.get(level)
        row = rows.pop(level, None)
        after = {"fractured": fractured, "source": source, "decision_id": decision_id}
        if row is None:
            session.add(m.FinalLabel(study_id=study.id, level=level, fractured=fractured,
                                     source=source, decision_id=decision_id, updated_at=_now(),
                                     updated_by=actor))
            record(session, actor, "final_label.set", "final_label", f"{study.study_uid}:{level}",
                   None, after)
            continue
        before = {"fractured": row.fractured, "source": row.source, "decision_id": row.decision_id}
        if before != after:
            row.fractured, row.source, row.decision_id = fractured, source, decision_id
            row.updated_at, row.updated_by = _now(), actor
            record(session, actor, "final_label.set", "final_label", f"{study.study_uid}:{level}",
                   before, after)
    for level, row in rows.items():
        before = {"fractured": row.fractured, "source": row.source, "decision_id": row.decision_id}
        session.delete(row)
        record(session, actor, "final_label.clear", "final_label", f"{study.study_uid}:{level}",
               before, {"reason": "the level is disputed or nothing labels it any more"})
    session.flush()


def _count_open(session: Session, study_id: int) -> int:
    return int(session.scalar(
        select(func.count()).where(m.Dispute.study_id == study_id, m.Dispute.status == OPEN)
    ) or 0)


def _update_status(session: Session, study: m.Study, actor: str) -> int:
    n_open = _count_open(session, study.id)
    status = study.status
    if n_open:
        status = m.StudyStatus.in_adjudication.value
    elif study.status in (m.StudyStatus.in_adjudication.value, m.StudyStatus.read.value):
        status = m.StudyStatus.final.value
    if status != study.status:
        before = {"status": study.status}
        study.status = status
        session.flush()
        record(session, actor, "study.status", "study", study.study_uid, before,
               {"status": status, "open_disputes": n_open})
    return n_open


def _settle_study(session: Session, study_id: int, settings: Settings, actor: str) -> RefreshResult:
    """Recompute final labels and the study status after a decision, a reopen or a refresh."""
    inputs = study_inputs(session, study_id)
    final, ids = _compute_final(session, inputs, _policy(settings))
    _write_final(session, inputs.study, final, ids, actor)
    result = RefreshResult(study_id=inputs.study.id, final_labels=dict(final))
    result.open_disputes = _update_status(session, inputs.study, actor)
    result.status = inputs.study.status
    return result


def refresh_disputes(session: Session, study_id: int, settings: Settings, *,
                     actor: str = "system") -> RefreshResult:
    """Bring a study's disputes, final labels and status up to date with its readers and report.

    Idempotent: a second call with nothing changed writes nothing. Details of open disputes are
    updated (audited as ``dispute.update``); see the module docstring for withdrawn disputes,
    implicit calls and model disputes.

    Raises:
        NotFound: no such study.
        InputError: a bad policy name or model threshold in ``settings``.
    """
    policy = _policy(settings)
    lock_study(session, study_id)
    inputs = study_inputs(session, study_id)
    result = RefreshResult(study_id=inputs.study.id)
    _sync_reader_disputes(session, inputs, actor, result)
    final, ids = _compute_final(session, inputs, policy)
    _sync_model_disputes(session, inputs, settings, final, actor, result)
    _write_final(session, inputs.study, final, ids, actor)
    result.final_labels = dict(final)
    from db.film_reading import is_film_study

    film = is_film_study(session, inputs.study.id)
    if film:  # radiographs: a shifted vertebra labelling (first: the films' grades follow it)
        from db.film_disputes import sync_labelling_dispute

        sync_labelling_dispute(session, inputs.study, actor, result)
    if film or inputs.study.call_scheme == "genant" or any(
            d.kind in GRADE_KINDS for d in _disputes_of(session, inputs.study.id)):
        from db import grade_disputes

        grade_disputes.sync_grade_disputes(session, inputs.study, actor, result)
        grade_disputes.write_final_grades(session, inputs.study, actor)
    result.open_disputes = _update_status(session, inputs.study, actor)
    result.status = inputs.study.status
    return result


def save_report(session: Session, actor: ActorLike, study_id: int, labels: Mapping[str, object],
                text: str, source: str, settings: Settings) -> RefreshResult:
    """Store a study's report (:func:`db.reports.set_report`) and bring its disputes up to date
    with it; returns what the refresh opened and closed."""
    user = load_actor(session, actor)
    set_report(session, user, study_id, labels, text, source)
    return refresh_disputes(session, study_id, settings, actor=user.username)


def refresh_all(session: Session, settings: Settings, *, actor: str = "system") -> list[RefreshResult]:
    """:func:`refresh_disputes` for every study whose readers all submitted (or already in
    adjudication / final)."""
    ready = (m.StudyStatus.read.value, m.StudyStatus.in_adjudication.value, m.StudyStatus.final.value)
    ids = session.scalars(select(m.Study.id).where(m.Study.status.in_(ready)).order_by(m.Study.id))
    return [refresh_disputes(session, sid, settings, actor=actor) for sid in list(ids)]


# --------------------------------------------------------------------------------------------
# Votes, decisions, overrides, reopening
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteResult:
    """A recorded vote and the tally that followed it (``decision_id`` when it closed the dispute)."""

    vote_id: int
    outcome: adj.Outcome
    decision_id: int | None = None


def _record_decision(session: Session, dispute: m.Dispute, outcome: adj.Outcome, decided_by: str,
                     settings: Settings) -> m.Decision:
    state = dispute_state(session, dispute)
    adj.record_decision(state, outcome, decided_by=decided_by)  # refuses closed/undecided
    before = _dispute_snapshot(dispute)
    decision = m.Decision(dispute_id=dispute.id, round=dispute.round, fractured=outcome.fractured,
                          policy=outcome.policy.value, reason=outcome.reason, decided_by=decided_by,
                          decided_at=_now(), superseded=False)
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
        "round": decision.round, "fractured": decision.fractured, "policy": decision.policy,
        "source": outcome.source, "reason": decision.reason, "counts": outcome.counts,
    })
    record(session, decided_by, "dispute.decide", "dispute", dispute.id, before,
           _dispute_snapshot(dispute))
    _settle_study(session, dispute.study_id, settings, decided_by)
    return decision


def _tally(session: Session, dispute: m.Dispute, settings: Settings, decided_by: str,
           override: adj.Override | None = None) -> adj.Outcome:
    state = dispute_state(session, dispute)
    chair = chair_for(session, (str(v.voter) for v in state.current_votes))
    report = report_labels(session, dispute.study_id).get(dispute.level)
    _, outcome = adj.settle(state, _policy(settings), int(settings.quorum), chair,
                            decided_by=decided_by, report=report, override=override)
    return outcome


def _refuse_grade_dispute(dispute: m.Dispute) -> None:
    if dispute.kind in GRADE_KINDS:
        raise VoteRejected(f"the dispute on {dispute.level} is about its Genant grade: decide it "
                           "with grade votes (db.grade_disputes)")
    if dispute.kind == LABELLING_KIND:
        raise VoteRejected("this dispute is about the vertebra labels of a film: decide it by "
                           "choosing the reader whose labelling is right")


def cast_vote(session: Session, actor: ActorLike, dispute_id: int, choice: str | adj.VoteChoice,
              rationale: str, *, settings: Settings | None = None) -> VoteResult:
    """Record an adjudicator's vote, then :func:`try_decide` the dispute (committee policy, or a
    level the report does not label; under the report policy the report stands until someone
    accepts or overrides it, and votes are advice).

    Raises:
        PermissionDenied: the voter is not an active adjudicator.
        NotFound: no such dispute.
        VoteRejected: no rationale, the voter read the study, a second vote in this round, or the
            dispute is decided.
        InputError: an unknown choice.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.vote)
    dispute = _lock_dispute(session, dispute_id)
    if dispute.kind == LABELLING_KIND:
        _refuse_grade_dispute(dispute)
    state = dispute_state(session, dispute)
    checked = adj.validate_vote(
        state, adj.Vote(user.username, adj.parse_choice(choice), rationale or ""),
        study_readers=study_readers(session, dispute.study_id),
    )
    _policy(cfg)  # a bad policy setting fails before anything is written
    vote = m.Vote(dispute_id=dispute.id, round=checked.round, voter_id=user.id,
                  choice=checked.choice.value, rationale=checked.rationale, created_at=_now())
    session.add(vote)
    session.flush()
    record(session, user.username, "vote.cast", "vote", vote.id, None, {
        "dispute": dispute.id, "level": dispute.level, "round": vote.round,
        "choice": vote.choice, "rationale": vote.rationale,
    })
    policy = _policy(cfg)
    reported = report_labels(session, dispute.study_id).get(dispute.level)
    if policy is adj.Policy.REPORT_DECIDES and reported is not None:
        # The report stands; votes advise whoever accepts it (try_decide) or overrides it.
        counts = Counter(v.choice.value for v in dispute_state(session, dispute).current_votes)
        word = "fractured" if reported else "not fractured"
        outcome = adj.Outcome(
            False, None,
            f"under the report policy the report's label ({word}) stands: accept it (decide) or "
            "override it with a written reason", policy, "pending",
            {c.value: counts.get(c.value, 0) for c in adj.VoteChoice})
        return VoteResult(vote.id, outcome, None)
    outcome = _tally(session, dispute, cfg, user.username)
    decision_id = None
    if outcome.decided:
        decision_id = _record_decision(session, dispute, outcome, user.username, cfg).id
    return VoteResult(vote.id, outcome, decision_id)


def try_decide(session: Session, actor: ActorLike, dispute_id: int,
               settings: Settings | None = None) -> adj.Outcome:
    """Close the dispute when the policy in force decides it; the outcome says why or why not.

    Committee: quorum, then majority, a tie goes to the chair's vote. Report: the report's label
    (a level the report does not label falls back to the committee rules).

    Raises:
        PermissionDenied: the actor is neither adjudicator nor admin.
        VoteRejected: the dispute is already decided, or the actor read the study.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.decide)
    dispute = _lock_dispute(session, dispute_id)
    _refuse_grade_dispute(dispute)
    if user.username in study_readers(session, dispute.study_id):
        raise VoteRejected(
            f"{user.username} read this study and cannot decide its disputes: adjudicators must "
            "be independent of the readers"
        )
    outcome = _tally(session, dispute, cfg, user.username)
    if outcome.decided:
        _record_decision(session, dispute, outcome, user.username, cfg)
    return outcome


def override(session: Session, actor: ActorLike, dispute_id: int, fractured: bool, reason: str,
             *, settings: Settings | None = None) -> m.Decision:
    """Replace the report's label on a disputed level (report policy), with a written reason.

    Raises:
        PermissionDenied: the actor is not an adjudicator.
        VoteRejected: no reason, the committee policy is in force, the dispute is decided (reopen
            it first), or the actor read the study.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.override_report)
    dispute = _lock_dispute(session, dispute_id)
    _refuse_grade_dispute(dispute)
    state = dispute_state(session, dispute)
    if user.username in study_readers(session, dispute.study_id):
        raise VoteRejected(
            f"{user.username} read this study and cannot override its {state.describe()}: "
            "adjudicators must be independent of the readers"
        )
    outcome = _tally(session, dispute, cfg, user.username,
                     adj.Override(user.username, fractured, reason))
    decision = _record_decision(session, dispute, outcome, user.username, cfg)
    record(session, user.username, "decision.override", "decision", decision.id,
           {"report": report_labels(session, dispute.study_id).get(dispute.level)},
           {"fractured": fractured, "reason": reason.strip()})
    return decision


def reopen(session: Session, actor: ActorLike, dispute_id: int, reason: str, *,
           settings: Settings | None = None) -> m.Dispute:
    """Start a new voting round on a decided dispute; its decision is superseded but kept.

    Raises:
        PermissionDenied: the actor is neither adjudicator nor admin.
        VoteRejected: the dispute is open, or no reason is given.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_permission(user, Permission.reopen_disputes)
    dispute = _lock_dispute(session, dispute_id)
    state = adj.reopen(dispute_state(session, dispute), reason=reason, by=user.username)
    before = _dispute_snapshot(dispute)
    superseded = []
    for decision in dispute_decisions(session, dispute.id):
        if not decision.superseded:
            decision.superseded = True
            superseded.append(decision.id)
    details = dict(dispute.details or {})
    details["reopened"] = [*details.get("reopened", []), {
        "by": user.username, "reason": reason.strip(), "at": _now().isoformat(),
        "round": state.round,
    }]
    dispute.details = details
    dispute.status = OPEN
    dispute.round = state.round
    dispute.closed_at = None
    session.flush()
    record(session, user.username, "dispute.reopen", "dispute", dispute.id, before,
           {**_dispute_snapshot(dispute), "reason": reason.strip(), "superseded": superseded})
    _settle_study(session, dispute.study_id, cfg, user.username)
    if dispute.kind in GRADE_KINDS:
        from db.grade_disputes import settle_grades_of

        settle_grades_of(session, dispute.study_id, user.username)
    return dispute


# --------------------------------------------------------------------------------------------
# Final labels for exports and metrics
# --------------------------------------------------------------------------------------------


def undecided_levels_of(session: Session, study_id: int) -> set[str]:
    """Levels under an open reader/report dispute: their label waits for the committee.

    (An open model dispute questions a label that exists, so it leaves its level decided.)
    """
    return set(session.scalars(
        select(m.Dispute.level).where(m.Dispute.study_id == study_id, m.Dispute.status == OPEN,
                                      m.Dispute.kind.in_(sorted(READER_KINDS)))
    ))


def final_labels_of(session: Session, study_id: int) -> dict[str, bool]:
    """Level -> fractured as exports should use it.

    The stored final labels; for a study never refreshed (e.g. a dataset imported with its own
    labels and no readers) the report's labels, except on levels under an open dispute (those
    wait for a decision).
    """
    labels: dict[str, bool] = {}
    disputed = undecided_levels_of(session, study_id)
    for level, value in report_labels(session, study_id).items():
        if level not in disputed:
            labels[level] = value
    for row in session.scalars(select(m.FinalLabel).where(m.FinalLabel.study_id == study_id)):
        labels[row.level] = bool(row.fractured)
    return labels


def provisional_labels_of(session: Session, study_id: int) -> dict[str, bool]:
    """:func:`final_labels_of`, with each undecided level (:func:`undecided_levels_of`) labelled
    as the report policy labels a level while its dispute is open (``adj.final_labels``): the
    report's label, unless every reader now agrees with a report that is silent or says the same.
    An undecided level that neither labels stays out.

    For exports that ask for undecided studies too; the committee may still decide otherwise.
    """
    labels = final_labels_of(session, study_id)
    undecided = undecided_levels_of(session, study_id)
    if not undecided:
        return labels
    provisional, _ = _compute_final(session, study_inputs(session, study_id),
                                    adj.Policy.REPORT_DECIDES)
    for level in undecided:
        if level in provisional:
            labels[level] = provisional[level][0]
    return labels
