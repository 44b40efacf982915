"""Unique keys of imported rows, so that two imports of one file racing leave one copy.

An imported box carries ``boxes.import_key``: a hash of what identifies the row it came from
(study, reader, slice, corners, fracture). A partial unique index over live boxes
(``uq_boxes_import_key``, migration 0006) lets an ``INSERT … ON CONFLICT DO NOTHING`` add each row
once, whoever inserts it first. Boxes drawn in the app have no key (NULL), so a reader may still
draw two boxes on one slice; a box a reader deletes frees its key, so re-importing the file brings
it back, as before.

:func:`insert_for` gives the ``INSERT`` construct of the session's dialect (PostgreSQL or SQLite),
whose ``on_conflict_do_nothing`` / ``on_conflict_do_update`` behave alike on both.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def box_import_key(study_id: int, reader_id: int, slice_index: int, x: float, y: float,
                   width: float, height: float, fracture: str | None) -> str:
    """The import key of a key box (SHA-256 hex; floats by their exact ``repr``).

    Migration 0006 computes the same text for the boxes imported before it; keep them alike."""
    text = "|".join((str(int(study_id)), str(int(reader_id)), str(int(slice_index)),
                     repr(float(x)), repr(float(y)), repr(float(width)), repr(float(height)),
                     fracture or ""))
    return hashlib.sha256(text.encode()).hexdigest()


def insert_for(session: Session, table: Table | Any) -> Any:
    """``INSERT INTO table`` for the session's database, with ``on_conflict_do_*`` available.

    Raises:
        ValueError: on a database other than PostgreSQL or SQLite.
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"database '{name}' is not supported; use SQLite or PostgreSQL")
