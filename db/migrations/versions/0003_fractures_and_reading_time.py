"""Fractures of key boxes and interpolated boxes; reading time per reader and study.

* ``boxes.fracture``: the reader's own id of one fracture (nullable: a box on its own);
* ``boxes.is_key``: True for a box the reader drew (every existing box), False for a box
  interpolated between two key boxes of its fracture (those also have ``source='interpolated'``);
* index ``ix_boxes_study_reader_fracture`` (a fracture's boxes are read at every box event);
* table ``reading_times``: per reader and study, ``opened_at``, ``submitted_at``, ``active_s``
  (seconds of active reading from the page's heartbeats) and ``active_until``/``heartbeats``.

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("boxes") as batch:
        batch.add_column(sa.Column("fracture", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("is_key", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.create_index("ix_boxes_study_reader_fracture", ["study_id", "reader_id", "fracture"],
                           unique=False)
    op.create_table(
        "reading_times",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.Column("submitted_at", TIMESTAMP, nullable=True),
        sa.Column("active_s", sa.Float(), nullable=False),
        sa.Column("active_until", TIMESTAMP, nullable=True),
        sa.Column("heartbeats", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["reader_id"], ["users.id"], name=op.f("fk_reading_times_reader_id_users")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_reading_times_study_id_studies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_times")),
        sa.UniqueConstraint("study_id", "reader_id", name=op.f("uq_reading_times_study_id_reader_id")),
    )


def downgrade() -> None:
    op.drop_table("reading_times")
    with op.batch_alter_table("boxes") as batch:
        batch.drop_index("ix_boxes_study_reader_fracture")
        batch.drop_column("is_key")
        batch.drop_column("fracture")
