"""Shared state of several app replicas: sign-in sessions, hand-off tickets, the sign-in throttle
and prediction jobs, as rows instead of one process's memory.

* table ``signin_sessions``: the server side of the ``spine_session`` cookie: only the SHA-256 of
  the token, its user, created / last seen, idle timeout, revoked;
* table ``signin_tickets``: one-time hand-off tickets (hash of the ticket, the session token sealed
  with a key only the ticket gives, expiry);
* table ``signin_failures``: failed sign-ins per key (``user:NAME``, ``client:ADDRESS``,
  ``session:ID``) with the window they count in;
* table ``prediction_jobs``: batches ("predict all") and single-study runs with status, progress,
  owner, start, end, error, the worker and its heartbeat; at most one running row per
  ``lock_key`` (a partial unique index), so two replicas cannot start the same job.

Written by hand; it does not import db.models, so later model changes never alter it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signin_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.Column("idle_timeout_s", sa.Float(), nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_signin_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_signin_sessions_token_hash")),
    )
    op.create_index(op.f("ix_signin_sessions_user_id"), "signin_sessions", ["user_id"], unique=False)
    op.create_index(op.f("ix_signin_sessions_last_seen_at"), "signin_sessions", ["last_seen_at"],
                    unique=False)
    op.create_table(
        "signin_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_token", sa.String(length=128), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("ticket_hash", name=op.f("pk_signin_tickets")),
    )
    op.create_index(op.f("ix_signin_tickets_expires_at"), "signin_tickets", ["expires_at"],
                    unique=False)
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_start", TIMESTAMP, nullable=False),
        sa.Column("last_failed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_signin_failures")),
    )
    op.create_index(op.f("ix_signin_failures_last_failed_at"), "signin_failures",
                    ["last_failed_at"], unique=False)
    op.create_table(
        "prediction_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lock_key", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("study_ids", sa.JSON(), nullable=False),
        sa.Column("replace", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("predicted", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("message", sa.String(length=256), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_kind", sa.String(length=16), nullable=False),
        sa.Column("stopped", sa.Text(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE",
                                name=op.f("fk_prediction_jobs_study_id_studies")),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], ondelete="SET NULL",
                                name=op.f("fk_prediction_jobs_prediction_id_predictions")),
        sa.ForeignKeyConstraint(["retry_of"], ["prediction_jobs.id"], ondelete="SET NULL",
                                name=op.f("fk_prediction_jobs_retry_of_prediction_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_jobs")),
    )
    op.create_index("ix_prediction_jobs_lock_key_started_at", "prediction_jobs",
                    ["lock_key", "started_at"], unique=False)
    op.create_index("ux_prediction_jobs_running", "prediction_jobs", ["lock_key"], unique=True,
                    sqlite_where=sa.text("status = 'running'"),
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("ux_prediction_jobs_running", table_name="prediction_jobs")
    op.drop_index("ix_prediction_jobs_lock_key_started_at", table_name="prediction_jobs")
    op.drop_table("prediction_jobs")
    op.drop_index(op.f("ix_signin_failures_last_failed_at"), table_name="signin_failures")
    op.drop_table("signin_failures")
    op.drop_index(op.f("ix_signin_tickets_expires_at"), table_name="signin_tickets")
    op.drop_table("signin_tickets")
    op.drop_index(op.f("ix_signin_sessions_last_seen_at"), table_name="signin_sessions")
    op.drop_index(op.f("ix_signin_sessions_user_id"), table_name="signin_sessions")
    op.drop_table("signin_sessions")
