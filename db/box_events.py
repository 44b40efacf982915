"""Box events of the reading workstation: create, change and delete a box, each checked against the
version it was based on, with the fracture's interpolated boxes recomputed in the same transaction.

The browser viewer holds the study's boxes as :class:`BoxState` values (id, version, slice,
corners, level, fracture, key or interpolated) and the study's :func:`study_version`, and sends
one event per user action:

* :func:`create_box` — a new key box (optionally of a fracture: the reader's own id, e.g. "F1");
* :func:`change_box` — new geometry / level / fracture of a box, based on the version the tab
  showed; adjusting an interpolated box makes it a key box;
* :func:`delete_box` — based on the version the tab showed; a key box only (an interpolated box
  is removed by deleting or moving the keys around it).

A stale version (the box was changed or deleted in another tab or on another device meanwhile)
raises :class:`~spine_core.errors.ConflictError` and nothing is written: no event ever deletes or
overwrites an edit its tab did not see. A reader's events on one study run one after the other
(PostgreSQL: the reader's assignment row is locked ``FOR NO KEY UPDATE``; SQLite: ``BEGIN
IMMEDIATE``), so two tabs recomputing one fracture cannot interleave.

After each event the fracture's interpolated boxes follow the rule of
:mod:`spine_core.interpolation` (key boxes on one slice: the later wins and the other is
soft-deleted, "superseded"); they are real rows (``source='interpolated'``, ``is_key=False``),
updated in place where only their corners changed, so they appear in ``visible_boxes``, the
union, the exports and the agreement statistics like any box. A box dragged partly outside the
image is clipped to it; a box of zero size, or one wholly outside the image, is refused.

Levels follow the boxes: a box marks its level fractured; when an event leaves a level the
reader called fractured without any box, the event's ``ask_levels`` names it so the page can ask
whether the level is still fractured (the call is never silently changed).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from db.access import ReaderScope, reader_scope
from db.annotations import (
    BoxInput,
    _box_dict,
    _lock_own_assignment,
    _mark_fractured_by_box,
    _require_writable,
    _validated,
    primary_series,
    visible_boxes,
)
from db.audit import record
from spine_core.adjudication import LevelCall
from spine_core.boxes import Box
from spine_core.errors import ConflictError, InputError, LabelVocabularyError, NotFound
from spine_core.interpolation import interpolate
from spine_core.labels import CRANIOCAUDAL_ORDER, level_id
from spine_core.roles import Permission, can

#: ``boxes.source`` of a box interpolated between two key boxes of its fracture.
INTERPOLATED = "interpolated"

#: Longest fracture id (``boxes.fracture`` is VARCHAR(64)).
FRACTURE_ID_MAX = 64


# --- values the viewer holds --------------------------------------------------------------------


@dataclass(frozen=True)
class BoxState:
    """One box as the viewer shows it. ``slice_index``: stored slice (position order);
    ``slice_number``: its DICOM instance number (RSNA's slice_number); ``x, y, width, height``:
    pixels of that slice (``x1 = x + width``, ``y1 = y + height``)."""

    id: int
    version: int
    reader: str
    slice_index: int
    slice_number: int
    x: float
    y: float
    width: float
    height: float
    level: str | None
    level_from_mask: bool
    fracture: str | None
    is_key: bool
    source: str
    note: str

    @property
    def interpolated(self) -> bool:
        return not self.is_key

    @property
    def x1(self) -> float:
        return self.x + self.width

    @property
    def y1(self) -> float:
        return self.y + self.height

    def as_box(self) -> Box:
        return Box(self.slice_index, self.x, self.y, self.width, self.height, reader=self.reader,
                   level=self.level, id=self.id)

    def as_input(self) -> BoxInput:
        """This box as a :class:`BoxInput` (change fields with ``dataclasses.replace`` and pass it
        to :func:`change_box`); an interpolated box's input is a drawn key box."""
        return BoxInput(
            self.slice_index, self.x, self.y, self.width, self.height, level=self.level,
            level_from_mask=self.level_from_mask, note=self.note,
            source=self.source if self.is_key else "drawn", fracture=self.fracture, is_key=True,
        )


#: The (level, fracture) pairs of a reader's boxes on a study (what the page's panels follow).
Outline = frozenset[tuple[str | None, str | None]]


class StudyBoxes(NamedTuple):
    """What :func:`boxes_state` returns: the visible boxes and the study's version stamp."""

    boxes: list[BoxState]
    study_version: int


@dataclass(frozen=True)
class BoxEvent:
    """What one event did.

    ``box``: the box created or changed (None after a delete); ``superseded``: key boxes replaced
    by this box on their slice (soft-deleted; tell the reader); ``interpolated``: the interpolated
    boxes of the fracture(s) the event touched, as they are now; ``removed``: ids of every box this
    event took away (the deleted box, superseded keys, interpolated boxes no longer between keys);
    ``ask_levels``: levels called fractured that have no box left (ask the reader whether each is
    still fractured); ``study_version``: the stamp after the event; ``replayed``: a create whose
    ``client_key`` had already made ``box`` (nothing was written: ``box`` is that box as it is now,
    ``interpolated`` its fracture's interpolated boxes, the rest empty).

    Read in the event's transaction, so a caller need not read them again: ``boxes``, the reader's
    boxes after the event (key and interpolated, by slice, as :func:`boxes_state` gives the
    reader; None after a replay, or where the reader's role sees more than their own boxes) and
    ``outline_before``, the (level, fracture) pairs of the reader's boxes before it (None after a
    replay).
    """

    box: BoxState | None
    superseded: tuple[BoxState, ...] = ()
    interpolated: tuple[BoxState, ...] = ()
    removed: tuple[int, ...] = ()
    ask_levels: tuple[str, ...] = ()
    study_version: int = 0
    replayed: bool = False
    boxes: tuple[BoxState, ...] | None = None
    outline_before: Outline | None = None

    @property
    def ask_level(self) -> str | None:
        """The first level to ask about (None: nothing to ask)."""
        return self.ask_levels[0] if self.ask_levels else None


@dataclass
class FractureRefresh:
    """What :func:`refresh_fracture` changed in one fracture's boxes."""

    fracture: str
    superseded: list[m.Box] = field(default_factory=list)
    interpolated: list[m.Box] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    created: int = 0
    updated: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.superseded or self.removed or self.created or self.updated)


# --- reading ------------------------------------------------------------------------------------


def _instance_numbers(series: m.Series) -> list[int]:
    return [int(n) for n in series.instance_numbers] if series.instance_numbers else []


def _slice_number(numbers: Sequence[int], slice_index: int) -> int:
    return int(numbers[slice_index]) if numbers and 0 <= slice_index < len(numbers) else slice_index + 1


def _state(row: m.Box, reader: str) -> BoxState:
    return BoxState(
        id=row.id, version=row.version, reader=reader, slice_index=row.slice_index,
        slice_number=row.instance_number, x=row.x, y=row.y, width=row.width, height=row.height,
        level=row.level, level_from_mask=row.level_from_mask, fracture=row.fracture,
        is_key=row.is_key, source=row.source, note=row.note,
    )


def study_version(session: Session, viewer: m.User, study_id: int) -> int:
    """A cheap stamp of the study's boxes and level calls as ``viewer`` sees them (their own as
    annotator, every reader's as adjudicator or admin; 0 for viewers).

    It is the sum of the version numbers of those rows, deleted boxes included: every create adds
    a row of version 1 and every change or (soft) delete adds 1 to a version, and rows are never
    removed, so the stamp grows with every change. A tab compares it with the stamp it loaded to
    know whether the study changed elsewhere.
    """
    scope = reader_scope(viewer)
    if scope is ReaderScope.nobody:
        return 0
    boxes = select(func.coalesce(func.sum(m.Box.version), 0)).where(
        m.Box.study_id == study_id, m.Box.source != "dataset")
    calls = select(func.coalesce(func.sum(m.LevelLabel.version), 0)).where(
        m.LevelLabel.study_id == study_id)
    if scope is ReaderScope.own:
        boxes = boxes.where(m.Box.reader_id == viewer.id)
        calls = calls.where(m.LevelLabel.reader_id == viewer.id)
    return int(session.scalar(select(boxes.scalar_subquery() + calls.scalar_subquery())) or 0)


def boxes_state(
    session: Session, viewer: m.User, study_id: int, *, slice_index: int | None = None,
    version: int | None = None,
) -> StudyBoxes:
    """The boxes ``viewer`` may see (blinded like ``db.annotations.visible_boxes``: an annotator
    their own, adjudicators and admins everyone's, viewers none), key and interpolated, by slice,
    with the study's version stamp (:func:`study_version`; ``version``: the stamp already taken
    in this transaction since its last write, e.g. an event's ``study_version``)."""
    rows = visible_boxes(session, viewer, study_id, slice_index=slice_index)
    names = _usernames(session, {r.reader_id for r in rows}, {viewer.id: viewer.username})
    return StudyBoxes([_state(r, names[r.reader_id]) for r in rows],
                      study_version(session, viewer, study_id) if version is None else version)


def visible_box(session: Session, viewer: m.User, study_id: int, box_id: int) -> BoxState | None:
    """Box ``box_id`` of this study as :func:`boxes_state` shows it to ``viewer`` (None: deleted,
    on another study, or not theirs to see); a primary-key read instead of the whole study."""
    scope = reader_scope(viewer)
    row = session.get(m.Box, box_id) if scope is not ReaderScope.nobody else None
    if (row is None or row.study_id != study_id or row.deleted_at is not None
            or row.source == "dataset" or (scope is ReaderScope.own and row.reader_id != viewer.id)):
        return None
    return _state(row, _usernames(session, {row.reader_id}, {viewer.id: viewer.username})[row.reader_id])


def _usernames(session: Session, ids: Iterable[int], known: dict[int, str]) -> dict[int, str]:
    wanted = set(ids) - set(known)
    if not wanted:
        return dict(known)
    return {**known, **{uid: name for uid, name in session.execute(
        select(m.User.id, m.User.username).where(m.User.id.in_(wanted)))}}


def next_fracture_id(session: Session, actor: m.User, study_id: int) -> str:
    """A fracture id the reader has not used on this study yet: "F1", "F2", ..."""
    used = session.scalars(
        select(m.Box.fracture).where(m.Box.study_id == study_id, m.Box.reader_id == actor.id,
                                     m.Box.fracture.is_not(None)).distinct()
    ).all()
    numbers = [int(match.group(1)) for f in used if f and (match := re.fullmatch(r"F(\d+)", f))]
    return f"F{max(numbers, default=0) + 1}"


# --- events -------------------------------------------------------------------------------------


def create_box(
    session: Session, actor: m.User, study_id: int, box: BoxInput, *,
    base_study_version: int | None = None, client_key: str | None = None,
) -> BoxEvent:
    """Add the reader's key box ``box`` (of ``box.fracture`` when given) to a study.

    ``base_study_version``: the :func:`study_version` the tab showed. When given and the new box
    would supersede a key box of its fracture on the same slice, the stamp must still be current
    (otherwise the tab may not have seen that key box, and replacing it is refused).

    ``client_key``: the key the viewer made for this new box (``boxes.client_key``, unique per
    study and reader). A create whose key already made a box of the reader's on this study writes
    nothing and returns that box as it is now (``replayed``): the same create sent again after its
    reply was lost, or twice at once, leaves one box and one ``box.create`` audit entry.

    Raises:
        InputError: a zero-size box, one wholly outside the image, a slice that does not exist, an
            unknown level, an interpolated (``is_key=False``) box.
        PermissionDenied: not the reader's assigned, unsubmitted study.
        ConflictError: see ``base_study_version``; a replayed create whose box was deleted since.
    """
    return _create(session, actor, study_id, box, base_study_version=base_study_version, clip=True,
                   client_key=client_key)


def change_box(
    session: Session, actor: m.User, box_id: int, base_version: int, box: BoxInput,
) -> BoxEvent:
    """Replace the reader's box ``box_id`` by ``box`` (geometry, level, note and fracture: build
    it from the box's :meth:`BoxState.as_input`), if the box is still at ``base_version``.

    Adjusting an interpolated box makes it a key box of its fracture. Moving a key box onto the
    slice of another key box of the same fracture supersedes that one.

    Raises:
        ConflictError: the box was changed or deleted elsewhere since ``base_version``.
        NotFound: no such box of the reader's.
        InputError, PermissionDenied: as :func:`create_box`.
    """
    return _change(session, actor, box_id, base_version, box, clip=True)


def delete_box(session: Session, actor: m.User, box_id: int, base_version: int) -> BoxEvent:
    """Soft-delete the reader's key box ``box_id`` if it is still at ``base_version``; the
    fracture's interpolated boxes follow. ``ask_levels`` of the result names a level left
    without boxes that the reader called fractured.

    Raises:
        ConflictError: the box was changed or deleted elsewhere since ``base_version``.
        InputError: the box is interpolated (adjust it to make it a key box, or delete or move a
            key box around it).
        NotFound, PermissionDenied: as :func:`change_box`.
    """
    return _delete(session, actor, box_id, base_version)


# --- event internals (also behind db.annotations.save_box / delete_box) -------------------------


def _begin_event(session: Session, actor: m.User, study_id: int) -> m.Assignment:
    """Serialise the reader's events on this study and check they may write.

    The assignment row is locked first (``FOR NO KEY UPDATE`` on PostgreSQL; SQLite writers are
    serialised by ``BEGIN IMMEDIATE``) and reloaded, so the status checked and every row read
    afterwards are the committed state after any other tab's event. A caller that locked it
    earlier in the transaction (``db.box_event_requests.writer``) is not asked again.
    """
    if can(actor.role, Permission.annotate):
        _lock_own_assignment(session, actor, study_id)  # once per transaction
    return _require_writable(session, actor, study_id)


def _stale(row: m.Box, base_version: int) -> ConflictError:
    what = "deleted" if row.deleted_at is not None else "changed"
    return ConflictError(
        f"box {row.id} on slice {row.instance_number} was {what} elsewhere since you loaded it "
        f"(version {base_version}, now {row.version}): the study changed in another tab or device "
        "and was refreshed to show its current boxes (reload the page if it was not); your change "
        "was not saved, so make it again if it is still needed"
    )


def _own_row(session: Session, actor: m.User, box_id: int) -> m.Box:
    row = session.get(m.Box, box_id)
    if row is None or row.reader_id != actor.id or row.source == "dataset":
        raise NotFound(f"box {box_id} does not exist or is not yours")
    return row


def _locked_row(session: Session, actor: m.User, box_id: int, base_version: int | None) -> m.Box:
    """The reader's box, reloaded after :func:`_begin_event`, checked against ``base_version``
    (None: no check, the box must merely still exist)."""
    row = _own_row(session, actor, box_id)
    _begin_event(session, actor, row.study_id)
    row = session.get(m.Box, box_id, populate_existing=True) or row
    if base_version is not None and (row.version != base_version or row.deleted_at is not None):
        raise _stale(row, base_version)
    if row.deleted_at is not None:
        raise NotFound(f"box {box_id} does not exist or is not yours")
    return row


def _fracture_id(value: str | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > FRACTURE_ID_MAX:
        raise InputError(f"fracture id '{text[:20]}…' is longer than {FRACTURE_ID_MAX} characters")
    return text


def _checked(series: m.Series, box: BoxInput, *, clip: bool) -> BoxInput:
    """The box ready to store: a key box, positive size, clipped to the image when ``clip`` (a
    box wholly outside is refused), on an existing slice, level in canonical spelling."""
    if not box.is_key:
        raise InputError(
            "interpolated boxes are made from the key boxes of their fracture; draw key boxes "
            "(is_key=True) and the boxes between them follow"
        )
    box = replace(box, fracture=_fracture_id(box.fracture))
    values = (box.x, box.y, box.width, box.height)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        if box.width <= 0 or box.height <= 0:
            raise InputError(
                f"the box on slice {box.slice_index} has zero size ({box.width:g}×{box.height:g} "
                "pixels); drag a rectangle, a click draws no box (width and height must be positive)"
            )
        n_slices, rows, cols = (int(v) for v in series.shape)
        outside = box.x < 0 or box.y < 0 or box.x + box.width > cols or box.y + box.height > rows
        if clip and outside:
            from spine_core.annotation_geometry import clip_to_image

            clipped = clip_to_image(Box(box.slice_index, *values), rows=rows, cols=cols)
            if clipped is None:
                raise InputError(
                    f"the box on slice {box.slice_index} lies wholly outside the {cols}×{rows} image; "
                    "draw it on the image"
                )
            box = replace(box, x=clipped.x, y=clipped.y, width=clipped.width, height=clipped.height)
    return _validated(series, box)


def _live(study_id: int, reader_id: int) -> list[ColumnElement[bool]]:
    """The reader's boxes on a study that count: not deleted, not the dataset's."""
    return [m.Box.study_id == study_id, m.Box.reader_id == reader_id, m.Box.deleted_at.is_(None),
            m.Box.source != "dataset"]


def _outline(session: Session, study_id: int, reader_id: int) -> Outline:
    """The (level, fracture) pairs of the reader's live boxes (one query)."""
    return frozenset((level, fracture) for level, fracture in session.execute(
        select(m.Box.level, m.Box.fracture).where(*_live(study_id, reader_id)).distinct()))


def _levels(outline: Outline) -> set[str]:
    return {level for level, _ in outline if level is not None}


def _levels_to_ask(session: Session, study_id: int, reader_id: int, before: set[str],
                   after: set[str]) -> tuple[str, ...]:
    """Levels that had a box before the event, have none now, and are called fractured."""
    lost = before - after
    if not lost:
        return ()
    fractured = set(session.scalars(
        select(m.LevelLabel.level).where(
            m.LevelLabel.study_id == study_id, m.LevelLabel.reader_id == reader_id,
            m.LevelLabel.level.in_(lost), m.LevelLabel.call == LevelCall.fractured.value,
        )
    ).all())
    return tuple(sorted(fractured, key=_head_to_feet))


def _head_to_feet(level: str) -> int:
    try:
        return CRANIOCAUDAL_ORDER.index(level_id(level))
    except (ValueError, LabelVocabularyError):  # an unknown spelling sorts last
        return len(CRANIOCAUDAL_ORDER)


def _finish(
    session: Session, actor: m.User, study_id: int, row: m.Box | None,
    refreshes: Sequence[FractureRefresh], removed: Iterable[int], outline_before: Outline,
) -> BoxEvent:
    """The event's result: what it changed, and the reader's boxes and the study's stamp after
    it (read once here; the caller's reply reuses them)."""
    session.flush()
    name = actor.username
    live = session.scalars(select(m.Box).where(*_live(study_id, actor.id))
                           .order_by(m.Box.slice_index, m.Box.id)).all()
    gone = [*removed]
    superseded: list[BoxState] = []
    interpolated: list[BoxState] = []
    for refresh in refreshes:
        superseded += [_state(r, name) for r in refresh.superseded]
        interpolated += [_state(r, name) for r in refresh.interpolated]
        gone += [r.id for r in refresh.superseded] + refresh.removed
    return BoxEvent(
        box=_state(row, name) if row is not None else None,
        superseded=tuple(superseded),
        interpolated=tuple(sorted(interpolated, key=lambda b: (b.fracture or "", b.slice_index))),
        removed=tuple(dict.fromkeys(gone)),
        ask_levels=_levels_to_ask(session, study_id, actor.id, _levels(outline_before),
                                  {r.level for r in live if r.level is not None}),
        study_version=study_version(session, actor, study_id),
        boxes=(tuple(_state(r, name) for r in live)
               if reader_scope(actor) is ReaderScope.own else None),
        outline_before=outline_before,
    )


def _would_supersede(session: Session, study_id: int, reader_id: int, fracture: str,
                     slice_index: int, exclude: int | None = None) -> bool:
    stmt = select(m.Box.id).where(
        m.Box.study_id == study_id, m.Box.reader_id == reader_id, m.Box.fracture == fracture,
        m.Box.slice_index == slice_index, m.Box.is_key.is_(True), m.Box.deleted_at.is_(None),
    )
    if exclude is not None:
        stmt = stmt.where(m.Box.id != exclude)
    return session.scalars(stmt.limit(1)).first() is not None


def _keyed_row(session: Session, actor: m.User, study_id: int, client_key: str) -> m.Box | None:
    """The reader's box that ``client_key`` made on this study (deleted or not), freshly read."""
    return session.scalars(
        select(m.Box).where(m.Box.study_id == study_id, m.Box.reader_id == actor.id,
                            m.Box.client_key == client_key)
        .execution_options(populate_existing=True)
    ).first()


def _same_place(row: m.Box, box: BoxInput) -> bool:
    return (row.slice_index == box.slice_index and row.fracture == box.fracture
            and all(math.isclose(a, b, abs_tol=1e-6) for a, b in
                    ((row.x, box.x), (row.y, box.y), (row.width, box.width), (row.height, box.height))))


def _replay(session: Session, actor: m.User, study_id: int, row: m.Box, box: BoxInput) -> BoxEvent:
    """What a create whose key already made ``row`` answers: that box as it is now."""
    if row.deleted_at is not None:
        raise ConflictError(
            f"box {row.id} on slice {row.instance_number}, saved from this box already, was deleted "
            "in another tab or device since; the study was refreshed to show its current boxes"
        )
    if row.version == 1 and not _same_place(row, box):  # never changed, yet not this box
        raise InputError(
            f"client key {row.client_key!r} already saved box {row.id}, a different box; a new box "
            "needs a key of its own"
        )
    name = actor.username
    interpolated: list[BoxState] = []
    if row.fracture is not None:
        interpolated = [_state(r, name) for r in session.scalars(
            select(m.Box).where(
                m.Box.study_id == study_id, m.Box.reader_id == actor.id,
                m.Box.fracture == row.fracture, m.Box.deleted_at.is_(None),
                m.Box.is_key.is_(False), m.Box.source != "dataset",
            ).order_by(m.Box.slice_index))]
    return BoxEvent(box=_state(row, name), interpolated=tuple(interpolated),
                    study_version=study_version(session, actor, study_id), replayed=True)


def _create(
    session: Session, actor: m.User, study_id: int, box: BoxInput, *,
    base_study_version: int | None = None, clip: bool = True, client_key: str | None = None,
) -> BoxEvent:
    _begin_event(session, actor, study_id)
    series = primary_series(session, study_id)
    box = _checked(series, box, clip=clip)
    if client_key is not None:
        # before the supersede check: a retried create finds its own box on that slice
        made = _keyed_row(session, actor, study_id, client_key)
        if made is not None:
            return _replay(session, actor, study_id, made, box)
    if (base_study_version is not None and box.fracture is not None
            and _would_supersede(session, study_id, actor.id, box.fracture, box.slice_index)
            and study_version(session, actor, study_id) != base_study_version):
        raise ConflictError(
            f"a key box of fracture {box.fracture} on slice {box.slice_index} would be replaced, but "
            "the study changed in another tab or device since you loaded it and was refreshed; "
            "look at the current boxes and draw the box again if it is still needed"
        )
    outline_before = _outline(session, study_id, actor.id)
    row = m.Box(
        study_id=study_id, series_id=series.id, reader_id=actor.id,
        slice_index=box.slice_index, instance_number=_slice_number(_instance_numbers(series), box.slice_index),
        x=box.x, y=box.y, width=box.width, height=box.height, level=box.level,
        level_from_mask=box.level_from_mask, note=box.note, source=box.source,
        fracture=box.fracture, is_key=True, client_key=client_key,
    )
    if client_key is None:
        session.add(row)
        session.flush()
    else:
        # The reader's events on a study are serialised (_begin_event), so the look-up above sees
        # a copy committed first; should two copies still meet here, the unique index
        # uq_boxes_client_key stops the second, which then answers with the first's box.
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            made = _keyed_row(session, actor, study_id, client_key)
            if made is None:
                raise
            return _replay(session, actor, study_id, made, box)
    record(session, actor.username, "box.create", "box", str(row.id), None, _box_dict(row))
    refreshes = []
    if row.fracture is not None:
        refreshes.append(refresh_fracture(session, study_id, actor.id, row.fracture, actor.username,
                                          latest=row.id, series=series))
    if row.level is not None:
        _mark_fractured_by_box(session, actor, study_id, row.level)
    return _finish(session, actor, study_id, row, refreshes, (), outline_before)


def _change(
    session: Session, actor: m.User, box_id: int, base_version: int | None, box: BoxInput, *,
    clip: bool = True, keep_fracture: bool = False,
) -> BoxEvent:
    row = _locked_row(session, actor, box_id, base_version)
    study_id = row.study_id
    series = primary_series(session, study_id)
    if keep_fracture:
        box = replace(box, fracture=row.fracture, is_key=True)
    box = _checked(series, box, clip=clip)
    outline_before = _outline(session, study_id, actor.id)
    before = _box_dict(row)
    old_fracture = row.fracture
    row.slice_index = box.slice_index
    row.instance_number = _slice_number(_instance_numbers(series), box.slice_index)
    row.x, row.y, row.width, row.height = box.x, box.y, box.width, box.height
    row.level, row.level_from_mask, row.note = box.level, box.level_from_mask, box.note
    row.fracture = box.fracture
    if not row.is_key:  # adjusting an interpolated box makes it a key box
        row.is_key = True
        row.source = box.source if box.source not in (INTERPOLATED, "dataset") else "drawn"
    row.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    record(session, actor.username, "box.update", "box", str(row.id), before, _box_dict(row))
    refreshes = [
        refresh_fracture(session, study_id, actor.id, f, actor.username, latest=row.id, series=series)
        for f in dict.fromkeys((old_fracture, row.fracture)) if f is not None
    ]
    if row.level is not None:
        _mark_fractured_by_box(session, actor, study_id, row.level)
    return _finish(session, actor, study_id, row, refreshes, (), outline_before)


def _delete(session: Session, actor: m.User, box_id: int, base_version: int | None) -> BoxEvent:
    row = _locked_row(session, actor, box_id, base_version)
    if not row.is_key:
        raise InputError(
            f"box {row.id} on slice {row.instance_number} is interpolated between the key boxes of "
            f"fracture {row.fracture}; adjust it to make it a key box, or delete or move a key box "
            "around it"
        )
    study_id = row.study_id
    outline_before = _outline(session, study_id, actor.id)
    before = _box_dict(row)
    row.deleted_at = dt.datetime.now(dt.UTC)
    session.flush()
    record(session, actor.username, "box.delete", "box", str(row.id), before, None)
    refreshes = []
    if row.fracture is not None:
        refreshes.append(refresh_fracture(session, study_id, actor.id, row.fracture, actor.username))
    return _finish(session, actor, study_id, None, refreshes, (row.id,), outline_before)


# --- interpolation in the database --------------------------------------------------------------


def refresh_fracture(
    session: Session, study_id: int, reader_id: int, fracture: str, actor: str, *,
    latest: int | None = None, series: m.Series | None = None,
) -> FractureRefresh:
    """Bring one fracture's interpolated boxes in line with its key boxes (in the caller's
    transaction; the caller serialises the reader's writes, see :func:`_begin_event`).

    Key boxes are taken in the order they were last changed (``latest``, the box of the current
    event, counts as the newest); of two keys on one slice the later wins and the other is
    soft-deleted (audit ``box.supersede``). Interpolated rows are created, updated in place (only
    when their corners or level differ) or soft-deleted; one ``fracture.interpolate`` audit entry
    records what changed. Nothing is written when the fracture is already in line.
    """
    series = series or primary_series(session, study_id)
    numbers = _instance_numbers(series)
    rows = session.scalars(
        select(m.Box).where(
            m.Box.study_id == study_id, m.Box.reader_id == reader_id, m.Box.fracture == fracture,
            m.Box.deleted_at.is_(None), m.Box.source != "dataset",
        ).order_by(m.Box.id)
    ).all()
    out = FractureRefresh(fracture)
    keys = sorted((r for r in rows if r.is_key), key=lambda r: (r.id == latest, r.updated_at, r.id))
    by_id = {r.id: r for r in keys}
    result = interpolate(
        Box(r.slice_index, r.x, r.y, r.width, r.height, reader=str(reader_id), level=r.level, id=r.id)
        for r in keys
    )
    now = dt.datetime.now(dt.UTC)
    winners = {k.slice_index: k.id for k in result.keys}
    for gone in result.superseded:
        row = by_id[int(gone.id)]  # type: ignore[arg-type]
        before = _box_dict(row)
        row.deleted_at = now
        record(session, actor, "box.supersede", "box", str(row.id), before,
               {"superseded_by": winners[row.slice_index], "fracture": fracture})
        out.superseded.append(row)
    existing: dict[int, m.Box] = {}
    for r in rows:
        if r.is_key:
            continue
        if r.slice_index in existing:  # a duplicate (never made by this code): drop it
            r.deleted_at = now
            out.removed.append(r.id)
        else:
            existing[r.slice_index] = r
    wanted = {i.box.slice_index: i for i in result.interpolated}
    for s, r in existing.items():
        if s not in wanted:
            r.deleted_at = now
            out.removed.append(r.id)
    for s, item in wanted.items():
        b = item.box
        nearer = by_id[int(item.nearer.id)]  # type: ignore[arg-type]
        values = (b.x, b.y, b.width, b.height, b.level, nearer.level_from_mask)
        found = existing.get(s)
        if found is None:
            r = m.Box(
                study_id=study_id, series_id=series.id, reader_id=reader_id, slice_index=s,
                instance_number=_slice_number(numbers, s), x=b.x, y=b.y, width=b.width,
                height=b.height, level=b.level, level_from_mask=nearer.level_from_mask, note="",
                source=INTERPOLATED, fracture=fracture, is_key=False,
            )
            session.add(r)
            out.created += 1
        else:
            r = found
            if (r.x, r.y, r.width, r.height, r.level, r.level_from_mask) != values:
                r.x, r.y, r.width, r.height, r.level, r.level_from_mask = values
                r.updated_at = now
                out.updated += 1
        out.interpolated.append(r)
    session.flush()
    if out.changed:
        record(session, actor, "fracture.interpolate", "fracture", f"{study_id}:{reader_id}:{fracture}",
               None, {
                   "keys": [k.slice_index for k in result.keys],
                   "interpolated": sorted(wanted),
                   "created": out.created, "updated": out.updated, "removed": out.removed,
                   "superseded": [r.id for r in out.superseded],
               })
    return out


# --- the older row-returning API (imports, the copy of predicted boxes, tests) -------------------


def save_box(
    session: Session,
    actor: m.User,
    study_id: int,
    box: BoxInput,
    *,
    box_id: int | None = None,
    expected_version: int | None = None,
) -> m.Box:
    """Create a box, or update the reader's own box ``box_id`` (checked against its version).

    The older form of :func:`create_box` / :func:`change_box`: a box outside the image is
    refused rather than clipped, ``expected_version=None`` skips the version check, and an update
    keeps the box's fracture. Its fracture's interpolated boxes follow either way.
    """
    if box_id is None:
        event = _create(session, actor, study_id, box, clip=False)
    else:
        event = _change(session, actor, box_id, expected_version, box, clip=False,
                                   keep_fracture=True)
    assert event.box is not None
    row = session.get(m.Box, event.box.id)
    assert row is not None
    return row


def delete_saved_box(
    session: Session, actor: m.User, box_id: int, *, expected_version: int | None = None
) -> None:
    """Soft-delete the reader's own box (kept for the audit trail); its fracture's interpolated
    boxes follow. :func:`delete_box` also says which levels to ask about."""
    _delete(session, actor, box_id, expected_version)
