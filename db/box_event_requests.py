"""One box event of the reading workstation -> one ``db.box_events`` call, for the page and the route.

Kept free of Streamlit so the Annotate page (a component value) and the box route of
``spine_web`` (``POST /spine-box-events``) share one copy:

* :func:`viewer_boxes` builds what the viewer draws (the reader's key and interpolated boxes, the
  model's boxes);
* :func:`apply_event` turns one :class:`spine_core.viewer_boxes.BoxEvent` into exactly one call of
  ``db.box_events`` (``create_box`` / ``change_box`` / ``delete_box``) with the version the tab
  showed, in the caller's transaction; a create carries the tab's ``client_key`` for the new box,
  so a create sent again (its reply lost, or the page's outbox sent twice) returns the box it
  already made instead of adding a second one;
* :func:`parse_request` checks a browser's JSON body field by field, and :func:`handle_request`
  applies it and says what the viewer shows next (:class:`BoxReply`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy.typing as npt
from sqlalchemy.orm import Session

from db import box_events as be
from db import models as m
from db.annotations import BoxInput, _lock_own_assignment
from db.study_grid import StudyGrid
from db.users import active_user
from spine_core.annotation_geometry import level_of_box
from spine_core.colours import MODEL_COLOUR
from spine_core.errors import ConflictError, InputError, PermissionDenied
from spine_core.viewer_boxes import BoxEvent, ViewerBox, event_from_browser, to_display

KEY_COLOUR = "#40a0ff"  # the reader's own boxes (key solid, interpolated dashed by the viewer)
MODEL_HEX = "#{:02x}{:02x}{:02x}".format(*MODEL_COLOUR)
EVENT_TYPES = ("created", "changed", "deleted")
ID_MAX = 64  # characters of a box id (a temporary "new-…" id or a database id)
COORD_MAX = 1e6  # |coordinate| in pixels; anything larger is not a drawn box


def box_label(b: be.BoxState) -> str:
    parts = [b.fracture or "", b.level or "no level", "" if b.is_key else "interp."]
    return " ".join(p for p in parts if p)


def viewer_boxes(own: Sequence[be.BoxState], model: Sequence[Any] = ()) -> list[ViewerBox]:
    """The reader's boxes and the model's. Key and interpolated boxes are both editable: moving
    or resizing an interpolated box (shown dashed) makes it a key box of its fracture."""
    out = [
        ViewerBox(str(b.id), b.version, b.slice_index, b.x, b.y, b.x1, b.y1,
                  kind="key" if b.is_key else "interpolated", level=b.level or "",
                  label=box_label(b), reader=b.reader, colour=KEY_COLOUR, editable=True)
        for b in own
    ]
    out += [
        ViewerBox(f"model-{i}", 0, p.slice_index, p.x, p.y, p.x + p.width, p.y + p.height,
                  kind="model", level=p.level or "", label=f"model {p.level or ''}".strip(),
                  colour=MODEL_HEX, editable=False)
        for i, p in enumerate(model)
    ]
    return out


@dataclass(frozen=True)
class Outcome:
    """What one event did, for the page: the db result and a line to show."""

    event: be.BoxEvent
    message: str
    off_vertebra: bool = False


def _level(labels: npt.NDArray[Any] | None, ev: BoxEvent) -> str | None:
    return level_of_box(labels, ev.x0, ev.y0, ev.width, ev.height) if labels is not None else None


def apply_event(session: Session, me: m.User, study_id: int, ev: BoxEvent, *,
                labels: npt.NDArray[Any] | None, fracture: str | None,
                base_study_version: int | None) -> Outcome:
    """Store one viewer event with exactly one ``db.box_events`` call (in ``session``'s
    transaction). ``labels``: the vertebra labels of the event's stored slice (None: no mask);
    ``fracture``: the fracture a new box joins (None: a box on its own).

    Raises ConflictError (stale tab), InputError, NotFound, PermissionDenied from the db layer.
    """
    if ev.type == "created":
        level = _level(labels, ev)
        result = be.create_box(
            session, me, study_id,
            BoxInput(ev.slice, ev.x0, ev.y0, ev.width, ev.height, level=level,
                     level_from_mask=True, fracture=fracture),
            base_study_version=base_study_version, client_key=ev.client_key)
        where = f" on {level}" if level else ""
        return Outcome(result, f"Box saved{where}" + (f" ({fracture})" if fracture else ""),
                       off_vertebra=labels is not None and level is None)
    try:
        box_id = int(ev.id)
    except ValueError:
        raise ConflictError(f"box {ev.id} is not saved yet; the study was refreshed") from None
    if ev.base_version is None:
        raise ConflictError(f"box {box_id}: the change came without the version it was based on")
    if ev.type == "deleted":
        return Outcome(be.delete_box(session, me, box_id, ev.base_version), "Box deleted")
    current = be.visible_box(session, me, study_id, box_id)
    if current is None:  # deleted (or never the reader's): change_box says which, as a conflict
        raise ConflictError(f"box {box_id} was deleted in another tab or device since you loaded it; "
                            "the study changed in another tab or device and was refreshed")
    box = replace(current.as_input(), slice_index=ev.slice, x=ev.x0, y=ev.y0, width=ev.width,
                  height=ev.height)
    level = current.level
    if current.level_from_mask or not current.level:
        level = _level(labels, ev) if labels is not None else current.level
        box = replace(box, level=level, level_from_mask=True)
    result = be.change_box(session, me, box_id, ev.base_version, box)
    return Outcome(result, "Box changed" + (f" on {level}" if level else ""),
                   off_vertebra=labels is not None and level is None)


# --- the browser's request (display coordinates) --------------------------------------------------


@dataclass(frozen=True)
class BoxRequest:
    """A checked request body: one event of the viewer on one study, in display coordinates
    (axial slice index, columns and rows of the axial image, as the viewer draws).
    ``client_key``: a created event's key for the new box (None: none sent)."""

    study: int
    type: str
    id: str
    base_version: int | None
    slice: int
    x0: float
    y0: float
    width: float
    height: float
    fracture: str | None
    base_study_version: int | None
    client_key: str | None = None

    def as_browser_event(self) -> dict[str, Any]:
        """The form :func:`spine_core.viewer_boxes.event_from_browser` reads."""
        return {"type": self.type, "id": self.id, "base_version": self.base_version,
                "slice": self.slice, "x0": self.x0, "y0": self.y0,
                "x1": self.x0 + self.width, "y1": self.y0 + self.height,
                "client_key": self.client_key}


def _int(raw: Mapping[str, Any], name: str, *, optional: bool = False, low: int = 0) -> int | None:
    value = raw.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"field {name}: a whole number is required, got {value!r:.40}")
    if value < low or value > 2**53:
        raise InputError(f"field {name}: {value} is out of range (at least {low})")
    return value


def _float(raw: Mapping[str, Any], name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"field {name}: a number is required, got {value!r:.40}")
    if not math.isfinite(value) or abs(value) > COORD_MAX:
        raise InputError(f"field {name}: {value!r:.40} is not a finite pixel coordinate")
    return float(value)


def _text(raw: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = raw.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"field {name}: a non-empty string is required, got {value!r:.40}")
    if len(value) > ID_MAX:
        raise InputError(f"field {name}: longer than {ID_MAX} characters")
    return value.strip()


def parse_request(raw: object) -> BoxRequest:
    """The body checked field by field; InputError names the first bad field in one line."""
    if not isinstance(raw, Mapping):
        raise InputError("the body must be a JSON object")
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        raise InputError(f"field type: one of {', '.join(EVENT_TYPES)} is required, got {kind!r:.40}")
    box_id = _text(raw, "id")
    assert box_id is not None
    if kind != "created" and not box_id.isdigit():
        raise InputError(f"field id: a saved box's number is required to {kind[:-1]} a box, "
                         f"got {box_id!r:.40}")
    base = _int(raw, "base_version", optional=kind == "created", low=1)
    study, slice_index = _int(raw, "study", low=1), _int(raw, "slice")
    assert study is not None and slice_index is not None
    return BoxRequest(
        study=study, type=str(kind), id=box_id, base_version=base if kind != "created" else None,
        slice=slice_index, x0=_float(raw, "x0"), y0=_float(raw, "y0"),
        width=_float(raw, "width"), height=_float(raw, "height"),
        fracture=_text(raw, "fracture", optional=True),
        base_study_version=_int(raw, "base_study_version", optional=True),
        client_key=_text(raw, "client_key", optional=True) if kind == "created" else None)


# --- applying it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxReply:
    """What the viewer shows after one request: the reader's boxes of the study (display
    coordinates, JSON-ready), the study version, levels to ask about, the line to show, and
    whether the page must rerun (boxed levels or fractures changed, a box without a level
    appeared or the last one went, a level to ask about, boxes superseded; always after a
    create repeated with its ``client_key``, whose first reply may have asked for it and was lost).
    ``box_id``/``box_version``: the box created or changed (None after a delete)."""

    boxes: list[dict[str, Any]]
    study_version: int
    ask_levels: tuple[str, ...]
    off_vertebra: bool
    message: str
    refresh: bool
    box_id: int | None
    box_version: int | None

    def as_json(self) -> dict[str, Any]:
        return {"boxes": self.boxes, "study_version": self.study_version,
                "ask_levels": list(self.ask_levels), "off_vertebra": self.off_vertebra,
                "message": self.message, "refresh": self.refresh, "box_id": self.box_id,
                "box_version": self.box_version}


def _shape(outline: be.Outline) -> tuple[frozenset[str], frozenset[str], bool]:
    """What of the reader's boxes the page's panels follow, from their (level, fracture) pairs:
    the boxed levels (level calls), the fractures (the fracture picker), whether a box has no
    level (the submit check)."""
    return (frozenset(level for level, _ in outline if level),
            frozenset(fracture for _, fracture in outline if fracture),
            any(not level for level, _ in outline))


def writer(session: Session, user_id: int, study_id: int) -> m.User:
    """The active account of a session token, when the study is assigned to it (checked before
    anything is opened; the db layer checks the rest: role, submitted, versions).

    The assignment is read locked, as the box event locks it first (``db.box_events``): the
    event finds it locked in this transaction and does not read it again, and everything the
    request reads afterwards is the state after any other tab's event."""
    me = active_user(session, user_id)
    if me is None:
        raise PermissionDenied("your account no longer exists or is deactivated; sign in again")
    if _lock_own_assignment(session, me, study_id) is None:
        raise PermissionDenied(f"study {study_id} is not assigned to you; no box was saved")
    return me


def handle_request(session: Session, me: m.User, req: BoxRequest, grid: StudyGrid) -> BoxReply:
    """Apply one checked request in ``session``'s transaction (exactly one ``db.box_events``
    call) and build the reply. Raises like :func:`apply_event`."""
    ev = event_from_browser(req.as_browser_event(), grid.geometry)
    out = apply_event(session, me, req.study, ev, labels=grid.labels(ev.slice),
                      fracture=req.fracture if req.type == "created" else None,
                      base_study_version=req.base_study_version)
    result = out.event
    # the event read the reader's boxes and the stamp after it (a replay: only the stamp)
    boxes = (list(result.boxes) if result.boxes is not None
             else be.boxes_state(session, me, req.study, version=result.study_version).boxes)
    message = out.message
    n = len(result.interpolated)
    if n:
        message += f" · {n} interpolated box(es) in the fracture"
    if result.superseded:
        message += f" · {len(result.superseded)} key box(es) of the fracture on that slice replaced"
    if out.off_vertebra:
        message += (f" · the box on axial slice {req.slice + 1} is off the vertebra: it has no "
                    "level; move it onto the vertebra, or submit anyway")
    before = result.outline_before
    after: be.Outline = frozenset((b.level, b.fracture) for b in boxes if b.reader == me.username)
    return BoxReply(
        boxes=to_display(viewer_boxes(boxes), grid.geometry, editable=True),
        study_version=result.study_version, ask_levels=result.ask_levels,
        off_vertebra=out.off_vertebra, message=message,
        refresh=bool(result.replayed or result.ask_levels or result.superseded
                     or before is None or _shape(after) != _shape(before)),
        box_id=result.box.id if result.box else None,
        box_version=result.box.version if result.box else None)
