"""The Annotate page's boxes: database rows -> viewer boxes, and one viewer event -> one db call.

Kept free of Streamlit so the mapping can be tested on its own: :func:`viewer_boxes` builds what
``spine_viewer.workstation`` draws (the reader's key and interpolated boxes, the model's boxes),
and :func:`apply_event` turns one :class:`spine_viewer.BoxEvent` into exactly one call of
``db.box_events`` (``create_box`` / ``change_box`` / ``delete_box``) with the version the tab
showed, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy.typing as npt
from sqlalchemy.orm import Session

from db import box_events as be
from db import models as m
from db.annotations import BoxInput
from spine_core.annotation_geometry import level_of_box
from spine_core.colours import MODEL_COLOUR
from spine_core.errors import ConflictError
from spine_viewer import BoxEvent, ViewerBox

KEY_COLOUR = "#40a0ff"  # the reader's own boxes (key solid, interpolated dashed by the viewer)
MODEL_HEX = "#{:02x}{:02x}{:02x}".format(*MODEL_COLOUR)


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
            base_study_version=base_study_version)
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
    current = next((b for b in be.boxes_state(session, me, study_id).boxes if b.id == box_id), None)
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
