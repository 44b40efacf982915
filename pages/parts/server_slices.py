"""The server-rendered slice views: the fallback when the browser cannot hold a study's volume.

Each step is a Streamlit rerun and a PNG rendered by :mod:`spine_core.render` (the reading
workstation, :mod:`spine_viewer`, renders in the browser instead). Used by the Viewer page, and
by Annotate to read a study too big for the browser (boxes need the workstation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import streamlit as st

from pages.parts.common import SignedInUser
from pages.parts.prediction_panel import (
    PredictedMask,
    PredictionStyle,
    ShownPrediction,
    prediction_boxes,
    prediction_controls,
    prediction_png,
)
from pages.parts.slice_view import PLANE_TITLES, clicked_at, slice_view
from pages.parts.viewer_location import read_location
from pages.parts.viewer_parts import (
    PLANES,
    ShownBox,
    StudyView,
    box_items,
    cursor_at,
    cursor_item,
    initial_slices,
    level_label_items,
    level_toggles,
    overlay_controls,
    plane_image_png,
    position_text,
    recent_reader_boxes,
    shown_zoom,
    slices_through,
    view_is_current,
    window_controls,
)
from spine_core.render import Cursor, OverlayStyle, Plane, Window, ZoomBox

LAYOUTS = ("Side by side", "Axial", "Sagittal", "Coronal")
PAGE_STEP = 10


def _slice_key(plane: Plane) -> str:
    """Session key of a plane's slice number (1-based, as the slider shows it)."""
    return f"vw_slice_{plane.value}"


def _index(view: StudyView, plane: Plane) -> int:
    """The plane's current slice index (0-based), clamped to the volume."""
    n = view.slice_count(plane)
    number = int(st.session_state.get(_slice_key(plane), 1))
    return min(max(number, 1), n) - 1


def _set_index(view: StudyView, plane: Plane, index: int) -> None:
    st.session_state[_slice_key(plane)] = min(max(int(index), 0), view.slice_count(plane) - 1) + 1


def reset_for(view: StudyView) -> None:
    """Start a newly opened study at the centre of its spine, stepping the axial plane."""
    if st.session_state.get("vw_state_for") == view.info.study_id:
        return
    for plane, index in initial_slices(view).items():
        _set_index(view, plane, index)
    st.session_state["vw_active"] = Plane.AXIAL.value
    here = read_location()
    if here.study_uid == view.info.study_uid and here.number is not None:
        plane = Plane(here.plane or Plane.AXIAL.value)
        _set_index(view, plane, here.number - 1)
        st.session_state["vw_active"] = plane.value
    st.session_state["vw_state_for"] = view.info.study_id


# --- callbacks (run before the fragment reruns) ----------------------------------------------


def _on_click(view: StudyView, plane: Plane, zoom: ZoomBox) -> None:
    hit = clicked_at(f"vw_view_{plane.value}", zoom)
    if hit is None:
        return
    for p, index in slices_through(view, plane, _index(view, plane), hit.row, hit.col).items():
        _set_index(view, p, index)
    st.session_state["vw_active"] = plane.value


def _step(view: StudyView, delta: int) -> None:
    plane = Plane(st.session_state.get("vw_active", Plane.AXIAL.value))
    _set_index(view, plane, _index(view, plane) + delta)


def _activate(plane: Plane) -> None:
    st.session_state["vw_active"] = plane.value


# --- the slices ------------------------------------------------------------------------------


@st.fragment
def server_slices_panel(view: StudyView, user: SignedInUser, prediction: ShownPrediction | None = None,
                        predicted: PredictedMask | None = None) -> None:
    """The server-rendered fallback: controls and slices; everything in here reruns alone when a
    slice or a control changes.

    ``prediction``/``predicted``: the model's latest prediction and its mask, drawn in their own
    style over the dataset's mask and the readers' boxes."""
    if not view_is_current(view):  # its cache files changed since the page opened it
        st.rerun(scope="app")
    controls, images = st.columns([1, 4], gap="medium")
    with controls:
        layout = st.radio("Layout", LAYOUTS, key="vw_layout")
        window = window_controls("vw_win")
        zoom_on = st.toggle("Zoom to the spine", value=True, key="vw_zoom")
        overlay = overlay_controls(view, "vw_ovl")
        names_on = st.toggle("Level names (sagittal)", value=True, key="vw_names",
                             disabled=view.mask is None)
        boxes_on = st.toggle("Fracture boxes", value=True, key="vw_boxes")
        style = prediction_controls(prediction, predicted, "vw_pred")

    planes = PLANES if layout == LAYOUTS[0] else (Plane(layout.lower()),)
    if len(planes) == 1:
        st.session_state["vw_active"] = planes[0].value
    active = Plane(st.session_state.get("vw_active", Plane.AXIAL.value))
    slices = {p: _index(view, p) for p in PLANES}
    cursor = cursor_at(view, slices)
    boxes = recent_reader_boxes(view.info.study_id, user) if boxes_on else []
    if style is not None and style.boxes:
        boxes = [*boxes, *prediction_boxes(prediction)]
    shown_prediction = predicted if style is not None and style.mask else None

    with images:
        bar = st.container(horizontal=True, vertical_alignment="center")
        bar.button("▲", key="vw_up", shortcut="Up", help="Next slice (↑)",
                   on_click=_step, args=(view, 1))
        bar.button("▼", key="vw_down", shortcut="Down", help="Previous slice (↓)",
                   on_click=_step, args=(view, -1))
        bar.button("+10", key="vw_pgup", shortcut="PageUp", help="10 slices on (PgUp)",
                   on_click=_step, args=(view, PAGE_STEP))
        bar.button("−10", key="vw_pgdn", shortcut="PageDown", help="10 slices back (PgDn)",
                   on_click=_step, args=(view, -PAGE_STEP))
        bar.caption(f"Keys step the **{PLANE_TITLES[active].lower()}** plane. Click a point to "
                    "move the other planes there.")
        columns = st.columns(len(planes), gap="small")
        for column, plane in zip(columns, planes):
            with column:
                _plane(view, plane, slices[plane], window, overlay, zoom_on, names_on, boxes,
                       cursor, max_vh=58.0 if len(planes) > 1 else 64.0,
                       predicted=shown_prediction, style=style)
        level_toggles(view, "vw_ovl")
        value = "—" if cursor.value is None else f"{cursor.value:.0f} HU"
        x, y, z = cursor.lps
        st.markdown(f"**Cursor** {value} · LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm · voxel "
                    f"{cursor.voxel}", help="Slice (a0), row (a1), column (a2) of the stored "
                    "volume; LPS: +x patient left, +y posterior, +z superior.")


def _plane(view: StudyView, plane: Plane, index: int, window: Window,
           overlay: OverlayStyle | None, zoom_on: bool, names_on: bool,
           boxes: Sequence[ShownBox], cursor: Cursor, *, max_vh: float,
           predicted: PredictedMask | None = None, style: PredictionStyle | None = None) -> None:
    """One plane: its slice view (image, names, boxes, crosshair) and its slider."""
    zoom = shown_zoom(view, plane, zoom_on)
    if predicted is not None and style is not None:
        png = prediction_png(view, plane, index, window, overlay, zoom, predicted, style)
    else:
        png = plane_image_png(view, plane, index, window, overlay, zoom)
    labels: list[dict[str, Any]] = []
    if plane is Plane.SAGITTAL and names_on and overlay is not None:
        labels = level_label_items(view, plane, index, zoom, overlay.visible)
    slice_view(
        png, key=f"vw_view_{plane.value}", plane=plane, index=index, zoom=zoom,
        edges=view.geometry.edges(plane), header=position_text(view, plane, index),
        labels=labels, boxes=box_items(view, boxes, plane, index, zoom),
        cursor=cursor_item(cursor, plane, zoom), max_vh=max_vh,
        on_click=functools.partial(_on_click, view, plane, zoom),
    )
    st.slider(f"{PLANE_TITLES[plane]} slice", 1, view.slice_count(plane), key=_slice_key(plane),
              label_visibility="collapsed", on_change=_activate, args=(plane,))
