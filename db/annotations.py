"""Readers' work: assignments, fracture boxes and level calls — blinded, audited, conflict-checked.

Every function takes an open ``Session`` (the caller owns the transaction) and the acting
:class:`~db.models.User`. Role and blinding rules are enforced here, on the server side:

* an annotator reads and writes only their own boxes and calls, on studies assigned to them, and
  only until they submit (they may reopen until adjudication starts);
* adjudicators and admins read everybody's work; viewers read nobody's individual work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from db import models as m
from db.access import ReaderScope, reader_scope
from db.audit import record
from db.studies import is_radiograph_series
from db.unit_memo import keep, recall
from spine_core.adjudication import LevelCall
from spine_core.boxes import Box
from spine_core.consensus import validate_box
from spine_core.errors import (
    ConflictError,
    InputError,
    LabelVocabularyError,
    NotFound,
    PermissionDenied,
)
from spine_core.labels import level_id, level_name
from spine_core.roles import Permission, Role, can

CALLS = frozenset(c.value for c in LevelCall)


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
    #: The reader's own id of the fracture this box belongs to (None: a box on its own).
    fracture: str | None = None
    #: A key box (drawn); interpolated boxes are made by ``db.box_events``, never given.
    is_key: bool = True


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
        "fracture": box.fracture,
        "is_key": box.is_key,
        "source": box.source,
        "deleted": box.deleted_at is not None,
    }


def primary_series(session: Session, study_id: int, *, with_masks: bool = False) -> m.Series:
    """The image series annotated for a study (the first imported); read once per transaction
    (``db.unit_memo``: a box save asks for it in the route, the event and the level call).
    ``with_masks``: its ``masks`` loaded in the same query (the box route's grid needs them)."""
    series = recall(session, ("primary_series", study_id), m.Series)
    if series is not None:
        return series
    stmt = select(m.Series).where(m.Series.study_id == study_id).order_by(m.Series.id).limit(1)
    if with_masks:
        stmt = stmt.options(joinedload(m.Series.masks))
    series = session.scalars(stmt).unique().first()
    if series is None:
        raise NotFound(f"study {study_id} has no image series; re-import it")
    return keep(session, ("primary_series", study_id), series)


def assignment_for(session: Session, study_id: int, reader_id: int) -> m.Assignment | None:
    return session.scalars(
        select(m.Assignment).where(
            m.Assignment.study_id == study_id, m.Assignment.reader_id == reader_id
        )
    ).first()


def _require_writable(session: Session, actor: m.User, study_id: int) -> m.Assignment:
    """The reader's assignment of this study when they may write to it (the first write moves it
    on to in progress); the row :func:`_lock_own_assignment` locked in this transaction is taken
    as it is, not read again."""
    if not can(actor.role, Permission.annotate):
        raise PermissionDenied(f"only annotators draw boxes and mark levels; you are {actor.role}")
    assignment = (recall(session, _locked_key(study_id, actor.id), m.Assignment)
                  or assignment_for(session, study_id, actor.id))
    if assignment is None:
        raise PermissionDenied("this study is not assigned to you; ask an admin to assign it")
    if assignment.status == m.AssignmentStatus.submitted.value:
        raise PermissionDenied("you submitted this study; reopen it to change your work")
    if assignment.status == m.AssignmentStatus.assigned.value:
        _advance(session, m.Assignment, assignment.id, m.AssignmentStatus.assigned.value,
                 m.AssignmentStatus.in_progress.value)
        _advance(session, m.Study, study_id, m.StudyStatus.new.value,
                 m.StudyStatus.in_reading.value)
    return assignment


def _advance(session: Session, model: type[m.Assignment] | type[m.Study], row_id: int,
             from_status: str, to_status: str) -> None:
    """Move a row's status ``from_status`` -> ``to_status`` if it is still ``from_status``.

    A conditional UPDATE rather than an ORM change checked against the loaded version: the first
    write of two tabs (or of two readers of one new study) both try this bookkeeping step, and
    the second must find it done, not fail with a conflict. The version is still bumped, so
    anyone holding the old row notices; the row is reloaded if this session holds it.
    """
    session.execute(
        update(model)
        .where(model.id == row_id, model.status == from_status)
        .values(status=to_status, version=model.version + 1)
        .execution_options(synchronize_session=False)
    )
    session.get(model, row_id, populate_existing=True)


# --- assignments --------------------------------------------------------------------------------


def assign(session: Session, actor: m.User, study_id: int, reader_ids: Iterable[int]) -> list[int]:
    """Assign a study to readers (admins only); returns the reader ids newly assigned."""
    if not can(actor.role, Permission.assign_readers):
        raise PermissionDenied("only admins assign studies")
    study = session.get(m.Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    added: list[int] = []
    for reader_id in reader_ids:
        reader = session.get(m.User, reader_id)
        if reader is None or not can(reader.role, Permission.annotate) or not reader.active:
            raise InputError(f"user {reader_id} is not an active annotator")
        if assignment_for(session, study_id, reader_id) is not None:
            continue
        try:
            with session.begin_nested():
                session.add(m.Assignment(study_id=study_id, reader_id=reader_id,
                                         assigned_by=actor.username))
        except IntegrityError:  # another admin assigned the same reader at the same moment
            continue
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


@dataclass(frozen=True)
class SubmitCheck:
    """What stands between a reader and submitting a study (see :func:`submit_check`).

    ``unlevelled``: slice numbers (DICOM instance numbers, RSNA's slice_number) of the reader's
    boxes without a level, one entry per box, in slice order; ``contradicted``: (level, number of
    boxes) for each level the reader called not fractured although they have boxes on it.
    """

    unlevelled: tuple[int, ...] = ()
    contradicted: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unlevelled and not self.contradicted

    def message(self) -> str:
        """One sentence naming every problem and what to do ('' when there is none)."""
        if self.ok:
            return ""
        return (
            f"Not submitted: {self.problems()}. Give every box a level and make the calls "
            "match the boxes, or confirm to submit the study as it is."
        )

    def problems(self) -> str:
        """The problems, joined by semicolons ('' when there is none)."""
        parts: list[str] = []
        if self.unlevelled:
            n = len(self.unlevelled)
            slices = ", ".join(str(s) for s in dict.fromkeys(self.unlevelled))
            parts.append(f"{n} box{'es have' if n > 1 else ' has'} no level (slice "
                         f"{'numbers' if n > 1 else 'number'} {slices})")
        for level, n in self.contradicted:
            parts.append(f"{level} is called not fractured although you have {n} "
                         f"box{'es' if n > 1 else ''} on it")
        return "; ".join(parts)


class SubmitNeedsConfirmation(InputError):
    """:func:`submit` found boxes without a level or calls that contradict the boxes; the page
    shows the message (``check`` holds the details) and may submit again with ``confirm=True``."""

    def __init__(self, check: SubmitCheck) -> None:
        super().__init__(check.message())
        self.check = check


def submit_check(session: Session, actor: m.User, study_id: int) -> SubmitCheck:
    """The reader's boxes without a level and their calls that contradict their boxes."""
    unlevelled = tuple(session.scalars(
        select(m.Box.instance_number).where(
            m.Box.study_id == study_id, m.Box.reader_id == actor.id, m.Box.deleted_at.is_(None),
            m.Box.source != "dataset", m.Box.level.is_(None),
        ).order_by(m.Box.slice_index, m.Box.id)
    ).all())
    counts = dict(session.execute(
        select(m.Box.level, func.count()).where(
            m.Box.study_id == study_id, m.Box.reader_id == actor.id, m.Box.deleted_at.is_(None),
            m.Box.source != "dataset", m.Box.level.is_not(None),
        ).group_by(m.Box.level)
    ).all())
    not_fractured = session.scalars(
        select(m.LevelLabel.level).where(
            m.LevelLabel.study_id == study_id, m.LevelLabel.reader_id == actor.id,
            m.LevelLabel.call == LevelCall.not_fractured.value,
        )
    ).all()
    contradicted = tuple(sorted(((lvl, int(counts[lvl])) for lvl in not_fractured if counts.get(lvl)),
                                key=lambda item: level_id(item[0])))
    return SubmitCheck(tuple(int(n) for n in unlevelled), contradicted)


def _locked_key(study_id: int, reader_id: int) -> tuple[str, int, int]:
    return ("assignment_locked", study_id, reader_id)


def _lock_own_assignment(session: Session, actor: m.User, study_id: int) -> m.Assignment | None:
    """Lock the reader's assignment row (PostgreSQL ``FOR NO KEY UPDATE``; SQLite writers are
    serialised by ``BEGIN IMMEDIATE``), reloaded, as every box event does first, so a submission
    waits for a box event of another tab and then sees its boxes. Once per transaction: a second
    call returns the row already locked (None: no such assignment)."""
    key = _locked_key(study_id, actor.id)
    locked = recall(session, key, m.Assignment)
    if locked is not None:
        return locked
    row = session.scalars(
        select(m.Assignment)
        .where(m.Assignment.study_id == study_id, m.Assignment.reader_id == actor.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).first()
    return keep(session, key, row) if row is not None else None


def submit(session: Session, actor: m.User, study_id: int, *, confirm: bool = False,
           confirmed_also: Mapping[str, object] | None = None) -> SubmitCheck:
    """The reader is done with this study.

    Refused (:class:`SubmitNeedsConfirmation`, one message listing every problem) while the reader
    has boxes without a level or calls a level not fractured that has their boxes, unless
    ``confirm`` is True: then the study is submitted as it is and the audit entry records what
    was confirmed (with ``confirmed_also``: what a caller's own check had the reader confirm,
    e.g. a film without a reference vertebra). Returns the check that was made.
    """
    from db.reading_time import mark_submitted

    _lock_study(session, study_id)
    _lock_own_assignment(session, actor, study_id)
    assignment = _require_writable(session, actor, study_id)
    check = submit_check(session, actor, study_id)
    if not check.ok and not confirm:
        raise SubmitNeedsConfirmation(check)
    now = dt.datetime.now(dt.UTC)
    assignment.status = m.AssignmentStatus.submitted.value
    assignment.submitted_at = now
    what: dict[str, object] = {} if check.ok else {
        "unlevelled": list(check.unlevelled),
        "contradicted": {lvl: n for lvl, n in check.contradicted},
    }
    what.update(confirmed_also or {})
    confirmed = {"confirmed": what} if what else None
    record(session, actor.username, "submit", "assignment", str(assignment.id), None, confirmed)
    mark_submitted(session, study_id, actor.id, now)
    update_reading_status(session, study_id)
    return check


#: Once adjudication of a study has started, its readers' submissions are final.
_LOCKED_STATUSES = frozenset({m.StudyStatus.in_adjudication.value, m.StudyStatus.final.value})


def reopen_allowed(study_status: str) -> bool:
    """Whether a reader may reopen their submitted study: until adjudication of it starts."""
    return study_status not in _LOCKED_STATUSES


def reopen(session: Session, actor: m.User, study_id: int) -> None:
    """Reopen a submitted study — allowed until adjudication of the study has started."""
    from db.reading_time import mark_submitted

    if not can(actor.role, Permission.annotate):
        raise PermissionDenied("only the reader who submitted a study can reopen it")
    assignment = assignment_for(session, study_id, actor.id)
    if assignment is None or assignment.status != m.AssignmentStatus.submitted.value:
        raise InputError("this study is not submitted by you, so there is nothing to reopen")
    study = _lock_study(session, study_id)
    if study is not None and not reopen_allowed(study.status):
        raise PermissionDenied("adjudication of this study has started; it can no longer be reopened")
    assignment.status = m.AssignmentStatus.in_progress.value
    assignment.submitted_at = None
    record(session, actor.username, "reopen", "assignment", str(assignment.id))
    mark_submitted(session, study_id, actor.id, None)
    if study is not None and study.status == m.StudyStatus.read.value:
        study.status = m.StudyStatus.in_reading.value


def _lock_study(session: Session, study_id: int) -> m.Study:
    """Load the study row locked for this transaction (PostgreSQL ``FOR NO KEY UPDATE``; SQLite
    writers are serialised anyway). Two readers submitting at once then see each other's
    submission when deciding whether the study is fully read."""
    study = session.get(m.Study, study_id, with_for_update={"key_share": True},
                        populate_existing=True)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    return study


def update_reading_status(session: Session, study_id: int) -> None:
    """Mark a study read once every assigned reader has submitted it."""
    statuses = session.scalars(
        select(m.Assignment.status).where(m.Assignment.study_id == study_id)
    ).all()
    study = session.get(m.Study, study_id)
    if study is None or study.status in (m.StudyStatus.in_adjudication.value, m.StudyStatus.final.value):
        return
    if statuses and all(s == m.AssignmentStatus.submitted.value for s in statuses):
        study.status = m.StudyStatus.read.value


# --- boxes --------------------------------------------------------------------------------------


def _validated(series: m.Series, box: BoxInput) -> BoxInput:
    """The box checked against the series (inside the image, positive size, existing slice),
    with its level in canonical spelling ('c5' -> 'C5')."""
    n_slices, rows, cols = (int(v) for v in series.shape)
    validate_box(
        Box(x=box.x, y=box.y, width=box.width, height=box.height, slice_index=box.slice_index),
        rows=rows, cols=cols, n_slices=n_slices,
    )
    if box.level is None:
        return box
    try:
        return replace(box, level=level_name(level_id(box.level)))
    except LabelVocabularyError as exc:
        raise InputError(f"box on slice {box.slice_index}: {exc}") from None


def visible_boxes(
    session: Session, viewer: m.User, study_id: int, *, slice_index: int | None = None,
    include_dataset: bool = False,
) -> list[m.Box]:
    """Boxes ``viewer`` may see: their own as annotator, everyone's as adjudicator/admin."""
    stmt = select(m.Box).where(m.Box.study_id == study_id, m.Box.deleted_at.is_(None))
    if slice_index is not None:
        stmt = stmt.where(m.Box.slice_index == slice_index)
    visible = reader_scope(viewer)
    if visible is ReaderScope.nobody:
        return []
    if visible is ReaderScope.own:
        stmt = stmt.where(m.Box.reader_id == viewer.id)
    if not include_dataset:
        stmt = stmt.where(m.Box.source != "dataset")
    return list(session.scalars(stmt.order_by(m.Box.slice_index, m.Box.id)))


# --- level calls --------------------------------------------------------------------------------


def set_level_call(
    session: Session, actor: m.User, study_id: int, level: str, call: str, *,
    expected_version: int | None = None,
) -> m.LevelLabel:
    """Record the reader's call (fractured / not_fractured / unsure) on one level.

    ``expected_version``: the version of the call the reader was shown (None: last write wins).
    A box on a level marks it fractured, so another call is refused while the reader has boxes
    on that level.

    Raises:
        ConflictError: the call was changed elsewhere (another tab) since ``expected_version``.
        InputError: an unknown call or level, or a non-fractured call on a level with boxes.
    """
    if call not in CALLS:
        raise InputError(f"'{call}' is not a level call; use one of {sorted(CALLS)}")
    name = level_name(level_id(level))
    _require_writable(session, actor, study_id)
    if call != LevelCall.fractured.value:
        n_boxes = session.scalar(
            select(func.count()).select_from(m.Box).where(
                m.Box.study_id == study_id, m.Box.reader_id == actor.id, m.Box.level == name,
                m.Box.deleted_at.is_(None),
            )
        ) or 0
        if n_boxes:
            raise InputError(
                f"you drew {n_boxes} box{'es' if n_boxes > 1 else ''} on {name}, and a box marks "
                f"its level fractured; delete those boxes or move them to another level first"
            )
    return _write_call(session, actor, study_id, name, call, expected_version=expected_version)


def _write_call(
    session: Session, actor: m.User, study_id: int, name: str, call: str, *,
    expected_version: int | None = None, only_if_different: bool = False,
) -> m.LevelLabel:
    """Insert or update one call, safe against the same reader writing from two tabs at once.

    The insert runs in a savepoint: when a concurrent transaction inserted the same (study,
    reader, level) first, the unique constraint refuses ours and the row is updated instead.
    Updates are conditional UPDATEs (on ``expected_version`` when given), so two tabs setting a
    call at the same moment do not fail on each other unless a version was asked for.
    """
    def current() -> m.LevelLabel | None:
        return session.scalars(
            select(m.LevelLabel).where(
                m.LevelLabel.study_id == study_id, m.LevelLabel.reader_id == actor.id,
                m.LevelLabel.level == name,
            ).execution_options(populate_existing=True)
        ).first()

    row = current()
    if row is None:
        if expected_version is not None:
            raise ConflictError(
                f"your call on {name} was removed elsewhere since you loaded it; reload the study"
            )
        try:
            with session.begin_nested():
                row = m.LevelLabel(study_id=study_id, reader_id=actor.id, level=name, call=call)
                session.add(row)
        except IntegrityError:  # the same reader's other tab inserted it first
            row = current()
            if row is None:
                raise
        else:
            record(session, actor.username, "level.set", "level_label", f"{study_id}:{name}",
                   None, {"call": call, "reader": actor.username})
            return row
    if expected_version is not None and row.version != expected_version:
        raise ConflictError(
            f"your call on {name} was changed to '{row.call}' elsewhere (another tab?) since you "
            "loaded it; reload to see it, then set it again if needed"
        )
    if row.call == call:
        return row
    stmt = update(m.LevelLabel).where(m.LevelLabel.id == row.id)
    if expected_version is not None:
        stmt = stmt.where(m.LevelLabel.version == expected_version)
    if only_if_different:
        stmt = stmt.where(m.LevelLabel.call != call)
    before = {"call": row.call}
    result = session.execute(
        stmt.values(call=call, version=m.LevelLabel.version + 1,
                    updated_at=dt.datetime.now(dt.UTC))
        .execution_options(synchronize_session=False)
    )
    changed = result.rowcount > 0  # type: ignore[attr-defined]
    if expected_version is not None and not changed:
        raise ConflictError(
            f"your call on {name} was changed elsewhere (another tab?) at the same moment; reload "
            "to see it, then set it again if needed"
        )
    row = session.get(m.LevelLabel, row.id, populate_existing=True) or row
    if not changed:  # another tab made the same change first
        return row
    record(session, actor.username, "level.set", "level_label", f"{study_id}:{name}", before,
           {"call": call, "reader": actor.username})
    return row


def _mark_fractured_by_box(session: Session, actor: m.User, study_id: int, level: str) -> None:
    """A box on a level marks that level fractured (unless the reader already said so).

    Not on a radiograph: there a box outlines one vertebra and its level is the vertebra's label
    (``db.film_reading``), so drawing, moving or labelling it never makes a fracture call."""
    if is_radiograph_series(primary_series(session, study_id)):
        return
    _write_call(session, actor, study_id, level_name(level_id(level)),
                LevelCall.fractured.value, only_if_different=True)


def visible_level_calls(session: Session, viewer: m.User, study_id: int) -> dict[str, dict[str, str]]:
    """reader username -> level -> call, filtered by the same blinding rules as boxes."""
    stmt = (
        select(m.User.username, m.LevelLabel.level, m.LevelLabel.call)
        .join(m.User, m.User.id == m.LevelLabel.reader_id)
        .where(m.LevelLabel.study_id == study_id)
    )
    visible = reader_scope(viewer)
    if visible is ReaderScope.nobody:
        return {}
    if visible is ReaderScope.own:
        stmt = stmt.where(m.LevelLabel.reader_id == viewer.id)
    out: dict[str, dict[str, str]] = {}
    for username, level, call in session.execute(stmt):
        out.setdefault(username, {})[level] = call
    return out


def own_level_calls(session: Session, reader: m.User, study_id: int) -> dict[str, m.LevelLabel]:
    """level -> the reader's own call row (with its version, for :func:`set_level_call`)."""
    rows = session.scalars(
        select(m.LevelLabel).where(
            m.LevelLabel.study_id == study_id, m.LevelLabel.reader_id == reader.id
        )
    )
    return {row.level: row for row in rows}


def visible_calls_by_study(
    session: Session, viewer: m.User, study_ids: Iterable[int] | None = None
) -> dict[str, dict[str, dict[str, str]]]:
    """StudyInstanceUID -> reader username -> level -> call, across studies, blinded as
    :func:`visible_level_calls` (an annotator gets only their own calls, a viewer nothing)."""
    stmt = (
        select(m.Study.study_uid, m.User.username, m.LevelLabel.level, m.LevelLabel.call)
        .join(m.Study, m.Study.id == m.LevelLabel.study_id)
        .join(m.User, m.User.id == m.LevelLabel.reader_id)
        .order_by(m.Study.study_uid, m.User.username, m.LevelLabel.level)
    )
    if study_ids is not None:
        stmt = stmt.where(m.LevelLabel.study_id.in_(list(study_ids)))
    visible = reader_scope(viewer)
    if visible is ReaderScope.nobody:
        return {}
    if visible is ReaderScope.own:
        stmt = stmt.where(m.LevelLabel.reader_id == viewer.id)
    out: dict[str, dict[str, dict[str, str]]] = {}
    for uid, username, level, call in session.execute(stmt):
        out.setdefault(uid, {}).setdefault(username, {})[level] = call
    return out


def visible_core_boxes(
    session: Session, viewer: m.User, study_id: int, *, slice_index: int | None = None
) -> list[Box]:
    """:func:`visible_boxes` as :class:`spine_core.boxes.Box` values with the reader's user
    name (for the union and agreement statistics)."""
    boxes = visible_boxes(session, viewer, study_id, slice_index=slice_index)
    names: dict[int, str] = {
        uid: name for uid, name in session.execute(
            select(m.User.id, m.User.username).where(m.User.id.in_({b.reader_id for b in boxes}))
        )
    } if boxes else {}
    return [
        Box(x=b.x, y=b.y, width=b.width, height=b.height, slice_index=b.slice_index,
                reader=names[b.reader_id], level=b.level, id=b.id)
        for b in boxes
    ]


@dataclass(frozen=True)
class AssignmentRow:
    """One reader's assignment as the admin's overview lists it."""

    study_id: int
    study_uid: str
    study_status: str
    reader: str
    status: str
    assigned_by: str
    assigned_at: dt.datetime
    n_boxes: int


def assignment_overview(session: Session, actor: m.User) -> list[AssignmentRow]:
    """Every assignment with its reader and progress (admins and adjudicators only)."""
    if not can(actor.role, Permission.see_all_readers):
        raise PermissionDenied("only admins and adjudicators see every reader's assignments")
    n_boxes = (
        select(func.count(m.Box.id))
        .where(m.Box.study_id == m.Assignment.study_id, m.Box.reader_id == m.Assignment.reader_id,
               m.Box.deleted_at.is_(None))
        .correlate(m.Assignment)
        .scalar_subquery()
    )
    rows = session.execute(
        select(m.Assignment, m.Study.study_uid, m.Study.status, m.User.username, n_boxes)
        .join(m.Study, m.Study.id == m.Assignment.study_id)
        .join(m.User, m.User.id == m.Assignment.reader_id)
        .order_by(m.Study.study_uid, m.User.username)
    ).all()
    return [
        AssignmentRow(a.study_id, uid, study_status, reader, a.status, a.assigned_by,
                      a.assigned_at, int(count or 0))
        for a, uid, study_status, reader, count in rows
    ]


def active_annotators(session: Session) -> list[m.User]:
    """Active annotator accounts, by user name (the readers an admin can assign)."""
    return list(session.scalars(
        select(m.User).where(m.User.role == Role.annotator.value, m.User.active.is_(True))
        .order_by(m.User.username)
    ))


@dataclass(frozen=True)
class AgreementInputs:
    """What the agreement statistics need, per StudyInstanceUID, as ``viewer`` may see it.

    ``calls[uid][reader][level]``; ``boxes[uid]`` (core boxes with reader names, dataset boxes
    excluded); ``final[uid][level]`` the final labels (``db.exporter.final_labels``);
    ``study_ids[uid]`` the database id.
    """

    calls: dict[str, dict[str, dict[str, str]]]
    boxes: dict[str, list[Box]]
    final: dict[str, dict[str, bool]]
    study_ids: dict[str, int]


def agreement_inputs(
    session: Session, viewer: m.User, *, submitted_only: bool = True,
    unmarked_as_not_fractured: bool = True,
) -> AgreementInputs:
    """Readers' calls, boxes and the final labels of every study with readers' work.

    ``submitted_only``: only readers who submitted the study (work in progress is incomplete).
    ``unmarked_as_not_fractured``: a reader who submitted without marking a level is taken to
    call it not fractured, on the cervical levels and every level another reader of the study
    marked (the adjudication rule); otherwise unmarked levels are missing ratings.
    Blinded like :func:`visible_calls_by_study` (an annotator sees only their own work).
    """
    from db.exporter import final_labels
    from spine_core.labels import CERVICAL

    stmt = (
        select(m.Study.study_uid, m.Study.id, m.User.username, m.Assignment.status)
        .join(m.Study, m.Study.id == m.Assignment.study_id)
        .join(m.User, m.User.id == m.Assignment.reader_id)
        .order_by(m.Study.study_uid, m.User.username)
    )
    if submitted_only:
        stmt = stmt.where(m.Assignment.status == m.AssignmentStatus.submitted.value)
    visible = reader_scope(viewer)
    if visible is ReaderScope.nobody:
        return AgreementInputs({}, {}, {}, {})
    if visible is ReaderScope.own:
        stmt = stmt.where(m.Assignment.reader_id == viewer.id)
    readers: dict[str, set[str]] = {}
    study_ids: dict[str, int] = {}
    for uid, study_id, username, _status in session.execute(stmt):
        readers.setdefault(uid, set()).add(username)
        study_ids[uid] = int(study_id)
    explicit = visible_calls_by_study(session, viewer, study_ids.values())
    calls: dict[str, dict[str, dict[str, str]]] = {}
    boxes: dict[str, list[Box]] = {}
    final: dict[str, dict[str, bool]] = {}
    for uid, names in readers.items():
        own = {r: c for r, c in explicit.get(uid, {}).items() if r in names}
        if unmarked_as_not_fractured:
            scope = set(CERVICAL).union(*(set(c) for c in own.values()))
            own = {r: {lvl: own.get(r, {}).get(lvl, LevelCall.not_fractured.value)
                       for lvl in scope} for r in names}
        calls[uid] = own
        boxes[uid] = [b for b in visible_core_boxes(session, viewer, study_ids[uid])
                      if b.reader in names]
        final[uid] = final_labels(session, study_ids[uid])
    return AgreementInputs(calls, boxes, final, study_ids)
