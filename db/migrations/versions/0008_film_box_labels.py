"""Vertebra boxes on radiographs: a Genant grade and the reference vertebra per box.

* ``boxes.grade``: the reader's Genant grade 0-3 of the vertebra a film box outlines (None: not
  graded; CT boxes leave it None, their grades are ``level_grades``);
* ``boxes.is_reference``: the box is the reference vertebra the reader counted from (C2 on a
  cervical film, S1 on a lumbar film); at most one per reader and study, kept by the db layer.

The vertebra label itself is the box's existing ``level``. Written by hand; it does not import
db.models, so later model changes never alter it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("boxes") as batch:
        batch.add_column(sa.Column("grade", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("is_reference", sa.Boolean(), server_default=sa.false(),
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("boxes") as batch:
        batch.drop_column("is_reference")
        batch.drop_column("grade")
