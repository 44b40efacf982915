"""The audit trail: who changed what, when, with the values before and after.

Entries are written in the same transaction as the change they describe, so either both are saved
or neither. ``audit_log`` is append-only: triggers (migration 0002) make the database refuse UPDATE
and DELETE on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from db.models import AuditEntry
from spine_core.errors import InputError


def record(
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: object,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit entry to ``session`` (saved when the session's transaction commits).

    ``action`` is a dotted verb such as ``"user.create"``; ``before``/``after`` hold the changed
    fields. Values are made JSON-safe (datetimes as ISO 8601, enums by value, paths as text).

    Raises:
        InputError: when ``actor``, ``action`` or ``entity`` is empty (every change needs a who
            and a what).
    """
    for name, value in (("actor", actor), ("action", action), ("entity", entity)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"audit entry needs a non-empty {name}, got {value!r}")
    entry = AuditEntry(
        at=dt.datetime.now(dt.UTC),
        actor=actor,
        action=action,
        entity=entity,
        entity_id="" if entity_id is None else str(entity_id),
        before=None if before is None else _jsonable(dict(before)),
        after=None if after is None else _jsonable(dict(after)),
    )
    session.add(entry)
    return entry


def snapshot(obj: object, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The column values of an ORM object (all columns, or only ``fields``), JSON-safe.

    Secrets are never copied: a column named ``password_hash`` is left out.
    """
    mapper = inspect(type(obj))
    names = [c.key for c in mapper.column_attrs] if fields is None else list(fields)
    return {n: _jsonable(getattr(obj, n)) for n in names if n != "password_hash"}


def history(
    session: Session,
    *,
    entity: str | None = None,
    entity_id: object | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit entries, newest first, optionally of one entity / record / actor / action."""
    query = select(AuditEntry)
    if entity is not None:
        query = query.where(AuditEntry.entity == entity)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == str(entity_id))
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    return list(session.scalars(query))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    return str(value)
