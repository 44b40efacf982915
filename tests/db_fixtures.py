"""Real-database fixtures: a test that takes ``db_url`` runs once on SQLite and once on PostgreSQL.

* ``db_url``: an empty database (a SQLite file in ``tmp_path``, or a fresh PostgreSQL schema with
  a random name, selected through ``search_path`` in the URL and dropped afterwards, so tests can
  run in parallel and leave nothing behind).
* ``migrated_db_url``: the same, upgraded to the newest migration.
* ``db_sessions``: a session factory on a migrated database (engine disposed afterwards).

PostgreSQL comes from ``SPINE_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When it cannot be reached the PostgreSQL variants are skipped, or fail when ``CI`` is set: CI must
never pass without having run them. The PostgreSQL variants carry the ``postgres`` marker
(``pytest -m "not postgres"`` leaves them out).

Registered for every test module through ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.migrate import upgrade
from db.session import make_engine, make_sessionmaker, normalize_url

PG_URL_ENV = "SPINE_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
BACKEND_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def pg_url() -> str:
    """The test server's URL (SQLAlchemy form, psycopg 3 driver)."""
    raw = os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL
    return normalize_url(raw).render_as_string(hide_password=False)


def _libpq_url(url: str) -> str:
    """The URL as libpq (psycopg.connect) wants it: no ``+driver`` suffix."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def _pg_unreachable() -> str | None:
    try:
        with psycopg.connect(_libpq_url(pg_url()), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {make_url(pg_url())!r} is not reachable ({exc})".strip()
    return None


def require_postgres() -> str:
    """The server URL; skips the test when unreachable, or fails it when env ``CI`` is set."""
    reason = _pg_unreachable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests ({PG_URL_ENV})",
                        pytrace=False)
        pytest.skip(f"{reason}; set {PG_URL_ENV} to run the PostgreSQL variants")
    return pg_url()


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """URL of a new, empty database of ``backend``; PostgreSQL schemas are dropped at the end."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'spine.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    server = require_postgres()
    schema = f"spine_test_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq_url(server), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKEND_PARAMS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgresql' (each test runs with both)."""
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database on each backend."""
    with fresh_database(db_backend, tmp_path) as url:
        yield url


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    """URL of a database on each backend, upgraded to the newest migration."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def db_sessions(migrated_db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a migrated database; use it with ``db.session.unit_of_work``."""
    engine = make_engine(migrated_db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def row_counts(url: str) -> dict[str, int]:
    """Rows per table of the database at ``url`` (to show that a refusal wrote nothing)."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            return {t.name: int(s.execute(select(func.count()).select_from(t)).scalar_one())
                    for t in m.Base.metadata.sorted_tables}
    finally:
        engine.dispose()
