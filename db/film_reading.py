"""Readers' vertebra labels on radiographs: each box a reader draws on a film is one vertebra,
with its label (``boxes.level``), an optional Genant grade and the reference-vertebra mark.

* :func:`is_film_study` — the study's image is a radiograph (one image, not a volume);
* :func:`film_boxes` — the reader's own boxes of a film, head to feet (blinded as for CT:
  an annotator sees only their own, adjudicators and admins everyone's);
* :func:`save_film_label` — label, grade and reference of one box, checked against the version
  the reader was shown (a stale version is refused, nothing overwritten), audited ``box.update``;
  marking a box the reference clears the mark on the reader's other boxes;
* :func:`film_comparisons` / :func:`film_union` — agreement (box IoU, label agreement, a shifted
  labelling) between each pair of submitted readers, and the union per vertebra label
  (``spine_core.film_labels``), for adjudicators and admins.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from db import models as m
from db.access import check_permission
from db.annotations import (
    _box_dict,
    _lock_own_assignment,
    _require_writable,
    primary_series,
    visible_core_boxes,
)
from db.audit import record
from spine_core.boxes import Box
from spine_core.consensus import UnionBox
from spine_core.errors import ConflictError, InputError, NotFound
from spine_core.film_labels import (
    REFERENCE_LEVELS,
    LabelComparison,
    compare_labels,
    film_level,
    shown_level,
    union_by_label,
)
from spine_core.genant import check_grade
from spine_core.roles import Permission

#: The levels a reference vertebra may have (C2 on cervical films, S1 on lumbar films).
REFERENCE_NAMES = frozenset(REFERENCE_LEVELS.values())


@dataclass(frozen=True)
class FilmBox:
    """One of a reader's vertebra boxes on a film, as the reading table shows it."""

    id: int
    version: int
    reader: str
    x: float
    y: float
    width: float
    height: float
    level: str | None
    grade: int | None
    is_reference: bool


def is_film_study(session: Session, study_id: int) -> bool:
    """True when the study's image is a radiograph (a one-image series)."""
    from db.studies import is_radiograph_series

    try:
        return is_radiograph_series(primary_series(session, study_id))
    except NotFound:
        return False


def _snapshot(row: m.Box) -> dict[str, object]:
    return {**_box_dict(row), "grade": row.grade, "is_reference": row.is_reference}


def film_boxes(session: Session, viewer: m.User, study_id: int) -> list[FilmBox]:
    """The boxes of a film ``viewer`` may see (an annotator: their own), head to feet."""
    from db.annotations import visible_boxes

    rows = visible_boxes(session, viewer, study_id)
    names: dict[int, str] = {uid: name for uid, name in session.execute(
        select(m.User.id, m.User.username).where(m.User.id.in_({r.reader_id for r in rows})))}
    return [FilmBox(r.id, r.version, names[r.reader_id], r.x, r.y, r.width, r.height, r.level,
                    r.grade, bool(r.is_reference))
            for r in sorted(rows, key=lambda r: (r.slice_index, r.y, r.x, r.id))]


def save_film_label(session: Session, actor: m.User, box_id: int, base_version: int,
                    level: str | None, grade: int | None, is_reference: bool) -> FilmBox:
    """Give the reader's film box ``box_id`` its vertebra label, Genant grade (None: not graded)
    and reference mark, if the box is still at ``base_version``.

    Raises:
        InputError: not a film, an unknown label, a grade outside 0-3, or a reference vertebra
            that is not labelled C2 or S1.
        NotFound: no such box of the reader's.
        PermissionDenied: not the reader's assigned, unsubmitted study.
        ConflictError: the box was changed or deleted elsewhere since ``base_version``.
    """
    row = session.get(m.Box, int(box_id))
    if row is None or row.reader_id != actor.id or row.source == "dataset":
        raise NotFound(f"box {box_id} does not exist or is not yours; reload the study")
    if not is_film_study(session, row.study_id):
        raise InputError("vertebra labels, grades and the reference are given to boxes on "
                         "radiographs; on a CT use the level calls")
    name = film_level(level) if level not in (None, "") else None
    if grade is not None:
        check_grade(grade, None)
    if is_reference and name not in REFERENCE_NAMES:
        raise InputError("the reference vertebra is C2 on a cervical film or S1 on a lumbar "
                         f"film; label this box C2 or S1 first (it is {shown_level(name) if name else 'unlabelled'})")
    _lock_own_assignment(session, actor, row.study_id)
    _require_writable(session, actor, row.study_id)
    row = session.get(m.Box, int(box_id), populate_existing=True) or row
    if row.version != int(base_version) or row.deleted_at is not None:
        what = "deleted" if row.deleted_at is not None else "changed"
        raise ConflictError(f"this box was {what} in another tab or device since you loaded it; "
                            "nothing was saved: look at it again and save your label again")
    now = dt.datetime.now(dt.UTC)
    try:
        if is_reference:
            _clear_other_references(session, actor, row, now)
        before = _snapshot(row)
        if (row.level, row.grade, bool(row.is_reference)) != (name, grade, bool(is_reference)):
            row.level, row.grade, row.is_reference = name, grade, bool(is_reference)
            row.level_from_mask = False
            row.updated_at = now
            session.flush()
            record(session, actor.username, "box.update", "box", str(row.id), before, _snapshot(row))
    except StaleDataError:
        raise ConflictError("this box was changed in another tab at the same moment; nothing was "
                            "saved: look at it again and save your label again") from None
    return FilmBox(row.id, row.version, actor.username, row.x, row.y, row.width, row.height,
                   row.level, row.grade, bool(row.is_reference))


def _clear_other_references(session: Session, actor: m.User, row: m.Box, now: dt.datetime) -> None:
    others = session.scalars(select(m.Box).where(
        m.Box.study_id == row.study_id, m.Box.reader_id == actor.id, m.Box.id != row.id,
        m.Box.is_reference.is_(True), m.Box.deleted_at.is_(None)))
    for other in others:
        before = _snapshot(other)
        other.is_reference = False
        other.updated_at = now
        session.flush()
        record(session, actor.username, "box.update", "box", str(other.id), before, _snapshot(other))


# --- agreement and union ------------------------------------------------------------------------


def submitted_film_boxes(session: Session, study_id: int) -> dict[str, list[Box]]:
    """reader -> their boxes of the film, for the readers who submitted it (no permission check:
    the dispute refresh uses it)."""
    rows = session.execute(
        select(m.Box, m.User.username)
        .join(m.User, m.User.id == m.Box.reader_id)
        .join(m.Assignment, (m.Assignment.reader_id == m.Box.reader_id)
              & (m.Assignment.study_id == m.Box.study_id))
        .where(m.Box.study_id == int(study_id), m.Box.deleted_at.is_(None),
               m.Box.source != "dataset",
               m.Assignment.status == m.AssignmentStatus.submitted.value)
        .order_by(m.User.username, m.Box.y, m.Box.id))
    out: dict[str, list[Box]] = {}
    for box, name in rows:
        out.setdefault(name, []).append(Box(box.slice_index, box.x, box.y, box.width, box.height,
                                            name, box.level, box.id))
    return out


def compare_readers(by_reader: dict[str, list[Box]]) -> list[LabelComparison]:
    """Every pair of readers (by name) compared on their matched boxes."""
    return [compare_labels(a, by_reader[a], b, by_reader[b])
            for a, b in itertools.combinations(sorted(by_reader), 2)]


def film_comparisons(session: Session, viewer: m.User, study_id: int) -> list[LabelComparison]:
    """Box IoU, label agreement and any shifted labelling of each pair of submitted readers.

    Raises PermissionDenied for anyone but adjudicators and admins (readers are blinded)."""
    check_permission(viewer, Permission.see_all_readers)
    return compare_readers(submitted_film_boxes(session, study_id))


def film_union(session: Session, viewer: m.User, study_id: int, *, min_iou: float = 0.0
               ) -> dict[str, list[UnionBox]]:
    """The union of the boxes ``viewer`` may see, per vertebra label (the RSNA rule within one
    label)."""
    return union_by_label(visible_core_boxes(session, viewer, study_id), min_iou=min_iou)


def film_agreement(session: Session, viewer: m.User) -> list[tuple[str, LabelComparison]]:
    """(StudyInstanceUID, comparison) for every pair of submitted readers of every film.

    Raises PermissionDenied for anyone but adjudicators and admins (readers are blinded)."""
    check_permission(viewer, Permission.see_all_readers)
    read = session.execute(
        select(m.Study.id, m.Study.study_uid).join(m.Assignment, m.Assignment.study_id == m.Study.id)
        .where(m.Assignment.status == m.AssignmentStatus.submitted.value)
        .distinct().order_by(m.Study.study_uid)).all()
    return [(uid, c) for sid, uid in read if is_film_study(session, sid)
            for c in compare_readers(submitted_film_boxes(session, sid))]
