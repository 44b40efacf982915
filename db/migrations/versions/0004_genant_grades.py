"""Genant grading: the study's reading scheme and each reader's grade per level.

* ``studies.call_scheme``: which calls readers make on the study's levels: ``fracture``
  (fractured / not / unsure, RSNA) or ``genant`` (grade 0-3 with morphology, VerSe-style);
  existing VerSe and CTSpine1K studies become ``genant``;
* table ``level_grades``: per study, reader and level, the Genant grade (0-3) and morphology
  (wedge / biconcave / crush, none at grade 0), with a version column; the dataset's own grades
  belong to the system account ``dataset``.

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("call_scheme", sa.String(length=16), server_default="fracture",
                                   nullable=False))
    op.execute("UPDATE studies SET call_scheme = 'genant' WHERE dataset IN ('verse', 'ctspine1k')")
    op.create_table(
        "level_grades",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("morphology", sa.String(length=16), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("grade >= 0 AND grade <= 3", name=op.f("ck_level_grades_grade_0_3")),
        sa.ForeignKeyConstraint(["reader_id"], ["users.id"], name=op.f("fk_level_grades_reader_id_users")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_level_grades_study_id_studies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_level_grades")),
        sa.UniqueConstraint("study_id", "reader_id", "level",
                            name=op.f("uq_level_grades_study_id_reader_id_level")),
    )


def downgrade() -> None:
    op.drop_table("level_grades")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("call_scheme")
