"""Engines, sessions and units of work for SQLite and PostgreSQL.

SQLite is set up so that several processes (Streamlit sessions, the CLI, an importer) can write
to one file safely:

* WAL journal mode (readers never block the writer, nor the writer readers), ``synchronous=NORMAL``,
  ``foreign_keys=ON`` and a 10 s ``busy_timeout``.
* SQLAlchemy, not the ``sqlite3`` driver, emits ``BEGIN`` (the recipe of SQLAlchemy's SQLite docs,
  "Transactions with SQLite and the sqlite3 driver"). Transactions start with ``BEGIN IMMEDIATE``,
  which takes the write lock up front: a second writer waits (up to ``busy_timeout``) at its
  ``BEGIN`` instead of failing with "database is locked" when it upgrades a read lock halfway
  through. Read-only units of work (``unit_of_work(..., readonly=True)``) use a plain deferred
  ``BEGIN`` and never wait for writers.

PostgreSQL goes through psycopg 3; ``postgresql://`` and ``postgres://`` URLs are rewritten to
``postgresql+psycopg://``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from spine_core.errors import ConflictError, InputError

#: Connection execution option asking for a read-only transaction (deferred BEGIN on SQLite).
READONLY_OPTION = "spine_readonly"

SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and pick the driver we ship (psycopg 3 for PostgreSQL).

    Raises:
        InputError: when the URL cannot be parsed or names a database we do not support.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception as exc:  # noqa: BLE001 - sqlalchemy.exc.ArgumentError, ValueError, ...: all mean a bad URL
        raise InputError(
            f"database URL {str(url)!r} cannot be parsed ({exc}); expected e.g. "
            "sqlite:///var/spine.db or postgresql://user@host:5432/dbname"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise InputError(
                f"database driver '{parsed.drivername}' is not installed; use "
                "postgresql:// (psycopg 3) instead"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise InputError(
        f"database '{parsed.drivername}' is not supported; use sqlite:///PATH or "
        "postgresql://user@host:port/dbname"
    )


def make_engine(url: str | URL, *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings this app relies on (see the module docstring).

    The parent folder of a SQLite file is created when missing. Extra ``kwargs`` go to
    :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed, echo=echo, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, echo=echo, **kwargs)


def _make_sqlite_engine(url: URL, *, echo: bool, **kwargs: Any) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory and not url.query.get("uri"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    # Sessions may be handed between Streamlit's threads; each connection is used by one at a time.
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, echo=echo, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _on_begin); the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        connection.exec_driver_sql("BEGIN" if options.get(READONLY_OPTION) else "BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(bind: Engine | str | URL) -> sessionmaker[Session]:
    """A session factory bound to an engine (or to a new engine for a URL).

    Objects stay usable after commit (``expire_on_commit=False``): pages show what they just saved
    without a reload; their ``version`` columns still catch later conflicting writes.
    """
    engine = bind if isinstance(bind, Engine) else make_engine(bind)
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(sessions: sessionmaker[Session], *, readonly: bool = False) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back when it raises.

    ``readonly=True`` opens a read-only transaction (deferred BEGIN on SQLite, ``READ ONLY`` on
    PostgreSQL) that never waits for writers and is never committed; flushing a change in it
    raises ``RuntimeError`` (a bug in the caller, who should have asked for a writing unit).

    Raises:
        ConflictError: when a row the block changed was changed by someone else meanwhile (the
            optimistic ``version`` check failed); nothing of the block is saved.
    """
    session = sessions()
    if readonly:
        event.listen(session, "before_flush", _refuse_flush)
        session.connection(
            execution_options={READONLY_OPTION: True, "postgresql_readonly": True}
        )
    try:
        yield session
        if not readonly:
            session.commit()
        # A read-only unit simply ends: close() below releases the transaction without expiring
        # what was loaded, so the caller can still use those objects.
    except StaleDataError as exc:
        session.rollback()
        raise ConflictError(
            "someone else changed this record while you were editing it, so your change was not "
            f"saved; reload it and apply your change again ({exc})"
        ) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError(
        "this unit of work is read-only (unit_of_work(..., readonly=True)) but changes were "
        "flushed; open it without readonly=True to write"
    )
