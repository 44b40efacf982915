"""The demonstration's curated case list.

* table ``demo_cases``: one case an admin shows clinicians: the study, a title ("C2 fracture the
  report missed"), a short note, the level that matters (opens the viewer there), its place in
  the order of showing; who changed it last and when, and a version column (two admins editing
  one case: the second is refused, not silently overwritten).

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "demo_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE",
                                name=op.f("fk_demo_cases_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_cases")),
    )
    op.create_index(op.f("ix_demo_cases_position"), "demo_cases", ["position"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_demo_cases_position"), table_name="demo_cases")
    op.drop_table("demo_cases")
