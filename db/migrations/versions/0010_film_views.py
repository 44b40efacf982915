"""A radiograph's view set by a reader.

* ``film_views``: one row per film whose view (lateral, AP or PA) a reader set, over what the
  header's ViewPosition says or where it says nothing; who set it and when (the audit log keeps
  every change).

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "film_views",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(length=8), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE",
                                name=op.f("fk_film_views_study_id_studies")),
        sa.PrimaryKeyConstraint("study_id", name=op.f("pk_film_views")),
    )


def downgrade() -> None:
    op.drop_table("film_views")
