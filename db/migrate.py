"""Run Alembic migrations from code, from any working directory or an installed package.

The Alembic configuration is built here (no ``alembic.ini`` is read): the script location is the
``migrations`` folder beside this file, and the connection comes from :func:`db.session.make_engine`
so migrations run with the same SQLite settings as the app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from db.session import READONLY_OPTION, make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic's `context`/`op` proxies are process-wide: one migration run at a time per process.
# Runs in different processes are serialized by the database (see migrations/env.py).
_ALEMBIC_LOCK = threading.Lock()


def alembic_config() -> Config:
    """An Alembic configuration pointing at this package's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["configure_logger"] = False
    return config


def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder holds no revision"
    return head


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest).

    Safe to call at every start: an up-to-date database is left as it is, and two processes
    upgrading at once are serialized (see ``migrations/env.py``).
    """
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | URL, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (``"base"``: drop everything)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(
                **{READONLY_OPTION: True, "postgresql_readonly": True}
            )
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _run(url: str | URL, action: Callable[[Config], object]) -> None:
    engine = make_engine(url)
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()
