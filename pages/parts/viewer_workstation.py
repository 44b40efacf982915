"""The viewer page's client-side slice view: what it hands :func:`spine_viewer.workstation`.

* :func:`viewer_boxes`: the readers' boxes this user may see (blinded, ``reader_boxes``) and the
  model's boxes, as :class:`spine_viewer.ViewerBox` of the right kind (the reader's own: "key";
  other readers': "other reader"; the model's: "model", and its Grad-CAM explanation boxes in
  their own colour), never editable here.
* :func:`browser_refusal`: the component's memory check, before anything is sent; a refused study
  falls back to the server-rendered slices.
* :func:`settled_slice`: the reader's last settled slice (the component's debounced commit), read
  from its state before it is mounted, so the page can pass it straight back.
* :func:`slice_caption`: "Axial 31 / 60 · z = 12.0 mm · instance number 30", the viewer's numbering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from pages.parts.common import workspace
from pages.parts.viewer_parts import ShownBox, StudyView, position_text
from spine_core.colours import EXPLANATION_COLOUR, MODEL_COLOUR
from spine_core.inference.protocol import PredictedBox
from spine_core.render import Plane
from spine_viewer import ViewerBox, VolumeTooLargeError, check_browser_memory

#: session key: a smaller browser memory budget (bytes), e.g. to exercise the fallback in tests
LIMIT_KEY = "vw_browser_limit"
#: display axis each plane's slice index runs along (display order S, P, L)
PLANE_AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


def _hex(colour: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour[:3]))


def _viewer_box(box: ShownBox, box_id: str) -> ViewerBox:
    """A reader's box: the reader's own ("you") are key boxes, others' "other reader" boxes."""
    b = box.source
    who = box.group or box.label
    level = str(b.level or "")
    if not level and box.label.startswith(f"{who} "):
        level = box.label[len(who) + 1:]  # reader_boxes labels them "who level"
    kind = "key" if who == "you" else "other reader"
    return ViewerBox(box_id, 1, int(b.slice_index), float(b.x), float(b.y), float(b.x2),
                     float(b.y2), kind=kind, level=level, label=box.label, reader=who,
                     colour=_hex(box.colour), editable=False)


def _model_box(box: PredictedBox, box_id: str) -> ViewerBox:
    """A predicted box: the model's colour, its level and score ("C5 · model 0.93")."""
    return ViewerBox(box_id, 1, int(box.slice_index), float(box.x), float(box.y),
                     float(box.x + box.width), float(box.y + box.height), kind="model",
                     level=str(box.level or ""), label=f"model {box.score:.2f}",
                     colour=_hex(MODEL_COLOUR), editable=False)


def _explanation_box(box: PredictedBox, box_id: str) -> ViewerBox:
    """A Grad-CAM box: where the classifier looked on a flagged level ("C5 · Grad-CAM 0.93")."""
    return ViewerBox(box_id, 1, int(box.slice_index), float(box.x), float(box.y),
                     float(box.x + box.width), float(box.y + box.height), kind="model",
                     level=str(box.level or ""), label=f"Grad-CAM {box.score:.2f}",
                     colour=_hex(EXPLANATION_COLOUR), editable=False)


def viewer_boxes(readers: Sequence[ShownBox], model: Sequence[PredictedBox],
                 explanation: Sequence[PredictedBox] = ()) -> list[ViewerBox]:
    """Readers', model's and (when asked) Grad-CAM explanation boxes as the client-side viewer
    takes them (read-only)."""
    return [*(_viewer_box(b, f"reader-{i}") for i, b in enumerate(readers)),
            *(_model_box(b, f"model-{i}") for i, b in enumerate(model)),
            *(_explanation_box(b, f"gradcam-{i}") for i, b in enumerate(explanation))]


def browser_limit() -> int:
    """Bytes the browser may hold: ``SPINE_VIEWER_MAX_BROWSER_MB`` (a test may override it)."""
    configured = workspace().settings.viewer_max_browser_mb << 20
    return int(st.session_state.get(LIMIT_KEY, configured))


def browser_refusal(view: StudyView, with_mask: bool) -> VolumeTooLargeError | None:
    """Why the browser cannot hold this study's volume, or None when it can."""
    shape = tuple(view.geometry.slice_count(p) for p in (Plane.AXIAL, Plane.CORONAL,
                                                          Plane.SAGITTAL))
    try:
        check_browser_memory(shape, with_mask, browser_limit())
    except VolumeTooLargeError as exc:
        return exc
    return None


@dataclass(frozen=True)
class Settled:
    """A settled slice reported by the browser: its plane and the display cursor (S, P, L)."""

    plane: str
    cursor: tuple[int, int, int]

    @property
    def index(self) -> int:
        return self.cursor[PLANE_AXIS[self.plane]]


def settled_slice(key: str) -> Settled | None:
    """The component's last slice commit (its state), or None; junk reads as None."""
    try:
        raw: Any = st.session_state[key]
    except KeyError:
        return None
    raw = raw.get("slice") if isinstance(raw, Mapping) or hasattr(raw, "get") else None
    if not isinstance(raw, Mapping):
        return None
    try:
        plane = str(raw["plane"])
        cursor = tuple(int(v) for v in raw["cursor"])
    except (KeyError, TypeError, ValueError):
        return None
    if plane not in PLANE_AXIS or len(cursor) != 3:
        return None
    return Settled(plane, cursor)  # type: ignore[arg-type]


@st.cache_data(ttl=300, show_spinner=False)
def instance_numbers(series_id: int) -> tuple[int, ...]:
    """The series' DICOM instance numbers (RSNA's slice_number) per stored slice."""
    from db import models as m

    with workspace().sessions() as session:
        series = session.get(m.Series, int(series_id))
        numbers = getattr(series, "instance_numbers", None) if series is not None else None
        return tuple(int(n) for n in numbers) if numbers else ()


def slice_caption(view: StudyView, plane: str, index: int,
                  cursor: tuple[int, int, int] | None = None) -> str:
    """'Axial 31/60 · z = 12.0 mm · instance number 30' (the viewer's 1-based number); the
    instance number is given where the plane is the stored (acquisition) plane."""
    p = Plane(plane)
    text = position_text(view, p, index)
    if p is view.geometry.acquisition_plane and view.geometry.perm[PLANE_AXIS[plane]] == 0:
        dv = list(cursor) if cursor is not None else [0, 0, 0]
        dv[PLANE_AXIS[plane]] = int(index)
        stored = view.geometry.display_to_source(tuple(dv))
        numbers = instance_numbers(view.info.series_id)
        k = int(stored[0])  # stored slices run along a0
        number = numbers[k] if 0 <= k < len(numbers) else k + 1
        text += f" · instance number {number}"
    return text
