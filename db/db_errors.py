"""Database errors as one line for people: what the database said, never the SQL or row values.

SQLAlchemy's messages hold the statement and its parameters (a study's UID, a reader's note);
PostgreSQL adds a ``DETAIL`` line with the row's values. Only the driver's first line is kept.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, SQLAlchemyError


def database_said(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message (no SQL, no DETAIL with row values)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    text = str(orig) if orig is not None else type(exc).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first if len(first) <= 160 else first[:157] + "..."


def is_connection_error(exc: SQLAlchemyError) -> bool:
    """True when the database could not be reached or the connection broke (retrying may help)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return type(exc).__name__ in ("OperationalError", "InterfaceError")


def database_refusal(exc: SQLAlchemyError, what: str = "the change") -> str:
    """One line: the database refused ``what``, why in its own words, and that nothing of it was
    saved."""
    kind = type(exc.orig).__name__ if isinstance(exc, DBAPIError) and exc.orig is not None \
        else type(exc).__name__
    if is_connection_error(exc):
        return (f"cannot use the database ({kind}: {database_said(exc)}); check that it is running "
                "and that SPINE_DB_URL / --db point at it, then run the command again")
    return (f"the database refused {what} ({kind}: {database_said(exc)}); nothing of it was "
            "saved — run again with --debug for details and report it if the input looks right")
