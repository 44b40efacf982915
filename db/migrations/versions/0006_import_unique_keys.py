"""Unique keys of imported rows, so that concurrent imports leave exactly one copy.

* ``boxes.import_key``: the hash of the CSV row an imported key box came from (``db.import_keys``),
  NULL for boxes drawn in the app; unique among live boxes (partial index ``uq_boxes_import_key``,
  ``WHERE deleted_at IS NULL``), so ``INSERT … ON CONFLICT DO NOTHING`` adds each row once;
* index ``uq_masks_series_dataset``: one dataset mask per series (``WHERE source = 'dataset'``).

Databases written before this revision may hold copies made by two imports racing. They are
de-duplicated here, nothing is lost: of live imported key boxes with one key (and of live
interpolated boxes of one fracture and slice) the oldest row stays, the others are soft-deleted
(``deleted_at``) with one ``box.dedupe`` audit entry each naming the row kept; of several dataset
masks of one series the oldest row stays (the files are not touched). Then the kept imported boxes
get their keys.

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration 0006"
_BATCH = 1000

_boxes = sa.table(
    "boxes", sa.column("id", sa.Integer), sa.column("deleted_at", sa.DateTime(timezone=True)),
    sa.column("import_key", sa.String(64)),
)
_audit = sa.table(
    "audit_log", sa.column("at", sa.DateTime(timezone=True)), sa.column("actor", sa.String(64)),
    sa.column("action", sa.String(64)), sa.column("entity", sa.String(32)),
    sa.column("entity_id", sa.String(128)), sa.column("before", sa.JSON),
    sa.column("after", sa.JSON),
)


def _key(study_id: int, reader_id: int, slice_index: int, x: float, y: float, width: float,
         height: float, fracture: str | None) -> str:
    """As db.import_keys.box_import_key at this revision."""
    text = "|".join((str(int(study_id)), str(int(reader_id)), str(int(slice_index)),
                     repr(float(x)), repr(float(y)), repr(float(width)), repr(float(height)),
                     fracture or ""))
    return hashlib.sha256(text.encode()).hexdigest()


def _now(conn: sa.Connection) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(tzinfo=None) if conn.dialect.name == "sqlite" else now


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + _BATCH] for i in range(0, len(items), _BATCH)]


def _dedupe_boxes(conn: sa.Connection) -> list[dict[str, Any]]:
    """Soft-delete copies; returns the keys of the imported boxes that stay."""
    rows = conn.execute(sa.text(
        "SELECT id, study_id, reader_id, slice_index, x, y, width, height, fracture, is_key, source "
        "FROM boxes WHERE deleted_at IS NULL ORDER BY id")).all()
    kept_keys: dict[str, int] = {}
    kept_interpolated: dict[tuple[int, int, str, int], int] = {}
    copies: list[tuple[int, int]] = []  # (copy, kept)
    for r in rows:
        if r.is_key and r.source in ("imported", "dataset"):
            key = _key(r.study_id, r.reader_id, r.slice_index, r.x, r.y, r.width, r.height, r.fracture)
            if key in kept_keys:
                copies.append((r.id, kept_keys[key]))
            else:
                kept_keys[key] = r.id
        elif not r.is_key and r.fracture is not None:
            slot = (r.study_id, r.reader_id, r.fracture, r.slice_index)
            if slot in kept_interpolated:
                copies.append((r.id, kept_interpolated[slot]))
            else:
                kept_interpolated[slot] = r.id
    now = _now(conn)
    for chunk in _chunks(copies):
        conn.execute(sa.update(_boxes).where(_boxes.c.id == sa.bindparam("copy_id"))
                     .values(deleted_at=now), [{"copy_id": c} for c, _ in chunk])
        conn.execute(sa.insert(_audit), [
            {"at": now, "actor": ACTOR, "action": "box.dedupe", "entity": "box", "entity_id": str(c),
             "before": None, "after": {"duplicate_of": k, "why": "a copy left by two imports at once"}}
            for c, k in chunk])
    return [{"box_id": i, "key": k} for k, i in kept_keys.items()]


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("boxes", sa.Column("import_key", sa.String(length=64), nullable=True))
    keys = _dedupe_boxes(conn)
    for chunk in _chunks(keys):
        conn.execute(sa.update(_boxes).where(_boxes.c.id == sa.bindparam("box_id"))
                     .values(import_key=sa.bindparam("key")), chunk)
    op.create_index("uq_boxes_import_key", "boxes", ["import_key"], unique=True,
                    sqlite_where=sa.text("deleted_at IS NULL"),
                    postgresql_where=sa.text("deleted_at IS NULL"))
    conn.execute(sa.text(
        "DELETE FROM masks WHERE source = 'dataset' AND EXISTS (SELECT 1 FROM masks AS older "
        "WHERE older.series_id = masks.series_id AND older.source = 'dataset' AND older.id < masks.id)"))
    op.create_index("uq_masks_series_dataset", "masks", ["series_id"], unique=True,
                    sqlite_where=sa.text("source = 'dataset'"),
                    postgresql_where=sa.text("source = 'dataset'"))


def downgrade() -> None:
    op.drop_index("uq_masks_series_dataset", table_name="masks")
    op.drop_index("uq_boxes_import_key", table_name="boxes")
    with op.batch_alter_table("boxes") as batch:
        batch.drop_column("import_key")
