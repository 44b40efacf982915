"""SQLAlchemy 2 typed ORM models: the whole persistent state of SpineReview.

Conventions:
* Every row a user writes records who (``*_by`` / ``reader_id``) and when. Timestamps are
  :class:`UtcDateTime`: aware UTC ``datetime`` objects on every backend (naive ones are refused).
* Constraint and index names follow :data:`NAMING_CONVENTION` (migrations can refer to them).
* Rows two people may edit at once carry a ``version`` column used by SQLAlchemy's optimistic
  concurrency check (a stale write raises ``StaleDataError``, turned into ``ConflictError``).
* Slice references are stored twice on purpose: ``slice_index`` (position in the series sorted by
  position along the normal, the index our Volume uses) and ``instance_number`` (RSNA's
  ``slice_number``, used in every export).
* Box coordinates are image pixels of the axial slice: x = column, y = row, of the top-left corner
  (RSNA's "point closest to (0, 0)"), width/height in pixels.
* ``audit_log`` is append-only; migrations add triggers that refuse UPDATE and DELETE on it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from spine_core.adjudication import DisputeStatus
from spine_core.roles import Role


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always an aware UTC ``datetime`` in Python, on every backend.

    SQLite has no time zones: values are stored as naive UTC text and given ``tzinfo=UTC`` back on
    load; PostgreSQL stores ``timestamptz`` and values are converted to UTC on load. A naive
    ``datetime`` is refused rather than guessed (it could be local time).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(
                f"timestamp {value!r} has no time zone; pass an aware UTC datetime, "
                "e.g. datetime.now(timezone.utc)"
            )
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: Constraint names are deterministic so later migrations (and SQLite batch mode) can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: UtcDateTime}


class StudyStatus(str, enum.Enum):
    new = "new"
    in_reading = "in_reading"
    read = "read"
    in_adjudication = "in_adjudication"
    final = "final"


class AssignmentStatus(str, enum.Enum):
    assigned = "assigned"
    in_progress = "in_progress"
    submitted = "submitted"


_ENUM_LEN = 32


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(_ENUM_LEN), default=Role.viewer.value)
    is_chair: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(256), unique=True, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(128), unique=True)
    dataset: Mapped[str] = mapped_column(String(32), index=True)  # rsna | verse | ctspine1k | dicom | nifti
    source_path: Mapped[str] = mapped_column(Text, default="")
    patient_id: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(_ENUM_LEN), default=StudyStatus.new.value, index=True)
    n_slices: Mapped[int] = mapped_column(Integer, default=0)
    has_mask: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    #: the part of the spine the mask covers: cervical | thoracolumbar | whole ('' without a mask)
    region: Mapped[str] = mapped_column(String(16), default="", server_default="", index=True)
    #: which calls readers make: "fracture" (fractured / not / unsure) or "genant" (grade 0-3)
    call_scheme: Mapped[str] = mapped_column(String(16), default="fracture", server_default="fracture")
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    imported_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    imported_by: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)

    series: Mapped[list[Series]] = relationship(back_populates="study", cascade="all, delete-orphan")

    # The case browser sorts by import time by default (newest first), id breaks ties.
    __table_args__ = (Index("ix_studies_imported_at_id", "imported_at", "id"),)
    __mapper_args__ = {"version_id_col": version}


class Series(Base):
    """One image volume of a study (a DICOM series or a NIfTI image)."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(String(128), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="CT")
    source_format: Mapped[str] = mapped_column(String(16))  # dicom | nifti
    source_dir: Mapped[str] = mapped_column(Text)
    files: Mapped[list[Any]] = mapped_column(default=list)  # relative to source_dir, in sorted order
    shape: Mapped[list[Any]] = mapped_column()  # (a0, a1, a2)
    affine: Mapped[list[Any]] = mapped_column()  # 4x4, array index -> LPS mm
    instance_numbers: Mapped[list[Any]] = mapped_column(default=list)  # per a0 index
    fingerprint: Mapped[str] = mapped_column(String(64))
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    masks: Mapped[list[Mask]] = relationship(back_populates="series", cascade="all, delete-orphan")


class Mask(Base):
    """A vertebra label map stored as a file, aligned to its series through the affines."""

    __tablename__ = "masks"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    vocabulary: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32), default="dataset")  # dataset | prediction
    levels: Mapped[list[Any]] = mapped_column(default=list)  # canonical level names present
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    series: Mapped[Series] = relationship(back_populates="masks")

    # One dataset mask per series, whoever imports it first (imports upsert it).
    __table_args__ = (Index("uq_masks_series_dataset", "series_id", unique=True,
                            sqlite_where=text("source = 'dataset'"),
                            postgresql_where=text("source = 'dataset'")),)


class Centroid(Base):
    """A vertebra centroid in LPS mm (VerSe `_ctd.json`, or a model's output)."""

    __tablename__ = "centroids"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(8))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    z: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32), default="dataset")

    __table_args__ = (UniqueConstraint("study_id", "level", "source"),)


class Report(Base):
    """The radiology report of a study: text and per-level labels, with their source."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text, default="")
    patient_overall: Mapped[bool | None] = mapped_column(Boolean, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)  # level name -> bool
    source: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Assignment(Base):
    """A reader's reading of one study: assigned, in progress, submitted (reopenable)."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(_ENUM_LEN), default=AssignmentStatus.assigned.value)
    assigned_by: Mapped[str] = mapped_column(String(64), default="")
    assigned_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        UniqueConstraint("study_id", "reader_id"),
        # A reader's work list ("my next case") filters by reader and status.
        Index("ix_assignments_reader_status", "reader_id", "status"),
    )
    __mapper_args__ = {"version_id_col": version}


class Box(Base):
    """A reader's fracture box on one axial slice (soft-deleted so history stays)."""

    __tablename__ = "boxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    slice_index: Mapped[int] = mapped_column(Integer)
    instance_number: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)
    level: Mapped[str | None] = mapped_column(String(8), default=None)
    level_from_mask: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str] = mapped_column(Text, default="")
    # drawn | imported | prediction | dataset | interpolated (made from a fracture's key boxes)
    source: Mapped[str] = mapped_column(String(32), default="drawn")
    # The reader's own id of one fracture (its key boxes and the boxes interpolated between them);
    # None: a box on its own.
    fracture: Mapped[str | None] = mapped_column(String(64), default=None)
    # A box the reader drew (or imported with key=1); False: interpolated (source "interpolated").
    is_key: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Imported boxes only: the hash of the row they came from (db.import_keys); unique among live
    # boxes, so racing imports add a row once. None for boxes drawn in the app.
    import_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # Boxes drawn in the viewer: the key its tab made for the new box and sent with the create
    # event (migration 0009); unique per study and reader, so a create retried after a lost reply
    # finds this box instead of adding another. None for boxes made any other way.
    client_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # Radiographs (one box per vertebra, its label in ``level``): the reader's Genant grade 0-3
    # (None: not graded), and whether this is the reference vertebra counted from (C2 / S1).
    grade: Mapped[int | None] = mapped_column(Integer, default=None)
    is_reference: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_boxes_study_reader_slice", "study_id", "reader_id", "slice_index"),
        Index("ix_boxes_study_reader_fracture", "study_id", "reader_id", "fracture"),
        Index("uq_boxes_import_key", "import_key", unique=True,
              sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL")),
        Index("uq_boxes_client_key", "study_id", "reader_id", "client_key", unique=True,
              sqlite_where=text("client_key IS NOT NULL"),
              postgresql_where=text("client_key IS NOT NULL")),
    )
    __mapper_args__ = {"version_id_col": version}


class LevelLabel(Base):
    """A reader's call on one level of one study."""

    __tablename__ = "level_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    level: Mapped[str] = mapped_column(String(8))
    call: Mapped[str] = mapped_column(String(_ENUM_LEN))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (UniqueConstraint("study_id", "reader_id", "level"),)
    __mapper_args__ = {"version_id_col": version}


class LevelGrade(Base):
    """A reader's Genant grade (0-3) and morphology on one level of one study (the dataset's
    own grades belong to the system account ``dataset``)."""

    __tablename__ = "level_grades"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    level: Mapped[str] = mapped_column(String(8))
    grade: Mapped[int] = mapped_column(Integer)
    morphology: Mapped[str | None] = mapped_column(String(16), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (UniqueConstraint("study_id", "reader_id", "level"),
                      CheckConstraint("grade >= 0 AND grade <= 3", name="grade_0_3"))
    __mapper_args__ = {"version_id_col": version}


class ReaderRelabel(Base):
    """A reader's renumbering of a study's vertebrae: mask level name -> the reader's level name
    (only the levels it changes; ``spine_core.relabel``), with the statement it came from."""

    __tablename__ = "reader_relabels"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    mapping: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: how the reader said it: {"at": "L1", "says": "T13"} for a shift, {} for a mapping
    rule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (UniqueConstraint("study_id", "reader_id"),)


class FinalGrade(Base):
    """The final Genant grade of a study level (feeds the VerSe / CTSpine1K exports), with where
    it came from: ``readers`` (every submitted reader agreed), ``dataset`` or ``decision``."""

    __tablename__ = "final_grades"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8))
    grade: Mapped[int] = mapped_column(Integer)
    morphology: Mapped[str | None] = mapped_column(String(16), default=None)
    source: Mapped[str] = mapped_column(String(32))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (UniqueConstraint("study_id", "level"),
                      CheckConstraint("grade >= 0 AND grade <= 3", name="grade_0_3"))


class ReadingTime(Base):
    """How long a reader read one study: first opened, submitted, seconds of active reading.

    ``active_s`` grows by the heartbeats the reading page sends (each capped, and never counting
    a stretch of time twice when two tabs send them: ``active_until`` is the end of the time
    already counted). ``submitted_at`` mirrors the assignment's (cleared on reopen).
    """

    __tablename__ = "reading_times"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    active_s: Mapped[float] = mapped_column(Float, default=0.0)
    active_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    heartbeats: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("study_id", "reader_id"),)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("name", "version"),)


class Prediction(Base):
    """One complete model run on one study (written in one transaction, never half)."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    patient_probability: Mapped[float | None] = mapped_column(Float, default=None)
    level_probabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)  # level -> p
    boxes: Mapped[list[Any]] = mapped_column(default=list)  # [{slice_index, x, y, w, h, score, level}]
    mask_path: Mapped[str] = mapped_column(Text, default="")
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    backend: Mapped[str] = mapped_column(String(256), default="local")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("study_id", "model_version_id"),)


class Dispute(Base):
    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(_ENUM_LEN))
    status: Mapped[str] = mapped_column(String(_ENUM_LEN), default=DisputeStatus.open.value, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what each side said
    priority: Mapped[int] = mapped_column(Integer, default=0)
    round: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        UniqueConstraint("study_id", "level", "kind"),
        # The case browser counts each study's open disputes.
        Index("ix_disputes_study_status", "study_id", "status"),
    )
    __mapper_args__ = {"version_id_col": version}


class Vote(Base):
    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    voter_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    choice: Mapped[str] = mapped_column(String(_ENUM_LEN))
    rationale: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("dispute_id", "round", "voter_id"),)


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("disputes.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    fractured: Mapped[bool | None] = mapped_column(Boolean)  # None: cannot tell
    #: grade disputes: the Genant grade decided (None: cannot tell) and its morphology
    grade: Mapped[int | None] = mapped_column(Integer, default=None)
    morphology: Mapped[str | None] = mapped_column(String(16), default=None)
    policy: Mapped[str] = mapped_column(String(_ENUM_LEN))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)


class FinalLabel(Base):
    """The label of a study level that feeds exports and metrics."""

    __tablename__ = "final_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8))
    fractured: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))  # report | readers | decision
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (UniqueConstraint("study_id", "level"),)


class AuditEntry(Base):
    """Append-only record of every change (who, when, what, before, after)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(128), default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class SignInSession(Base):
    """The server side of a ``spine_session`` cookie: the token's SHA-256 only, never the token."""

    __tablename__ = "signin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    idle_timeout_s: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)


class SignInTicket(Base):
    """A one-time hand-off ticket: its hash, and the session token sealed with the ticket."""

    __tablename__ = "signin_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_token: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


class SignInFailure(Base):
    """Failed sign-ins of one key (``user:NAME``, ``client:ADDRESS``...) in the current window."""

    __tablename__ = "signin_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_failed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


class PredictionJobRow(Base):
    """A prediction batch (``kind='batch'``), a single-study run (``'study'``), a PACS import
    (``'pacs'``) or a training (``'train'``), shared by replicas.

    At most one row per ``lock_key`` is ``running`` (a partial unique index); the worker beats
    ``heartbeat_at`` while it runs, so a row whose worker died can be found and marked failed.
    """

    __tablename__ = "prediction_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    lock_key: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"),
                                                 default=None)
    study_ids: Mapped[list[Any]] = mapped_column(default=list)
    replace: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="running")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    predicted: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(String(256), default="")
    problems: Mapped[list[Any]] = mapped_column(default=list)
    model: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, default=None)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    worker: Mapped[str] = mapped_column(String(256), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    error_kind: Mapped[str] = mapped_column(String(16), default="")
    stopped: Mapped[str] = mapped_column(Text, default="")
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="SET NULL"), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_of: Mapped[int | None] = mapped_column(
        ForeignKey("prediction_jobs.id", ondelete="SET NULL"), default=None)
    #: a training job's command-line options (``spine train --queue``); empty for the others
    params: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")

    __table_args__ = (
        Index("ix_prediction_jobs_lock_key_started_at", "lock_key", "started_at"),
        Index("ux_prediction_jobs_running", "lock_key", unique=True,
              sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
    )


class DemoCase(Base):
    """One case of the demonstration's curated list (admins build it; ``db.demo_cases``)."""

    __tablename__ = "demo_cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    #: the level that matters: the viewer opens at its slice (None: the study's own choice)
    level: Mapped[str | None] = mapped_column(String(8), default=None)
    position: Mapped[int] = mapped_column(Integer, default=0, index=True)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class FilmView(Base):
    """A radiograph's view as a reader set it (lateral, AP or PA), over what its header says or
    where the header says nothing (``db.film_views``); one row per film, the last word."""

    __tablename__ = "film_views"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"),
                                          primary_key=True)
    view: Mapped[str] = mapped_column(String(8))
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
