"""The study catalogue: the case browser's query, a reader's next case, idempotent study/series rows.

:func:`list_cases` does filtering, search, sorting, paging and every per-row summary in the
database, in one SQL statement (a second one only to count when the page lies past the end):
an inner query picks the page's study ids and the total with ``count(*) OVER ()``, the outer one
adds the summaries with correlated subqueries that run for the page's rows only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Assignment,
    AssignmentStatus,
    Dispute,
    DisputeStatus,
    LevelGrade,
    Prediction,
    Report,
    Series,
    Study,
    StudyStatus,
    User,
)
from spine_core.errors import InputError
from spine_core.io.uids import check_uid
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_IDS, REGIONS

MAX_PAGE_SIZE = 1000
_READER_SEP = "\x1f"  # between "user=status" items; user names cannot contain it
_STATUSES = tuple(s.value for s in StudyStatus)


@dataclass(frozen=True)
class CaseRow:
    """One line of the case browser."""

    study_id: int
    study_uid: str
    dataset: str
    status: str
    patient_id: str
    description: str
    n_slices: int
    has_mask: bool
    imported_at: dt.datetime
    #: Levels the report calls fractured, craniocaudal order; None when there is no report.
    report_fractured: tuple[str, ...] | None
    #: Reader user name -> assignment status (assigned / in_progress / submitted). Pages must show
    #: annotators only their own entry (readers are blinded to each other).
    readers: Mapping[str, str] = field(default_factory=dict)
    open_disputes: int = 0
    has_prediction: bool = False
    #: the modality of its image series (CT, CR, DX, ...; the first by name if they differ)
    modality: str = ""

    @property
    def report_summary(self) -> str:
        """'no report', 'no fracture' or 'fracture: C2, C5'."""
        if self.report_fractured is None:
            return "no report"
        if not self.report_fractured:
            return "no fracture"
        return "fracture: " + ", ".join(self.report_fractured)


@dataclass(frozen=True)
class CasePage:
    """One page of cases and the number of cases matching the filters on all pages."""

    rows: list[CaseRow]
    total: int
    page: int = 0
    page_size: int = 50

    @property
    def n_pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def _open_disputes() -> Any:
    return (
        select(func.count(Dispute.id))
        .where(Dispute.study_id == Study.id, Dispute.status == DisputeStatus.open.value)
        .correlate(Study)
        .scalar_subquery()
    )


def _has_open_dispute() -> ColumnElement[bool]:
    return exists().where(
        Dispute.study_id == Study.id, Dispute.status == DisputeStatus.open.value
    ).correlate(Study)


def _has_prediction() -> ColumnElement[bool]:
    return exists().where(Prediction.study_id == Study.id).correlate(Study)


def _modality() -> Any:
    return (select(func.min(Series.modality)).where(Series.study_id == Study.id)
            .correlate(Study).scalar_subquery())


def _reader_statuses() -> Any:
    item = User.username + literal("=") + Assignment.status
    return (
        select(func.aggregate_strings(item, _READER_SEP))
        .select_from(Assignment)
        .join(User, User.id == Assignment.reader_id)
        .where(Assignment.study_id == Study.id)
        .correlate(Study)
        .scalar_subquery()
    )


SORT_KEYS: tuple[str, ...] = (
    "imported_at", "study_uid", "dataset", "status", "n_slices", "patient_id", "open_disputes",
)


def _sort_column(sort: str) -> Any:
    if sort == "open_disputes":
        return _open_disputes()
    if sort not in SORT_KEYS:
        raise InputError(f"cannot sort cases by {sort!r}; choose one of {', '.join(SORT_KEYS)}")
    return getattr(Study, sort)


def _filters(
    search: str,
    dataset: str | None,
    status: str | None,
    has_mask: bool | None,
    has_disputes: bool | None,
    has_predictions: bool | None,
    reader_id: int | None,
    region: str | None = None,
    min_grade: int | None = None,
    modality: str | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    text = search.strip()
    if text:
        conditions.append(
            or_(*(col.icontains(text, autoescape=True)
                  for col in (Study.study_uid, Study.patient_id, Study.description)))
        )
    if dataset is not None:
        conditions.append(Study.dataset == dataset)
    if status is not None:
        if status not in _STATUSES:
            raise InputError(f"unknown study status {status!r}; choose one of {', '.join(_STATUSES)}")
        conditions.append(Study.status == status)
    if has_mask is not None:
        conditions.append(Study.has_mask.is_(has_mask))
    if has_disputes is not None:
        conditions.append(_has_open_dispute() if has_disputes else not_(_has_open_dispute()))
    if has_predictions is not None:
        conditions.append(_has_prediction() if has_predictions else not_(_has_prediction()))
    if reader_id is not None:
        conditions.append(
            exists().where(Assignment.study_id == Study.id, Assignment.reader_id == reader_id)
            .correlate(Study)
        )
    if region is not None:
        if region not in REGIONS:
            raise InputError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
        conditions.append(Study.region == region)
    if modality is not None:  # a study with an image series of that modality (CT, CR, DX...)
        conditions.append(exists().where(Series.study_id == Study.id,
                                         Series.modality == modality.strip().upper())
                          .correlate(Study))
    if min_grade is not None:  # any reader's or the dataset's Genant grade
        conditions.append(exists().where(LevelGrade.study_id == Study.id, LevelGrade.grade >= int(min_grade))
                          .correlate(Study))
    return conditions


def list_cases(
    session: Session,
    *,
    search: str = "",
    dataset: str | None = None,
    status: str | None = None,
    has_mask: bool | None = None,
    has_disputes: bool | None = None,
    has_predictions: bool | None = None,
    reader_id: int | None = None,
    region: str | None = None,
    min_grade: int | None = None,
    modality: str | None = None,
    sort: str = "imported_at",
    descending: bool = True,
    page: int = 0,
    page_size: int = 50,
) -> CasePage:
    """One page of the case browser.

    ``search`` matches part of the StudyInstanceUID, patient id or description, ignoring case
    (``%`` and ``_`` are literal). ``has_disputes`` means open disputes. ``reader_id`` keeps the
    studies assigned to that reader. ``region``: cervical, thoracolumbar or whole; ``min_grade``:
    studies where some reader (or the dataset) gave a Genant grade of at least that; ``modality``:
    studies with an image series of that DICOM modality (CT, CR, DX...). Rows with
    equal sort keys are ordered by id, so pages never
    overlap.

    Raises:
        InputError: unknown sort key or status, negative page, page size outside 1–1000.
    """
    if page < 0:
        raise InputError(f"page must be 0 or more, got {page}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InputError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    conditions = _filters(search, dataset, status, has_mask, has_disputes, has_predictions,
                          reader_id, region, min_grade, modality)
    sort_col = _sort_column(sort)

    def ordered(key: Any, id_col: Any) -> list[Any]:
        return [key.desc(), id_col.desc()] if descending else [key.asc(), id_col.asc()]

    picked = (
        select(Study.id.label("id"), sort_col.label("sort_key"),
               func.count().over().label("total"))
        .where(*conditions)
        .order_by(*ordered(sort_col, Study.id))
        .limit(page_size)
        .offset(page * page_size)
        .subquery("picked")
    )
    query = (
        select(
            picked.c.total,
            Study.id, Study.study_uid, Study.dataset, Study.status, Study.patient_id,
            Study.description, Study.n_slices, Study.has_mask, Study.imported_at,
            Report.id.label("report_id"), Report.labels,
            _reader_statuses().label("readers"),
            _open_disputes().label("open_disputes"),
            _has_prediction().label("has_prediction"),
            _modality().label("modality"),
        )
        .select_from(picked)
        .join(Study, Study.id == picked.c.id)
        .outerjoin(Report, Report.study_id == Study.id)
        .order_by(*ordered(picked.c.sort_key, picked.c.id))
    )
    result = session.execute(query).all()
    if result:
        total = int(result[0].total)
    else:
        total = _count(session, conditions) if page > 0 else 0
    rows = [_row(r) for r in result]
    return CasePage(rows=rows, total=total, page=page, page_size=page_size)


def count_cases(session: Session, **filters: Any) -> int:
    """How many studies match the filters of :func:`list_cases` (same keyword names)."""
    allowed = {"search", "dataset", "status", "has_mask", "has_disputes", "has_predictions",
               "reader_id", "region", "min_grade", "modality"}
    unknown = set(filters) - allowed
    if unknown:
        raise InputError(f"unknown case filter(s) {sorted(unknown)}; use {sorted(allowed)}")
    args = {"search": "", **dict.fromkeys(allowed - {"search"}), **filters}
    return _count(session, _filters(**args))


def _count(session: Session, conditions: list[ColumnElement[bool]]) -> int:
    query: Select[Any] = select(func.count(Study.id)).where(*conditions)
    return int(session.execute(query).scalar_one())


def _row(r: Any) -> CaseRow:
    readers: dict[str, str] = {}
    for item in (r.readers or "").split(_READER_SEP):
        if item:
            name, _, state = item.rpartition("=")
            readers[name] = state
    return CaseRow(
        study_id=r.id,
        study_uid=r.study_uid,
        dataset=r.dataset,
        status=r.status,
        patient_id=r.patient_id,
        description=r.description,
        n_slices=r.n_slices,
        has_mask=bool(r.has_mask),
        imported_at=r.imported_at,
        report_fractured=None if r.report_id is None else fractured_levels(r.labels),
        readers=dict(sorted(readers.items())),
        open_disputes=int(r.open_disputes or 0),
        has_prediction=bool(r.has_prediction),
        modality=r.modality or "",
    )


def dataset_names(session: Session) -> list[str]:
    """The dataset names present in the catalogue, sorted."""
    return sorted(session.scalars(select(Study.dataset).distinct()))


def modality_names(session: Session) -> list[str]:
    """The modalities of the imported image series (CT, CR, DX...), sorted."""
    return sorted(m for m in session.scalars(select(Series.modality).distinct()) if m)


def study_ids(session: Session) -> list[int]:
    """Every study's id, in import order."""
    return list(session.scalars(select(Study.id).order_by(Study.id)))


def studies_by_readers(session: Session) -> list[tuple[int, str, str, int]]:
    """(id, uid, status, number of assigned readers) of every study, fewest readers first."""
    n_readers = (select(func.count(Assignment.id))
                 .where(Assignment.study_id == Study.id).correlate(Study)
                 .scalar_subquery())
    rows = session.execute(
        select(Study.id, Study.study_uid, Study.status, n_readers).order_by(n_readers, Study.study_uid)
    ).all()
    return [(int(i), uid, status, int(n or 0)) for i, uid, status, n in rows]


def fractured_levels(labels: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The levels a report's ``labels`` (level name -> bool) call fractured, head to foot."""
    rank = {lid: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    names = [name for name, value in (labels or {}).items() if value]
    return tuple(sorted(names, key=lambda n: (rank.get(LEVEL_IDS.get(n, -1), len(rank)), n)))


def next_case_for(session: Session, reader_id: int) -> Study | None:
    """The reader's first assigned study (in assignment order) not yet submitted, or None."""
    query = (
        select(Study)
        .join(Assignment, Assignment.study_id == Study.id)
        .where(Assignment.reader_id == reader_id,
               Assignment.status != AssignmentStatus.submitted.value)
        .order_by(Assignment.assigned_at, Assignment.id)
        .limit(1)
    )
    return session.scalars(query).first()


# --- idempotent creation by natural key (UIDs) ---------------------------------------------------
def _check_uid(kind: str, uid: str) -> str:
    return check_uid(uid.strip() if isinstance(uid, str) else uid, kind, "new study")


def _check_fields(model: type[Any], fields: Mapping[str, Any], fixed: set[str]) -> None:
    columns = set(model.__table__.columns.keys()) - {"id", "version"} - fixed
    unknown = set(fields) - columns
    if unknown:
        raise InputError(
            f"{model.__name__} has no field(s) {sorted(unknown)}; known: {sorted(columns)}"
        )


def get_or_create_study(
    session: Session, study_uid: str, dataset: str, **fields: Any
) -> tuple[Study, bool]:
    """The study with this StudyInstanceUID, created with ``dataset`` and ``fields`` if missing.

    Returns ``(study, created)``. An existing study is returned unchanged (re-importing a dataset
    adds nothing twice); two importers racing on one UID end with one row.

    Raises:
        InputError: empty UID, or a field that Study does not have.
    """
    uid = _check_uid("StudyInstanceUID", study_uid)
    _check_fields(Study, fields, {"study_uid", "dataset"})
    found = session.scalars(select(Study).where(Study.study_uid == uid)).one_or_none()
    if found is not None:
        return found, False
    study = Study(study_uid=uid, dataset=dataset, **fields)
    return _insert_or_fetch(session, study, select(Study).where(Study.study_uid == uid))


def get_or_create_series(
    session: Session, series_uid: str, study: Study, **fields: Any
) -> tuple[Series, bool]:
    """The series with this SeriesInstanceUID, created in ``study`` with ``fields`` if missing.

    Raises:
        InputError: empty UID, unknown field, or the UID already belongs to another study (two
            studies cannot share a series; check the source files).
    """
    uid = _check_uid("SeriesInstanceUID", series_uid)
    _check_fields(Series, fields, {"series_uid", "study_id"})
    if study.id is None:
        session.flush()
    found = session.scalars(select(Series).where(Series.series_uid == uid)).one_or_none()
    if found is None:
        series = Series(series_uid=uid, study_id=study.id, **fields)
        found, created = _insert_or_fetch(session, series,
                                          select(Series).where(Series.series_uid == uid))
        if created:
            return found, True
    if found.study_id != study.id:
        raise InputError(
            f"series {uid} already belongs to another study (id {found.study_id}), not to "
            f"{study.study_uid}; the source files give one SeriesInstanceUID to two studies"
        )
    return found, False


def _insert_or_fetch(session: Session, obj: Any, lookup: Select[Any]) -> tuple[Any, bool]:
    """Insert ``obj`` in a savepoint; if a concurrent writer inserted the same key, fetch theirs."""
    try:
        with session.begin_nested():
            session.add(obj)
    except IntegrityError:
        existing = session.scalars(lookup).one_or_none()
        if existing is None:
            raise
        return existing, False
    return obj, True
