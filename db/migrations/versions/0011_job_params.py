"""Training as a job: the options a queued job runs with.

* ``prediction_jobs.params``: the command-line options of a ``kind='train'`` job (``spine train
  --queue``), as a JSON list of strings, run by a ``spine worker``; empty for the other kinds.

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.drop_column("params")
