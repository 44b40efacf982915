"""Idempotent box creates: the browser's own key of a new box.

* ``boxes.client_key``: the key the reader's viewer made for a box it drew (its temporary
  "new-…" id, random per box), sent with the create event; NULL for boxes made any other way
  (imported, interpolated, copied predictions, older rows);
* ``uq_boxes_client_key``: unique over (study, reader, key) where a key is given, so a create
  retried after a lost reply (the saver posts again when the network drops the answer) finds the
  box it already made instead of adding a second one, even when two copies arrive at once.

Deleted boxes keep their key: a create retried after its box was deleted elsewhere does not bring
it back. Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("boxes", sa.Column("client_key", sa.String(length=64), nullable=True))
    op.create_index("uq_boxes_client_key", "boxes", ["study_id", "reader_id", "client_key"],
                    unique=True, sqlite_where=sa.text("client_key IS NOT NULL"),
                    postgresql_where=sa.text("client_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("uq_boxes_client_key", table_name="boxes")
    with op.batch_alter_table("boxes") as batch:
        batch.drop_column("client_key")
