"""Alembic migrations on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.models import Base
from db.session import make_engine

#: The newest revision (db/migrations/versions/).
HEAD = "0011"


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table(db_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the migrations are found from any working directory
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() == HEAD
    assert _tables(db_url) == set(Base.metadata.tables) | {"alembic_version"}


def test_migrated_schema_matches_the_models(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_reverses_it(migrated_db_url: str) -> None:
    upgrade(migrated_db_url)
    assert current_revision(migrated_db_url) == HEAD
    downgrade(migrated_db_url, "base")
    assert current_revision(migrated_db_url) is None
    assert _tables(migrated_db_url) == {"alembic_version"}
    upgrade(migrated_db_url, "0001")
    assert current_revision(migrated_db_url) == "0001"
    upgrade(migrated_db_url)
    assert current_revision(migrated_db_url) == HEAD


def test_concurrent_upgrades_from_two_processes_apply_each_revision_once(db_url: str) -> None:
    """The app and the CLI starting together must not both create the tables."""
    script = "import sys; from db.migrate import upgrade; upgrade(sys.argv[1])"
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, db_url], cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert current_revision(db_url) == HEAD


def test_concurrent_upgrades_from_two_threads(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(db_url)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(db_url) == HEAD
