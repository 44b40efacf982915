"""Engines, units of work and optimistic concurrency, on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Series, Study
from db.session import make_engine, make_sessionmaker, normalize_url, unit_of_work
from spine_core.errors import ConflictError, InputError
from tests.db_fixtures import fresh_database


def _add_study(sessions: sessionmaker[Session], uid: str = "1.2.3") -> int:
    with unit_of_work(sessions) as session:
        study = Study(study_uid=uid, dataset="rsna")
        session.add(study)
        session.flush()
        return study.id


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///var/spine.db", "sqlite"),
    ],
)
def test_urls_pick_the_installed_drivers(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"])
def test_unsupported_urls_are_refused_with_advice(bad: str) -> None:
    with pytest.raises(InputError, match="sqlite|postgresql"):
        normalize_url(bad)


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'spine.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        engine.dispose()
    assert (tmp_path / "sub" / "spine.db").exists()


def test_foreign_keys_are_enforced(db_sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError):
        with unit_of_work(db_sessions) as session:
            session.add(Series(study_id=999, series_uid="9.9", source_format="dicom",
                               source_dir="x", shape=[1, 1, 1], affine=[], fingerprint="f"))


def test_unit_of_work_commits_or_rolls_back(db_sessions: sessionmaker[Session]) -> None:
    _add_study(db_sessions, "1.1")
    with pytest.raises(ValueError, match="boom"):
        with unit_of_work(db_sessions) as session:
            session.add(Study(study_uid="1.2", dataset="rsna"))
            session.flush()
            raise ValueError("boom")
    with unit_of_work(db_sessions, readonly=True) as session:
        assert session.scalars(select(Study.study_uid)).all() == ["1.1"]


def test_readonly_unit_refuses_writes(db_sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="read-only"):
        with unit_of_work(db_sessions, readonly=True) as session:
            session.add(Study(study_uid="1.3", dataset="rsna"))
            session.flush()
    with unit_of_work(db_sessions, readonly=True) as session:
        assert session.scalar(select(func.count(Study.id))) == 0


def test_stale_edit_of_a_detached_row_is_a_conflict(db_sessions: sessionmaker[Session]) -> None:
    """A page loads a row, someone else saves it, the page saves its copy: the second loses."""
    study_id = _add_study(db_sessions)
    with unit_of_work(db_sessions) as session:
        mine = session.get_one(Study, study_id)
    with unit_of_work(db_sessions) as session:
        session.get_one(Study, study_id).status = "in_reading"
    mine.status = "final"
    with pytest.raises(ConflictError, match="someone else changed"):
        with unit_of_work(db_sessions) as session:
            session.merge(mine)
    with unit_of_work(db_sessions, readonly=True) as session:
        saved = session.get_one(Study, study_id)
        assert (saved.status, saved.version) == ("in_reading", 2)


@pytest.mark.postgres
def test_two_open_transactions_editing_one_row_conflict(tmp_path: Path) -> None:
    """PostgreSQL lets two writers hold transactions at once; the version check stops the second."""
    with fresh_database("postgresql", tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            sessions = make_sessionmaker(engine)
            study_id = _add_study(sessions)
            both_loaded = threading.Barrier(2, timeout=10)
            first_saved = threading.Event()
            outcome: dict[str, BaseException | None] = {}

            def edit(name: str) -> None:
                try:
                    with unit_of_work(sessions) as session:
                        study = session.get_one(Study, study_id)
                        both_loaded.wait()
                        if name == "second":
                            assert first_saved.wait(10)
                        study.description = name
                    outcome[name] = None
                except BaseException as exc:  # noqa: BLE001 - checked below
                    outcome[name] = exc
                finally:
                    if name == "first":
                        first_saved.set()

            threads = [threading.Thread(target=edit, args=(n,)) for n in ("first", "second")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert outcome["first"] is None
            assert isinstance(outcome["second"], ConflictError)
            with unit_of_work(sessions, readonly=True) as session:
                assert session.get_one(Study, study_id).description == "first"
        finally:
            engine.dispose()


def test_concurrent_sqlite_writers_serialize(tmp_path: Path) -> None:
    """Two engines (as two processes would) read-modify-write one row: no lost update, no lock error.

    With deferred BEGIN both would read, then the second to write would fail at once with
    "database is locked" (its snapshot is stale); BEGIN IMMEDIATE makes it wait its turn.
    """
    url = f"sqlite:///{tmp_path / 'spine.db'}"
    upgrade(url)
    engines = [make_engine(url) for _ in range(2)]
    study_id = _add_study(make_sessionmaker(engines[0]))
    errors: list[BaseException] = []
    rounds = 15

    def work(engine_index: int) -> None:
        sessions = make_sessionmaker(engines[engine_index])
        try:
            for _ in range(rounds):
                with unit_of_work(sessions) as session:
                    study = session.get_one(Study, study_id)
                    seen = study.n_slices
                    time.sleep(0.002)  # widen the window between read and write
                    study.n_slices = seen + 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with unit_of_work(make_sessionmaker(engines[0]), readonly=True) as session:
            assert session.get_one(Study, study_id).n_slices == 2 * rounds
    finally:
        for engine in engines:
            engine.dispose()


def test_database_errors_surface_unchanged(db_sessions: sessionmaker[Session]) -> None:
    _add_study(db_sessions, "1.5")
    with pytest.raises(DBAPIError):
        with unit_of_work(db_sessions) as session:
            session.add(Study(study_uid="1.5", dataset="rsna"))
