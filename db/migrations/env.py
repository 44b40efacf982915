"""Alembic environment: runs migrations on a connection made by :func:`db.session.make_engine`.

``db.migrate.upgrade`` hands a ready connection in ``config.attributes["connection"]``; the
``alembic`` command line gets its URL from ``-x url=...``, ``SPINE_DB_URL`` or ``sqlalchemy.url``.
All migrations of one run share one transaction (SQLite's DDL is transactional too once SQLAlchemy
emits BEGIN), and concurrent runs are serialized: by SQLite's write lock, or by a PostgreSQL
advisory lock keyed by the schema, so two processes starting at once cannot both apply a revision.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from db.models import Base
from db.session import make_engine

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("SPINE_DB_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit(
            "no database URL: pass -x url=sqlite:///var/spine.db, set SPINE_DB_URL, "
            "or set sqlalchemy.url in alembic.ini"
        )
    return url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        transactional_ddl=True,
        render_as_batch=dialect.startswith("sqlite"),
        compare_type=True,
        literal_binds=connection is None,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "SELECT pg_advisory_xact_lock("
                    "hashtext('spinereview-migrations:' || current_schema()))"
                )
            )
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
