"""Genant grading: the study's reading scheme and each reader's grade per level.

* ``studies.region``: the part of the spine the study's mask covers (cervical, thoracolumbar,
  whole; '' without a mask), filled from each study's mask levels;
* ``studies.call_scheme``: which calls readers make on the study's levels: ``fracture``
  (fractured / not / unsure, RSNA) or ``genant`` (grade 0-3 with morphology, VerSe-style);
  existing VerSe and CTSpine1K studies become ``genant``;
* table ``level_grades``: per study, reader and level, the Genant grade (0-3) and morphology
  (wedge / biconcave / crush, none at grade 0), with a version column; the dataset's own grades
  belong to the system account ``dataset``.
* table ``reader_relabels``: per study and reader, the reader's renumbering of the mask's
  vertebrae (mask level -> reader's level) and the statement it came from, with a version column;
* ``decisions.grade`` / ``decisions.morphology``: what a grade dispute's committee decided;
* table ``final_grades``: the final Genant grade per study level, with its source (readers,
  dataset, decision) and the decision it came from.

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
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("region", sa.String(length=16), server_default="", nullable=False))
        batch.create_index("ix_studies_region", ["region"], unique=False)
    _fill_regions()
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
    op.create_table(
        "reader_relabels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["reader_id"], ["users.id"], name=op.f("fk_reader_relabels_reader_id_users")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_reader_relabels_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_relabels")),
        sa.UniqueConstraint("study_id", "reader_id", name=op.f("uq_reader_relabels_study_id_reader_id")),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("grade", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("morphology", sa.String(length=16), nullable=True))
    op.create_table(
        "final_grades",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("morphology", sa.String(length=16), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint("grade >= 0 AND grade <= 3", name=op.f("ck_final_grades_grade_0_3")),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"],
                                name=op.f("fk_final_grades_decision_id_decisions")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_final_grades_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_final_grades")),
        sa.UniqueConstraint("study_id", "level", name=op.f("uq_final_grades_study_id_level")),
    )


def _fill_regions() -> None:
    """Each study's region from the levels of its dataset masks (the rule of
    spine_core.labels.region_of, repeated here so later code changes never alter the migration)."""
    import json

    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT se.study_id, ma.levels FROM masks ma JOIN series se ON se.id = ma.series_id "
        "WHERE ma.source = 'dataset'")).all()
    levels: dict[int, set[str]] = {}
    for study_id, raw in rows:
        value = json.loads(raw) if isinstance(raw, str) else (raw or [])
        levels.setdefault(int(study_id), set()).update(str(v) for v in value)
    for study_id, names in levels.items():
        cervical = any(n.startswith("C") and n != "Co" for n in names)
        lumbar = any(n.startswith("L") or n in ("S", "Co") for n in names)
        lower = any(n in {f"T{i}" for i in range(6, 14)} for n in names)
        region = ("whole" if cervical and lumbar else "cervical" if cervical and not lower
                  else "thoracolumbar" if names else "")
        conn.execute(sa.text("UPDATE studies SET region = :r WHERE id = :i"),
                     {"r": region, "i": study_id})


def downgrade() -> None:
    op.drop_table("final_grades")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("morphology")
        batch.drop_column("grade")
    op.drop_table("reader_relabels")
    op.drop_table("level_grades")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_region")
        batch.drop_column("region")
        batch.drop_column("call_scheme")
