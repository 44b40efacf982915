"""The admin's view of the audit log: filter by actor, action, entity and time; export as CSV.

Read-only (``audit_log`` is append-only anyway). Only admins read it: entries carry before/after
values of every change, readers' calls included.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.access import check_permission
from db.adjudication_inputs import ActorLike, load_actor
from db.models import AuditEntry
from spine_core.csv_safe import safe_dict
from spine_core.errors import InputError
from spine_core.roles import Permission

AUDIT_COLUMNS = ("id", "at", "actor", "action", "entity", "entity_id", "before", "after")
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class AuditFilter:
    """What to keep. ``action`` matches exactly (``vote.cast``) or as a prefix ending in a dot
    (``vote.``); ``since`` is inclusive and ``until`` exclusive (aware datetimes)."""

    actor: str | None = None
    action: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InputError(f"audit filter '{name}' {value} needs a time zone (use UTC)")
        if self.since and self.until and self.until <= self.since:
            raise InputError(
                f"the audit period ends ({self.until:%Y-%m-%d %H:%M}) before it starts "
                f"({self.since:%Y-%m-%d %H:%M}); swap the dates"
            )


def day_range(
    first: dt.date | None, last: dt.date | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """UTC ``since``/``until`` covering whole days ``first`` to ``last`` (both included)."""
    since = dt.datetime.combine(first, dt.time(), dt.UTC) if first else None
    until = (dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
             if last else None)
    return since, until


def _admin(session: Session, viewer: ActorLike) -> None:
    check_permission(load_actor(session, viewer), Permission.read_audit)


def _filtered(stmt: Select[Any], f: AuditFilter) -> Select[Any]:
    if f.actor:
        stmt = stmt.where(AuditEntry.actor == f.actor)
    if f.action:
        if f.action.endswith("."):
            stmt = stmt.where(AuditEntry.action.startswith(f.action, autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == f.action)
    if f.entity:
        stmt = stmt.where(AuditEntry.entity == f.entity)
    if f.entity_id:
        stmt = stmt.where(AuditEntry.entity_id == f.entity_id)
    if f.since is not None:
        stmt = stmt.where(AuditEntry.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEntry.at < f.until)
    return stmt


def search_audit(session: Session, viewer: ActorLike, f: AuditFilter = AuditFilter(), *,
                 limit: int = 500, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """Matching entries, newest first (``limit`` from ``offset``), and how many match in all.

    Raises:
        PermissionDenied: the viewer is not an admin.
        InputError: a limit outside 1..10000 or a negative offset.
    """
    _admin(session, viewer)
    if not 1 <= int(limit) <= MAX_LIMIT or int(offset) < 0:
        raise InputError(f"audit page size must be 1..{MAX_LIMIT} and the offset >= 0")
    total = int(session.scalar(_filtered(select(func.count(AuditEntry.id)), f)) or 0)
    stmt = _filtered(select(AuditEntry), f).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    return list(session.scalars(stmt.limit(int(limit)).offset(int(offset)))), total


def audit_facets(session: Session, viewer: ActorLike) -> dict[str, list[str]]:
    """Distinct actors, actions and entities, for the filter pickers."""
    _admin(session, viewer)
    return {
        name: sorted(v for v in session.scalars(select(column).distinct()) if v)
        for name, column in (("actor", AuditEntry.actor), ("action", AuditEntry.action),
                             ("entity", AuditEntry.entity))
    }


def audit_row(entry: AuditEntry) -> dict[str, str]:
    """An entry as text columns; before/after as compact JSON."""
    def js(value: object) -> str:
        return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    return {
        "id": str(entry.id), "at": entry.at.isoformat(), "actor": entry.actor,
        "action": entry.action, "entity": entry.entity, "entity_id": entry.entity_id,
        "before": js(entry.before), "after": js(entry.after),
    }


def write_audit_csv(entries: Iterable[AuditEntry], out_stream: IO[str]) -> int:
    """Write entries as CSV (:data:`AUDIT_COLUMNS`); returns the number of rows."""
    writer = csv.DictWriter(out_stream, fieldnames=AUDIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for entry in entries:
        writer.writerow(safe_dict(audit_row(entry)))  # no cell a spreadsheet runs as a formula
        n += 1
    return n
