"""Readers' work: assignments, fracture boxes and level calls — blinded, audited, conflict-checked.

Every function takes an open ``Session`` (the caller owns the transaction) and the acting
:class:`~db.models.User`. Role and blinding rules are enforced here, on the server side:

* an annotator reads and writes only their own boxes and calls, on studies assigned to them, and
  only until they submit (they may reopen until adjudication starts);
* adjudicators and admins read everybody's work; viewers read nobody's individual work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from spine_core.consensus import Box as CoreBox
from spine_core.consensus import validate_box
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied
from spine_core.labels import level_id, level_name

READ_ALL_ROLES = frozenset({m.Role.adjudicator.value, m.Role.admin.value})
CALLS = frozenset(c.value for c in m.LevelCall)


@dataclass(frozen=True)
class BoxInput:
    """A box as the reader drew it (image pixels of axial slice ``slice_index``)."""

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    level: str | None = None
    level_from_mask: bool = True
    note: str = ""
    source: str = "drawn"


def _box_dict(box: m.Box) -> dict[str, object]:
    return {
        "study_id": box.study_id,
        "reader_id": box.reader_id,
        "slice_index": box.slice_index,
        "instance_number": box.instance_number,
        "x": box.x,
        "y": box.y,
        "width": box.width,
        "height": box.height,
        "level": box.level,
        "note": box.note,
        "deleted": box.deleted_at is not None,
    }


def primary_series(session: Session, study_id: int) -> m.Series:
    """The image series annotated for a study (the first imported)."""
    series = session.scalars(
        select(m.Series).where(m.Series.study_id == study_id).order_by(m.Series.id).limit(1)
    ).first()
    if series is None:
        raise NotFound(f"study {study_id} has no image series; re-import it")
    return series


def assignment_for(session: Session, study_id: int, reader_id: int) -> m.Assignment | None:
    return session.scalars(
        select(m.Assignment).where(
            m.Assignment.study_id == study_id, m.Assignment.reader_id == reader_id
        )
    ).first()


def _require_writable(session: Session, actor: m.User, study_id: int) -> m.Assignment:
    if actor.role != m.Role.annotator.value:
        raise PermissionDenied(f"only annotators draw boxes and mark levels; you are {actor.role}")
    assignment = assignment_for(session, study_id, actor.id)
    if assignment is None:
        raise PermissionDenied("this study is not assigned to you; ask an admin to assign it")
    if assignment.status == m.AssignmentStatus.submitted.value:
        raise PermissionDenied("you submitted this study; reopen it to change your work")
    if assignment.status == m.AssignmentStatus.assigned.value:
        assignment.status = m.AssignmentStatus.in_progress.value
        study = session.get(m.Study, study_id)
        if study is not None and study.status == m.StudyStatus.new.value:
            study.status = m.StudyStatus.in_reading.value
    return assignment


# --- assignments --------------------------------------------------------------------------------


def assign(session: Session, actor: m.User, study_id: int, reader_ids: Iterable[int]) -> list[int]:
    """Assign a study to readers (admins only); returns the reader ids newly assigned."""
    if actor.role != m.Role.admin.value:
        raise PermissionDenied("only admins assign studies")
    study = session.get(m.Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    added: list[int] = []
    for reader_id in reader_ids:
        reader = session.get(m.User, reader_id)
        if reader is None or reader.role != m.Role.annotator.value or not reader.active:
            raise InputError(f"user {reader_id} is not an active annotator")
        if assignment_for(session, study_id, reader_id) is not None:
            continue
        session.add(m.Assignment(study_id=study_id, reader_id=reader_id, assigned_by=actor.username))
        record(session, actor.username, "assign", "study", study.study_uid, None,
               {"reader": reader.username})
        added.append(reader_id)
    session.flush()
    return added


def assign_balanced(
    session: Session, actor: m.User, study_ids: Sequence[int], reader_ids: Sequence[int],
    per_study: int = 3,
) -> dict[int, list[int]]:
    """Give each study ``per_study`` readers, always choosing the least-loaded readers first."""
    if per_study > len(reader_ids):
        raise InputError(f"{per_study} readers per study asked, only {len(reader_ids)} readers given")
    load = dict.fromkeys(reader_ids, 0)
    counts = session.execute(
        select(m.Assignment.reader_id, func.count())
        .where(m.Assignment.reader_id.in_(list(reader_ids)))
        .group_by(m.Assignment.reader_id)
    ).all()
    for reader_id, count in counts:
        load[reader_id] = int(count)
    result: dict[int, list[int]] = {}
    for study_id in study_ids:
        have = {
            a.reader_id
            for a in session.scalars(select(m.Assignment).where(m.Assignment.study_id == study_id))
        }
        need = max(0, per_study - len(have & set(reader_ids)))
        choice = sorted((r for r in reader_ids if r not in have), key=lambda r: (load[r], r))[:need]
        result[study_id] = assign(session, actor, study_id, choice)
        for r in result[study_id]:
            load[r] += 1
    return result


def reader_queue(session: Session, reader: m.User) -> list[tuple[m.Study, m.Assignment]]:
    """The reader's assigned studies, unfinished first."""
    rows = session.execute(
        select(m.Study, m.Assignment)
        .join(m.Assignment, m.Assignment.study_id == m.Study.id)
        .where(m.Assignment.reader_id == reader.id)
        .order_by((m.Assignment.status == m.AssignmentStatus.submitted.value), m.Assignment.id)
    ).all()
    return [(s, a) for s, a in rows]


def submit(session: Session, actor: m.User, study_id: int) -> None:
    """The reader is done with this study."""
    assignment = _require_writable(session, actor, study_id)
    assignment.status = m.AssignmentStatus.submitted.value
    assignment.submitted_at = dt.datetime.now(dt.timezone.utc)
    record(session, actor.username, "submit", "assignment", str(assignment.id))
    _update_study_reading_status(session, study_id)


def reopen(session: Session, actor: m.User, study_id: int) -> None:
    """Reopen a submitted study — allowed until adjudication of the study has started."""
    if actor.role != m.Role.annotator.value:
        raise PermissionDenied("only the reader who submitted a study can reopen it")
    assignment = assignment_for(session, study_id, actor.id)
    if assignment is None or assignment.status != m.AssignmentStatus.submitted.value:
        raise InputError("this study is not submitted by you, so there is nothing to reopen")
    study = session.get(m.Study, study_id)
    if study is not None and study.status in (
        m.StudyStatus.in_adjudication.value, m.StudyStatus.final.value
    ):
        raise PermissionDenied("adjudication of this study has started; it can no longer be reopened")
    assignment.status = m.AssignmentStatus.in_progress.value
    assignment.submitted_at = None
    record(session, actor.username, "reopen", "assignment", str(assignment.id))
    if study is not None and study.status == m.StudyStatus.read.value:
        study.status = m.StudyStatus.in_reading.value


def _update_study_reading_status(session: Session, study_id: int) -> None:
    statuses = session.scalars(
        select(m.Assignment.status).where(m.Assignment.study_id == study_id)
    ).all()
    study = session.get(m.Study, study_id)
    if study is None or study.status in (m.StudyStatus.in_adjudication.value, m.StudyStatus.final.value):
        return
    if statuses and all(s == m.AssignmentStatus.submitted.value for s in statuses):
        study.status = m.StudyStatus.read.value


# --- boxes --------------------------------------------------------------------------------------


def _validated(series: m.Series, box: BoxInput) -> None:
    n_slices, rows, cols = (int(v) for v in series.shape)
    validate_box(
        CoreBox(x=box.x, y=box.y, width=box.width, height=box.height, slice_index=box.slice_index),
        rows=rows, cols=cols, n_slices=n_slices,
    )
    if box.level is not None:
        level_name(level_id(box.level))


def save_box(
    session: Session,
    actor: m.User,
    study_id: int,
    box: BoxInput,
    *,
    box_id: int | None = None,
    expected_version: int | None = None,
) -> m.Box:
    """Create a box, or update the reader's own box ``box_id`` (checked against its version)."""
    _require_writable(session, actor, study_id)
    series = primary_series(session, study_id)
    _validated(series, box)
    instance = (
        int(series.instance_numbers[box.slice_index])
        if series.instance_numbers else box.slice_index + 1
    )
    now = dt.datetime.now(dt.timezone.utc)
    if box_id is None:
        row = m.Box(
            study_id=study_id, series_id=series.id, reader_id=actor.id,
            slice_index=box.slice_index, instance_number=instance,
            x=box.x, y=box.y, width=box.width, height=box.height,
            level=box.level, level_from_mask=box.level_from_mask, note=box.note, source=box.source,
        )
        session.add(row)
        session.flush()
        record(session, actor.username, "box.create", "box", str(row.id), None, _box_dict(row))
    else:
        row = _own_box(session, actor, box_id, expected_version)
        before = _box_dict(row)
        row.slice_index, row.instance_number = box.slice_index, instance
        row.x, row.y, row.width, row.height = box.x, box.y, box.width, box.height
        row.level, row.level_from_mask, row.note = box.level, box.level_from_mask, box.note
        row.updated_at = now
        session.flush()
        record(session, actor.username, "box.update", "box", str(row.id), before, _box_dict(row))
    if box.level is not None:
        _mark_fractured_by_box(session, actor, study_id, box.level)
    return row


def _own_box(session: Session, actor: m.User, box_id: int, expected_version: int | None) -> m.Box:
    row = session.get(m.Box, box_id)
    if row is None or row.deleted_at is not None or row.reader_id != actor.id:
        raise NotFound(f"box {box_id} does not exist or is not yours")
    if expected_version is not None and row.version != expected_version:
        raise ConflictError(
            f"box {box_id} was changed elsewhere (another tab?) since you loaded it; "
            "reload to see the current version"
        )
    return row


def delete_box(
    session: Session, actor: m.User, box_id: int, *, expected_version: int | None = None
) -> None:
    """Soft-delete the reader's own box (kept for the audit trail)."""
    row = _own_box(session, actor, box_id, expected_version)
    _require_writable(session, actor, row.study_id)
    before = _box_dict(row)
    row.deleted_at = dt.datetime.now(dt.timezone.utc)
    session.flush()
    record(session, actor.username, "box.delete", "box", str(row.id), before, None)


def visible_boxes(
    session: Session, viewer: m.User, study_id: int, *, slice_index: int | None = None,
    include_dataset: bool = False,
) -> list[m.Box]:
    """Boxes ``viewer`` may see: their own as annotator, everyone's as adjudicator/admin."""
    stmt = select(m.Box).where(m.Box.study_id == study_id, m.Box.deleted_at.is_(None))
    if slice_index is not None:
        stmt = stmt.where(m.Box.slice_index == slice_index)
    if viewer.role == m.Role.annotator.value:
        stmt = stmt.where(m.Box.reader_id == viewer.id)
    elif viewer.role not in READ_ALL_ROLES:
        return []
    if not include_dataset:
        stmt = stmt.where(m.Box.source != "dataset")
    return list(session.scalars(stmt.order_by(m.Box.slice_index, m.Box.id)))


# --- level calls --------------------------------------------------------------------------------


def set_level_call(session: Session, actor: m.User, study_id: int, level: str, call: str) -> m.LevelLabel:
    """Record the reader's call (fractured / not_fractured / unsure) on one level."""
    if call not in CALLS:
        raise InputError(f"'{call}' is not a level call; use one of {sorted(CALLS)}")
    name = level_name(level_id(level))
    _require_writable(session, actor, study_id)
    row = session.scalars(
        select(m.LevelLabel).where(
            m.LevelLabel.study_id == study_id, m.LevelLabel.reader_id == actor.id,
            m.LevelLabel.level == name,
        )
    ).first()
    before = None if row is None else {"call": row.call}
    if row is None:
        row = m.LevelLabel(study_id=study_id, reader_id=actor.id, level=name, call=call)
        session.add(row)
    else:
        if row.call == call:
            return row
        row.call = call
        row.updated_at = dt.datetime.now(dt.timezone.utc)
    session.flush()
    record(session, actor.username, "level.set", "level_label", f"{study_id}:{name}", before,
           {"call": call, "reader": actor.username})
    return row


def _mark_fractured_by_box(session: Session, actor: m.User, study_id: int, level: str) -> None:
    """A box on a level marks that level fractured (unless the reader already said so)."""
    set_level_call(session, actor, study_id, level, m.LevelCall.fractured.value)


def visible_level_calls(session: Session, viewer: m.User, study_id: int) -> dict[str, dict[str, str]]:
    """reader username -> level -> call, filtered by the same blinding rules as boxes."""
    stmt = (
        select(m.User.username, m.LevelLabel.level, m.LevelLabel.call)
        .join(m.User, m.User.id == m.LevelLabel.reader_id)
        .where(m.LevelLabel.study_id == study_id)
    )
    if viewer.role == m.Role.annotator.value:
        stmt = stmt.where(m.LevelLabel.reader_id == viewer.id)
    elif viewer.role not in READ_ALL_ROLES:
        return {}
    out: dict[str, dict[str, str]] = {}
    for username, level, call in session.execute(stmt):
        out.setdefault(username, {})[level] = call
    return out
