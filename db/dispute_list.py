"""`spine disputes list`: the disputes as CSV or as a text table, most urgent first."""

from __future__ import annotations

import csv
from typing import IO, Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db import models as m
from spine_core.config import Settings
from spine_core.errors import InputError

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
