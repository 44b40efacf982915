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
  :func:`try_decide` closes a dispute with the report's label; :func:`override` replaces it with a
  written reason. A level without report label falls back to the committee rules.

The policy in force is stored with every decision.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record, snapshot
from spine_core import adjudication as adj
from spine_core.config import Settings
from spine_core.errors import (
    InputError,
    LabelVocabularyError,
    NotFound,
    PermissionDenied,
    VoteRejected,
)
from spine_core.labels import CERVICAL, level_id, level_name

#: Kinds answered by the readers and the report (one open dispute per level among these).
READER_KINDS = frozenset(
    {adj.DisputeKind.readers_disagree.value, adj.DisputeKind.readers_vs_report.value}
)
MODEL_KIND = adj.DisputeKind.model_vs_final.value
OPEN = m.DisputeStatus.open.value
DECIDED = m.DisputeStatus.decided.value

VOTER_ROLES = frozenset({m.Role.adjudicator.value})
DECIDER_ROLES = frozenset({m.Role.adjudicator.value, m.Role.admin.value})
REPORT_EDITOR_ROLES = frozenset({m.Role.admin.value})
DATASET_READERS = frozenset({"dataset"})


class ActorLike(Protocol):
    """Anything naming a user by id: a ``db.models.User`` or the pages' ``SignedInUser``."""

    @property
    def id(self) -> int: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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


def check_role(user: m.User, roles: frozenset[str], what: str) -> None:
    """Raise PermissionDenied (saying who may ``what``) unless ``user`` has one of ``roles``."""
    if user.role not in roles:
        allowed = " or ".join(sorted(roles))
        raise PermissionDenied(f"only {allowed} users may {what}; you are signed in as {user.role}")


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _flag(level: str, value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", ""):
        text = value.strip().lower()
        return None if text == "" else text in ("1", "true")
    raise InputError(
        f"report label {level}={value!r} is not a yes/no value: use True/False (or 1/0), or "
        "leave the level out when the report does not say"
    )


def _canonical_labels(labels: Mapping[str, object]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for raw, value in labels.items():
        try:
            name = level_name(level_id(str(raw)))
        except LabelVocabularyError as exc:
            raise InputError(f"report labels: {exc}") from None
        flag = _flag(name, value)
        if flag is not None:
            out[name] = flag
    return dict(sorted(out.items(), key=lambda kv: adj.craniocaudal_key(kv[0])))


def set_report(
    session: Session,
    actor: ActorLike,
    study_id: int,
    labels: Mapping[str, object],
    text: str,
    source: str = "manual entry",
    *,
    patient_overall: bool | None = None,
) -> m.Report:
    """Create or replace a study's report: per-level labels, free text and where it came from.

    ``labels`` maps level names (C1..C7, T1.., any case) to True/False; a level mapped to None or
    left out is one the report does not label. A ``patient_overall`` key (or argument) is checked
    against the levels: a fractured level with ``patient_overall`` False is refused. Without it,
    ``patient_overall`` is "any level fractured" (None when no level is labelled).
    Audited as ``report.set``. Call :func:`refresh_disputes` afterwards to re-check the study.

    Raises:
        PermissionDenied: the actor is not an admin.
        NotFound: no such study.
        InputError: an unknown level, a value that is not yes/no, or a contradiction.
    """
    user = load_actor(session, actor)
    check_role(user, REPORT_EDITOR_ROLES, "enter or edit reports")
    study = _study(session, study_id)
    given = dict(labels)
    overall_value = given.pop("patient_overall", patient_overall)
    clean = _canonical_labels(given)
    overall = _flag("patient_overall", overall_value)
    if overall is None and clean:
        overall = any(clean.values())
    if overall is False and any(clean.values()):
        fractured = ", ".join(k for k, v in clean.items() if v)
        raise InputError(
            f"patient_overall is 0 but the report marks {fractured} fractured; correct one of them"
        )
    if not isinstance(text, str):
        raise InputError("the report text must be text (an empty text is allowed)")
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    before = None
    if report is None:
        report = m.Report(study_id=study.id, created_by=user.username)
        session.add(report)
    else:
        before = snapshot(report, ("labels", "patient_overall", "text", "source"))
        if (dict(report.labels or {}), report.patient_overall, report.text, report.source) == (
            clean, overall, text, source
        ):
            return report
    report.labels = clean
    report.patient_overall = overall
    report.text = text
    report.source = source
    session.flush()
    record(session, user.username, "report.set", "study", study.study_uid, before,
           snapshot(report, ("labels", "patient_overall", "text", "source")))
    return report


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


def _study(session: Session, study_id: int) -> m.Study:
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
        calls[reader] = {lvl: own.get(lvl, m.LevelCall.not_fractured.value) for lvl in levels}
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
    study = _study(session, study_id)
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


def _votes(session: Session, dispute_id: int) -> list[tuple[m.Vote, str]]:
    return [(v, name) for v, name in session.execute(
        select(m.Vote, m.User.username).join(m.User, m.User.id == m.Vote.voter_id)
        .where(m.Vote.dispute_id == dispute_id).order_by(m.Vote.round, m.Vote.id)
    )]


def _decisions(session: Session, dispute_id: int) -> list[m.Decision]:
    return list(session.scalars(
        select(m.Decision).where(m.Decision.dispute_id == dispute_id).order_by(m.Decision.id)
    ))


def decision_source(dispute: m.Dispute, decision: m.Decision) -> str:
    """How a decision was reached: majority, chair, report, override (kept in dispute details)."""
    info = (dispute.details or {}).get("decisions", {}).get(str(decision.id), {})
    return str(info.get("source", "majority"))


def dispute_state(session: Session, dispute: m.Dispute) -> adj.DisputeState:
    """The dispute's history as :class:`spine_core.adjudication.DisputeState`."""
    votes = tuple(
        adj.Vote(name, adj.parse_choice(v.choice), v.rationale, v.round)
        for v, name in _votes(session, dispute.id)
    )
    decisions = tuple(
        adj.Decision(d.round, d.fractured, adj.Policy.parse(d.policy), d.reason, d.decided_by,
                     decision_source(dispute, d), d.superseded)
        for d in _decisions(session, dispute.id)
    )
    reasons = tuple(str(r.get("reason", "")) for r in (dispute.details or {}).get("reopened", []))
    return adj.DisputeState(dispute.level, adj.DisputeKind(dispute.kind),
                            adj.DisputeStatus(dispute.status), dispute.round, votes, decisions,
                            reasons)


def _lock_dispute(session: Session, dispute_id: int) -> m.Dispute:
    """The dispute row, locked until the transaction ends (PostgreSQL ``FOR UPDATE``; SQLite
    transactions already hold the write lock), so two votes at once are tallied one after the
    other."""
    dispute = session.scalars(
        select(m.Dispute).where(m.Dispute.id == int(dispute_id)).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if dispute is None:
        raise NotFound(f"dispute {dispute_id} does not exist; reload the dispute queue")
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


def chair_for(session: Session, voters: Iterable[str]) -> str | None:
    """The committee chair for a round: a chair who voted in it, else the first active chair."""
    chairs = list(session.scalars(
        select(m.User.username).where(m.User.is_chair.is_(True), m.User.active.is_(True),
                                      m.User.role == m.Role.adjudicator.value)
        .order_by(m.User.id)
    ))
    voted = set(voters)
    for name in chairs:
        if name in voted:
            return name
    return chairs[0] if chairs else None


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


def _withdraw_or_flag(session: Session, dispute: m.Dispute, actor: str, result: RefreshResult) -> None:
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
           {"reason": "the readers and the report no longer disagree on this level"})
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
            primary, details = out[finding.level]
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
            _withdraw_or_flag(session, dispute, actor, result)
    for level, finding in findings.items():
        details = {**finding.details, "model": inputs.model_name, "kinds": [MODEL_KIND]}
        dispute = models.get(level)
        if dispute is None:
            _open_dispute(session, inputs.study, level, MODEL_KIND, details, finding.priority,
                          actor, result)
        elif dispute.status == OPEN:
            _write_details(session, dispute, details, finding.priority, actor, result)


def decisions_in_force(session: Session, study_id: int) -> dict[str, tuple[m.Dispute, m.Decision]]:
    """Per level, the latest decision not superseded (its dispute decided), if any."""
    rows = session.execute(
        select(m.Dispute, m.Decision).join(m.Decision, m.Decision.dispute_id == m.Dispute.id)
        .where(m.Dispute.study_id == study_id, m.Dispute.status == DECIDED,
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
               before, {"reason": "the level is disputed; its label waits for a decision"})
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
    inputs = study_inputs(session, study_id)
    result = RefreshResult(study_id=inputs.study.id)
    _sync_reader_disputes(session, inputs, actor, result)
    final, ids = _compute_final(session, inputs, policy)
    _sync_model_disputes(session, inputs, settings, final, actor, result)
    _write_final(session, inputs.study, final, ids, actor)
    result.final_labels = dict(final)
    result.open_disputes = _update_status(session, inputs.study, actor)
    result.status = inputs.study.status
    return result


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


def cast_vote(session: Session, actor: ActorLike, dispute_id: int, choice: str | adj.VoteChoice,
              rationale: str, *, settings: Settings | None = None) -> VoteResult:
    """Record an adjudicator's vote, then :func:`try_decide` the dispute.

    Raises:
        PermissionDenied: the voter is not an active adjudicator.
        NotFound: no such dispute.
        VoteRejected: no rationale, the voter read the study, a second vote in this round, or the
            dispute is decided.
        InputError: an unknown choice.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_role(user, VOTER_ROLES, "vote on disputes")
    dispute = _lock_dispute(session, dispute_id)
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
        VoteRejected: the dispute is already decided.
    """
    cfg = _settings(settings)
    user = load_actor(session, actor)
    check_role(user, DECIDER_ROLES, "decide disputes")
    dispute = _lock_dispute(session, dispute_id)
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
    check_role(user, VOTER_ROLES, "override the report")
    dispute = _lock_dispute(session, dispute_id)
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
    check_role(user, DECIDER_ROLES, "reopen disputes")
    dispute = _lock_dispute(session, dispute_id)
    state = adj.reopen(dispute_state(session, dispute), reason=reason, by=user.username)
    before = _dispute_snapshot(dispute)
    superseded = []
    for decision in _decisions(session, dispute.id):
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
    return dispute


# --------------------------------------------------------------------------------------------
# Final labels for exports and metrics
# --------------------------------------------------------------------------------------------


def final_labels_of(session: Session, study_id: int) -> dict[str, bool]:
    """Level -> fractured as exports should use it.

    The stored final labels; for a study never refreshed (e.g. a dataset imported with its own
    labels and no readers) the report's labels, except on levels under an open dispute (those
    wait for a decision).
    """
    labels: dict[str, bool] = {}
    disputed = set(session.scalars(
        select(m.Dispute.level).where(m.Dispute.study_id == study_id, m.Dispute.status == OPEN,
                                      m.Dispute.kind.in_(sorted(READER_KINDS)))
    ))
    for level, value in report_labels(session, study_id).items():
        if level not in disputed:
            labels[level] = value
    for row in session.scalars(select(m.FinalLabel).where(m.FinalLabel.study_id == study_id)):
        labels[row.level] = bool(row.fractured)
    return labels


# --------------------------------------------------------------------------------------------
# `spine disputes list`
# --------------------------------------------------------------------------------------------

LIST_COLUMNS = ("dispute", "StudyInstanceUID", "level", "kind", "status", "round", "priority",
                "votes", "decision", "policy", "opened_at", "closed_at")
LIST_STATUSES = ("open", "decided", "all")


def _list_query(status: str) -> Select[Any]:
    if status not in LIST_STATUSES:
        raise InputError(f"unknown dispute status {status!r}; use one of {', '.join(LIST_STATUSES)}")
    stmt = (select(m.Dispute, m.Study.study_uid).join(m.Study, m.Study.id == m.Dispute.study_id)
            .order_by(m.Dispute.priority, m.Study.study_uid, m.Dispute.id))
    if status != "all":
        stmt = stmt.where(m.Dispute.status == status)
    return stmt


def dispute_rows(session: Session, status: str = "open") -> list[dict[str, str]]:
    """One dict per dispute with the :data:`LIST_COLUMNS` (text values), queue order."""
    rows: list[dict[str, str]] = []
    for dispute, uid in session.execute(_list_query(status)):
        votes = session.scalar(select(func.count()).where(
            m.Vote.dispute_id == dispute.id, m.Vote.round == dispute.round)) or 0
        decision = session.scalars(
            select(m.Decision).where(m.Decision.dispute_id == dispute.id,
                                     m.Decision.superseded.is_(False))
            .order_by(m.Decision.id.desc()).limit(1)
        ).first()
        verdict = policy = ""
        if decision is not None:
            verdict = ("cannot_tell" if decision.fractured is None
                       else "fractured" if decision.fractured else "not_fractured")
            policy = decision.policy
        rows.append({
            "dispute": str(dispute.id), "StudyInstanceUID": uid, "level": dispute.level,
            "kind": dispute.kind, "status": dispute.status, "round": str(dispute.round),
            "priority": str(dispute.priority), "votes": str(votes), "decision": verdict,
            "policy": policy, "opened_at": dispute.opened_at.isoformat(timespec="seconds"),
            "closed_at": dispute.closed_at.isoformat(timespec="seconds") if dispute.closed_at else "",
        })
    return rows


def _rows_for(settings: Settings, status: str) -> list[dict[str, str]]:
    from spine_core.workspace import open_workspace

    _list_query(status)  # refuse a bad status before opening the database
    ws = open_workspace(settings)
    with ws.sessions() as session:
        return dispute_rows(session, status)


def disputes_list_csv(settings: Settings, out_stream: IO[str], status: str = "open") -> int:
    """Write the disputes (``open``, ``decided`` or ``all``) as CSV; returns the number of rows."""
    rows = _rows_for(settings, status)
    writer = csv.DictWriter(out_stream, fieldnames=LIST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return len(rows)


def disputes_list_table(settings: Settings, out_stream: IO[str], status: str = "open") -> int:
    """Write the disputes as an aligned text table for a terminal; returns the number of rows."""
    rows = _rows_for(settings, status)
    columns = [c for c in LIST_COLUMNS if c not in ("priority", "closed_at")]
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    out_stream.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in rows:
        out_stream.write("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + "\n")
    if not rows:
        out_stream.write(f"(no {'' if status == 'all' else status + ' '}disputes)\n")
    return len(rows)


__all__ = [
    "StudyInputs", "RefreshResult", "VoteResult", "load_actor", "set_report", "study_inputs",
    "study_readers", "dispute_state", "refresh_disputes", "refresh_all", "cast_vote", "try_decide",
    "override", "reopen", "final_labels_of", "decisions_in_force", "dispute_rows",
    "disputes_list_csv", "disputes_list_table", "chair_for",
]
