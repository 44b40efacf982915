"""The audit log: entries are written with the change, and the database refuses to alter them."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.models import AuditEntry, Study
from db.session import unit_of_work
from spine_core.errors import InputError


class _Colour(enum.Enum):
    red = "red"


def _one_entry(sessions: sessionmaker[Session]) -> int:
    with unit_of_work(sessions) as session:
        entry = audit.record(session, "admin", "study.edit", "study", 7,
                             before={"status": "new"}, after={"status": "read"})
        session.flush()
        return entry.id


def test_record_stores_who_what_when_and_values(db_sessions: sessionmaker[Session]) -> None:
    with unit_of_work(db_sessions) as session:
        audit.record(
            session, "reader1", "box.add", "box", 3,
            after={"at": dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC),
                   "colour": _Colour.red, "path": Path("a/b"), "levels": {"C2", "C1"}},
        )
    with unit_of_work(db_sessions, readonly=True) as session:
        [entry] = audit.history(session, entity="box", entity_id=3)
    assert (entry.actor, entry.action, entry.entity, entry.entity_id) == (
        "reader1", "box.add", "box", "3")
    assert entry.before is None
    assert entry.after == {"at": "2024-01-02T03:04:00+00:00", "colour": "red", "path": "a/b",
                           "levels": ["C1", "C2"]}
    assert entry.at.tzinfo is not None
    assert abs(entry.at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_record_needs_an_actor(db_sessions: sessionmaker[Session]) -> None:
    with unit_of_work(db_sessions) as session:
        with pytest.raises(InputError, match="actor"):
            audit.record(session, " ", "study.edit", "study", 1)


def test_entry_is_rolled_back_with_its_change(db_sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError):
        with unit_of_work(db_sessions) as session:
            session.add(Study(study_uid="1.2", dataset="rsna"))
            audit.record(session, "admin", "study.create", "study", "1.2")
            session.flush()
            raise RuntimeError("import failed")
    with unit_of_work(db_sessions, readonly=True) as session:
        assert session.scalar(select(func.count(AuditEntry.id))) == 0


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET actor = 'mallory' WHERE id = :id", "DELETE FROM audit_log WHERE id = :id"],
)
def test_database_refuses_update_and_delete(db_sessions: sessionmaker[Session],
                                            statement: str) -> None:
    entry_id = _one_entry(db_sessions)
    with pytest.raises(DBAPIError, match="append-only"):
        with unit_of_work(db_sessions) as session:
            session.execute(text(statement), {"id": entry_id})
    with unit_of_work(db_sessions, readonly=True) as session:
        entry = session.get_one(AuditEntry, entry_id)
        assert entry.actor == "admin"


def test_orm_delete_is_refused_too(db_sessions: sessionmaker[Session]) -> None:
    entry_id = _one_entry(db_sessions)
    with pytest.raises(DBAPIError, match="append-only"):
        with unit_of_work(db_sessions) as session:
            session.delete(session.get_one(AuditEntry, entry_id))
    with unit_of_work(db_sessions, readonly=True) as session:
        assert session.scalar(select(func.count(AuditEntry.id))) == 1


def test_postgresql_refuses_truncate(db_sessions: sessionmaker[Session], db_backend: str) -> None:
    if db_backend != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    _one_entry(db_sessions)
    with pytest.raises(DBAPIError, match="append-only"):
        with unit_of_work(db_sessions) as session:
            session.execute(text("TRUNCATE audit_log"))
