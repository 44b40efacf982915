"""The disputes as rows of text, most urgent first (what `spine disputes list` prints)."""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db import models as m
from spine_core import adjudication as adj
from spine_core.errors import InputError

LIST_COLUMNS = ("dispute", "StudyInstanceUID", "level", "kind", "status", "round", "priority",
                "votes", "decision", "policy", "opened_at", "closed_at")
LIST_STATUSES = ("open", "decided", "all")


def list_query(status: str) -> Select[m.Dispute, str]:
    """(Dispute, study UID) rows with ``status`` ('open', 'decided' or 'all'), most urgent first."""
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
    for dispute, uid in session.execute(list_query(status)):
        votes = session.scalar(select(func.count()).where(
            m.Vote.dispute_id == dispute.id, m.Vote.round == dispute.round)) or 0
        decision = session.scalars(
            select(m.Decision).where(m.Decision.dispute_id == dispute.id,
                                     m.Decision.superseded.is_(False))
            .order_by(m.Decision.id.desc()).limit(1)
        ).first()
        verdict = policy = ""
        if decision is not None:
            verdict = (adj.grade_choice(decision.grade, decision.morphology)
                       if decision.grade is not None
                       else "cannot_tell" if decision.fractured is None
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
