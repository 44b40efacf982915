"""The reader's screen: draw fracture boxes on axial slices and mark each level.

Thin: every change goes to ``db.annotations`` in its own transaction the moment it is made
(blinding, roles, audit and version checks live there); the canvas <-> database mapping and the
level of a box come from ``spine_core.annotation_geometry``. The canvas is
streamlit-drawable-canvas in ``labeled_rect`` mode (see ``/work/shared/notes/box-drawing.md``):
its initial drawing is fixed per canvas key, and the key changes only when the boxes are reloaded
from the database (a new box needs its id as label) or the slice/view changes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import boxes_to_drawing, st_canvas

from db import annotations as ann
from db import models as m
from db.session import unit_of_work
from pages.parts import prediction_panel as pp
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from spine_core import annotation_geometry as ag
from spine_core.boxes import Box
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied
from spine_core.render import DisplayGeometry, OverlayStyle, Plane, Window, ZoomBox
from spine_core.roles import Permission

CANVAS_MAX = 640
ZOOMS = (1.0, 1.5, 2.0, 3.0, 4.0)
CALL_LABELS = {"fractured": "Fractured", "not_fractured": "Not fractured", "unsure": "Unsure"}
STROKE = "#40a0ff"
FILL = "rgba(64, 160, 255, 0.10)"
K_STUDY = "annotate_study"
K_FLASH = "annotate_flash"


# --- state helpers -------------------------------------------------------------------------------


def _gen_key(study_id: int) -> str:
    return f"annotate_gen_{study_id}"


def _slice_key(study_id: int) -> str:
    return f"annotate_slice_{study_id}"


def _reload_canvas(study_id: int) -> None:
    """Remount the canvas from the database on the next run."""
    st.session_state[_gen_key(study_id)] = st.session_state.get(_gen_key(study_id), 0) + 1


def _flash(kind: str, message: str) -> None:
    st.session_state.setdefault(K_FLASH, []).append((kind, message))


def _show_flash() -> None:
    for kind, message in st.session_state.pop(K_FLASH, []):
        if kind == "error":
            st.error(message)
        elif kind == "warning":
            st.warning(message)
        else:
            st.toast(message)


def _write(user: SignedInUser, study_id: int, action: Callable[[Any, m.User], object],
           done: str | None = None) -> bool:
    """Run one change in its own transaction; a refused change is shown, and the canvas is
    reloaded so it shows what is really saved."""
    try:
        with unit_of_work(workspace().sessions) as session:
            me = session.get(m.User, user.id)
            if me is None:
                raise PermissionDenied("your account no longer exists; sign in again")
            action(session, me)
    except ConflictError as exc:
        _flash("warning", f"Not saved: {exc}")
        _reload_canvas(study_id)
        return False
    except (InputError, PermissionDenied, NotFound) as exc:
        _flash("error", f"Not saved: {exc}")
        _reload_canvas(study_id)
        return False
    if done:
        _flash("toast", done)
    return True


# --- the study ----------------------------------------------------------------------------------


def _open(study_id: int) -> tuple[Any, str | None]:
    """The opened study (``pages.parts.viewer_parts.load_study``, cached per server process); without
    its mask, and the reason, when the mask cannot be opened."""
    from pages.parts.viewer_parts import load_study
    from spine_core.errors import MaskError

    try:
        return load_study(study_id), None
    except MaskError as exc:
        return load_study(study_id, with_mask=False), str(exc)


def _instance_numbers(series_id: int) -> tuple[int, ...]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        series = session.get(m.Series, series_id)
        return tuple(int(n) for n in series.instance_numbers) if series is not None else ()


def _choose_study(user: SignedInUser) -> tuple[int, str, str, str] | None:
    """The reader's queue in the sidebar; returns (study id, uid, assignment status, study status)."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        queue = [(s.id, s.study_uid, a.status, s.status)
                 for s, a in ann.reader_queue(session, me)] if me else []
    if not queue:
        st.info("No study is assigned to you yet. An administrator assigns studies on the "
                "Assignments page; they appear here.")
        return None
    by_id = {q[0]: q for q in queue}
    wanted = st.query_params.get("study")
    if K_STUDY not in st.session_state or st.session_state[K_STUDY] not in by_id:
        from_url = next((q[0] for q in queue if q[1] == wanted), None)
        st.session_state[K_STUDY] = from_url if from_url is not None else queue[0][0]

    def label(study_id: int) -> str:
        _, uid, status, _ = by_id[study_id]
        mark = {"submitted": "✓", "in_progress": "✎", "assigned": "•"}.get(status, "")
        return f"{mark} {uid[-24:]} ({status.replace('_', ' ')})"

    def next_case() -> None:
        ids = [q[0] for q in queue]
        current = ids.index(st.session_state[K_STUDY])
        unfinished = [i for i in ids[current + 1:] + ids[:current] if by_id[i][2] != "submitted"]
        st.session_state[K_STUDY] = unfinished[0] if unfinished else ids[(current + 1) % len(ids)]

    with st.sidebar:
        st.subheader("My studies")
        st.selectbox("Study", list(by_id), format_func=label, key=K_STUDY)
        done = sum(q[2] == "submitted" for q in queue)
        st.caption(f"{done} of {len(queue)} submitted")
        st.button("Next case", on_click=next_case, shortcut="N", key="annotate_next_case",
                  width="stretch")
    return by_id[st.session_state[K_STUDY]]


# --- the canvas ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    geometry: DisplayGeometry
    display_index: int
    slice_index: int
    canvas: ag.CanvasView
    window: Window
    overlay: bool


def _slice_controls(study_id: int, study: Any, my_slices: list[int]
                    ) -> tuple[int, Window, bool, float]:
    """Slice slider with previous/next buttons (K/J), window, zoom, level outlines.

    The first slice shown is the one in the URL (after a reload), else the first slice with the
    reader's boxes, else the middle of the spine."""
    from pages.parts.viewer_parts import window_controls

    geo: DisplayGeometry = study.geometry
    n = geo.slice_count(geo.acquisition_plane)
    key = _slice_key(study_id)
    if key not in st.session_state:
        try:
            if st.query_params.get("study") != study.info.study_uid:
                raise ValueError("the slice in the URL is another study's")
            start = int(st.query_params.get("slice", ""))
        except ValueError:
            start = ag.display_index_of(geo, my_slices[0]) if my_slices else study.centre[0]
        st.session_state[key] = min(max(start, 0), n - 1)

    def step(delta: int) -> None:
        st.session_state[key] = min(max(st.session_state[key] + delta, 0), n - 1)

    c1, c2, c3, c4, c5 = st.columns([1, 1, 2, 1.2, 1.5], vertical_alignment="bottom")
    c1.button("Prev", on_click=step, args=(-1,), shortcut="K", key="annotate_prev",
              width="stretch", help="Previous slice (towards the head)")
    c2.button("Next", on_click=step, args=(1,), shortcut="J", key="annotate_next",
              width="stretch", help="Next slice (towards the feet)")
    window = window_controls(key="annotate_win", container=c3)
    zoom = c4.selectbox("Zoom", list(ZOOMS), key="annotate_zoom", format_func=lambda z: f"{z:g}×")
    overlay = c5.toggle("Level outlines", value=study.mask is not None,
                        disabled=study.mask is None, key="annotate_overlay")
    st.slider("Slice (head to feet)", 0, n - 1, key=key, format="%d",
              label_visibility="collapsed")
    return int(st.session_state[key]), window, bool(overlay), float(zoom)


def _zoom_box(study_id: int, study: Any, factor: float) -> ZoomBox:
    """The crop shown: the whole slice at 1×, else ``factor`` times around the spine (panned)."""
    geo: DisplayGeometry = study.geometry
    h, w = geo.plane_shape(geo.acquisition_plane)
    if factor <= 1.0:
        return ZoomBox(0, 0, h, w)
    spine = study.spine_zoom.get(Plane.AXIAL)
    centre = ((spine.row0 + spine.row1) / 2, (spine.col0 + spine.col1) / 2) if spine else (h / 2, w / 2)
    with st.expander("Pan", expanded=False):
        dr = st.slider("Up / down (pixels)", -h // 2, h // 2, 0, key=f"annotate_pan_r_{study_id}")
        dc = st.slider("Left / right (pixels)", -w // 2, w // 2, 0, key=f"annotate_pan_c_{study_id}")
    return ag.zoom_window((h, w), factor, (centre[0] + dr, centre[1] + dc))


def _saved_on_slice(user: SignedInUser, study_id: int, slice_index: int) -> list[m.Box]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        return ann.visible_boxes(session, me, study_id, slice_index=slice_index) if me else []


def _canvas(user: SignedInUser, study_id: int, study: Any, view: View, editable: bool,
            predicted: Sequence[Any] = ()) -> None:
    """Draw the slice and the reader's boxes (and the model's ``predicted`` boxes, in the
    image); save what changed since the canvas was loaded."""
    geo = view.geometry
    saved_rows = _saved_on_slice(user, study_id, view.slice_index)
    saved = [ag.SavedBox(b.id, b.version, Box(b.slice_index, b.x, b.y, b.width, b.height))
             for b in saved_rows]
    rows_by_id = {b.id: b for b in saved_rows}
    from pages.parts.viewer_parts import plane_image

    rgb = plane_image(study, geo.acquisition_plane, view.display_index, view.window,
                      OverlayStyle(opacity=0.35, outline=True) if view.overlay else None,
                      view.canvas.zoom)
    pp.draw_predicted_boxes(rgb, study, predicted, view.display_index, view.canvas.zoom)
    initial = boxes_to_drawing(
        [{**ag.source_to_canvas(geo, s.box, view.canvas),
          "label": ag.box_label(s.id, rows_by_id[s.id].level)} for s in saved],
        stroke_color=STROKE, stroke_width=2, fill_color=FILL,
    )
    z = view.canvas.zoom
    w = view.window
    state = (f"{view.display_index}:{z.row0},{z.col0},{z.row1},{z.col1}:{w.width},{w.level}:"
             f"{view.overlay}:{len(predicted)}")
    key = "annotate_canvas_" + hashlib.sha1(
        f"{study_id}:{state}:{st.session_state.get(_gen_key(study_id), 0)}:{editable}".encode()
    ).hexdigest()[:16]
    result = st_canvas(
        background_image=Image.fromarray(rgb), background_image_fit="stretch",
        width=view.canvas.width, height=view.canvas.height, drawing_mode="labeled_rect",
        label="new" if editable else "", stroke_width=2, stroke_color=STROKE, fill_color=FILL,
        initial_drawing=initial, update_streamlit=True, key=key, disabled=not editable,
        font_size=13,
    )
    if not editable:
        return
    drawn = [(b["label"], ag.canvas_to_source(geo, view.display_index, view.canvas, b))
             for b in result.boxes]
    changes = ag.canvas_changes(saved, drawn)
    if changes.empty:
        return
    labels = study.mask.array[view.slice_index] if study.mask is not None else None
    for box in changes.created:
        level = ag.level_of_box(labels, box.x, box.y, box.width, box.height)
        _write(user, study_id, lambda s, me, b=box, lv=level: ann.save_box(
            s, me, study_id, ann.BoxInput(b.slice_index, b.x, b.y, b.width, b.height, level=lv)),
            f"Box saved{f' on {level}' if level else ''}")
    for old, box in changes.moved:
        row = rows_by_id[old.id]
        level = (ag.level_of_box(labels, box.x, box.y, box.width, box.height)
                 if row.level_from_mask else row.level)
        _write(user, study_id, lambda s, me, b=box, r=row, lv=level: ann.save_box(
            s, me, study_id,
            ann.BoxInput(b.slice_index, b.x, b.y, b.width, b.height, level=lv,
                         level_from_mask=r.level_from_mask, note=r.note),
            box_id=r.id, expected_version=r.version), "Box moved")
    for old in changes.deleted:
        _write(user, study_id, lambda s, me, o=old: ann.delete_box(
            s, me, o.id, expected_version=o.version), "Box deleted")
    if changes.rejected:
        _flash("warning", f"{changes.rejected} box(es) not saved: smaller than "
                          f"{ag.MIN_BOX_SIZE_PX:g} pixels or outside the image.")
    if changes.created or changes.rejected:
        _reload_canvas(study_id)  # new boxes need their id as label
        st.rerun()


# --- boxes and levels panel -----------------------------------------------------------------------


def _box_panel(user: SignedInUser, study_id: int, slice_index: int, levels: list[str],
               editable: bool) -> None:
    rows = _saved_on_slice(user, study_id, slice_index)
    st.markdown(f"**Boxes on this slice** ({len(rows)})")
    if not rows:
        st.caption("Drag on the image to draw a box. Edit mode (toolbar, top of the image) "
                   "moves and resizes boxes.")
        return
    options = [b.id for b in rows]
    sel_key = f"annotate_selected_{study_id}_{slice_index}"
    if st.session_state.get(sel_key) not in options:
        st.session_state[sel_key] = options[-1]
    by_id = {b.id: b for b in rows}
    st.radio("Selected box", options, key=sel_key, horizontal=True,
             format_func=lambda i: f"#{i} {by_id[i].level or '?'}")

    def delete_selected() -> None:
        box_id = st.session_state.get(sel_key)
        row = by_id.get(box_id)
        if row is not None and _write(user, study_id, lambda s, me: ann.delete_box(
                s, me, row.id, expected_version=row.version), f"Box #{row.id} deleted"):
            _reload_canvas(study_id)

    st.button("Delete selected box", on_click=delete_selected, shortcut="Delete",
              disabled=not editable, key=f"annotate_delete_{study_id}")
    for b in rows:
        with st.container(border=True):
            st.caption(f"#{b.id} · {b.width:.0f}×{b.height:.0f} px at ({b.x:.0f}, {b.y:.0f})"
                       + (" · level from the mask" if b.level_from_mask and b.level else ""))
            level_options = ["—", *levels] if b.level in levels or b.level is None else ["—", b.level, *levels]
            st.selectbox("Level", level_options,
                         index=level_options.index(b.level) if b.level else 0,
                         key=f"annotate_level_{b.id}_{b.version}", disabled=not editable,
                         on_change=_change_box, args=(user, study_id, b, "level"))
            st.text_input("Note", value=b.note, key=f"annotate_note_{b.id}_{b.version}",
                          disabled=not editable, on_change=_change_box,
                          args=(user, study_id, b, "note"))


def _change_box(user: SignedInUser, study_id: int, row: m.Box, what: str) -> None:
    value = st.session_state[f"annotate_{what}_{row.id}_{row.version}"]
    level, from_mask, note = row.level, row.level_from_mask, row.note
    if what == "level":
        level, from_mask = (None if value == "—" else value), False
    else:
        note = str(value)
    if _write(user, study_id, lambda s, me: ann.save_box(
            s, me, study_id, ann.BoxInput(row.slice_index, row.x, row.y, row.width, row.height,
                                          level=level, level_from_mask=from_mask, note=note),
            box_id=row.id, expected_version=row.version),
            f"Box #{row.id}: {'level ' + (level or 'none') if what == 'level' else 'note'} saved"):
        _reload_canvas(study_id)


def _level_panel(user: SignedInUser, study_id: int, levels: list[str], boxed: set[str],
                 editable: bool) -> None:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        own = ann.own_level_calls(session, me, study_id) if me else {}
        calls = {lvl: (c.call, c.version) for lvl, c in own.items()}
    st.markdown("**Levels** — a box on a level (▣) marks it fractured")

    def set_call(level: str, key: str, version: int | None) -> None:
        value = st.session_state.get(key)
        if value is None:
            return
        _write(user, study_id, lambda s, me: ann.set_level_call(
            s, me, study_id, level, value, expected_version=version), f"{level}: {CALL_LABELS[value]}")

    for level in levels:
        call, version = calls.get(level, (None, None))
        key = f"annotate_call_{study_id}_{level}_{version}_{level in boxed}"
        name, control = st.columns([1, 6], vertical_alignment="center")
        name.markdown(f"**{level}**" + (" ▣" if level in boxed else ""))
        control.segmented_control(
            level, list(CALL_LABELS), default=call, format_func=CALL_LABELS.__getitem__,
            key=key, disabled=not editable or level in boxed, on_change=set_call,
            args=(level, key, version), label_visibility="collapsed",
        )
    unmarked = [lvl for lvl in levels if lvl not in calls]
    if unmarked:
        st.caption(f"Not marked yet: {', '.join(unmarked)}")


def _labels_on(study: Any, prediction: pp.ShownPrediction | None, slice_index: int) -> Any:
    """The level labels of a stored slice: the dataset's mask, else the predicted one."""
    if study.mask is not None:
        return study.mask.array[slice_index]
    predicted, _ = pp.predicted_mask(study, prediction)
    return predicted.volume.array[slice_index] if predicted is not None else None


def _my_box_slices(user: SignedInUser, study_id: int) -> list[tuple[int, int, str]]:
    """(stored slice, number of boxes, levels) of every slice carrying the reader's boxes."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        boxes = ann.visible_boxes(session, me, study_id) if me else []
    out: dict[int, list[m.Box]] = {}
    for b in boxes:
        out.setdefault(b.slice_index, []).append(b)
    return [(k, len(v), ", ".join(sorted({b.level or "?" for b in v}))) for k, v in sorted(out.items())]


def _submit_panel(user: SignedInUser, study_id: int, status: str, study_status: str) -> None:
    if status == "submitted":
        locked = not ann.reopen_allowed(study_status)
        st.success("You submitted this study.")
        if st.button("Reopen", disabled=locked, key=f"annotate_reopen_{study_id}",
                     help="Adjudication has started: it can no longer be reopened" if locked else None):
            if _write(user, study_id, lambda s, me: ann.reopen(s, me, study_id), "Study reopened"):
                st.rerun()
        return
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        check = ann.submit_check(session, me, study_id) if me is not None else None
    confirm = check is not None and not check.ok
    if confirm:
        st.warning(f"Before you submit: {check.problems()}. Give every box a level and make the "
                   "calls match the boxes, or submit anyway.")
    label = "Submit anyway" if confirm else "Submit study"
    if st.button(label, type="primary", key=f"annotate_submit_{study_id}",
                 help="You can reopen it until adjudication starts"):
        if _write(user, study_id, lambda s, me: ann.submit(s, me, study_id, confirm=confirm),
                  "Study submitted"):
            st.rerun()


# --- page ----------------------------------------------------------------------------------------


def main() -> None:
    user = require_permission(Permission.annotate)
    _show_flash()
    chosen = _choose_study(user)
    if chosen is None:
        return
    study_id, uid, status, study_status = chosen
    study, mask_problem = _open(study_id)
    if mask_problem:
        st.warning(f"The vertebra mask could not be opened ({mask_problem}); choose the level of "
                   "each new box by hand.")
    geo: DisplayGeometry = study.geometry
    numbers = _instance_numbers(study.info.series_id)
    editable = status != "submitted"
    box_slices = _my_box_slices(user, study_id)
    prediction = pp.load_prediction(study_id)

    st.markdown(f"**Annotate** · study `{uid}` · "
                f"{'submitted (read-only)' if not editable else status.replace('_', ' ')}")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        k, window, overlay, factor = _slice_controls(study_id, study, [s for s, _, _ in box_slices])
        zoom = _zoom_box(study_id, study, factor)
        slice_index = ag.slice_index_of(geo, k)
        number = numbers[slice_index] if numbers else slice_index + 1
        st.query_params["study"] = uid
        st.query_params["slice"] = str(k)
        view = View(geo, k, slice_index, ag.fit_canvas(zoom, CANVAS_MAX, CANVAS_MAX), window, overlay)
        _canvas(user, study_id, study, view, editable,
                prediction.boxes_on(slice_index) if prediction and pp.show_on_canvas() else ())
        st.caption(f"Slice {k + 1} of {geo.slice_count(geo.acquisition_plane)} (head to feet) · "
                   f"instance number {number} · keys: J next slice, K previous, N next case, "
                   "Delete deletes the selected box · the toolbar above the image switches to "
                   "edit mode (move, resize, delete)")
    box_slices = _my_box_slices(user, study_id)  # again: the canvas may have changed them
    boxed = {lvl for _, _, lvls in box_slices for lvl in lvls.split(", ") if lvl != "?"}
    levels = ag.levels_to_call(study.info.mask_levels, boxed)
    def jump(stored: int) -> None:
        st.session_state[_slice_key(study_id)] = ag.display_index_of(geo, stored)

    with right:
        _box_panel(user, study_id, slice_index, levels, editable)
        st.divider()
        pp.copy_panel(prediction, study_id, slice_index,
                      _saved_on_slice(user, study_id, slice_index),
                      _labels_on(study, prediction, slice_index), editable,
                      functools.partial(_write, user, study_id),
                      functools.partial(_reload_canvas, study_id), jump=jump,
                      slice_number=lambda stored: ag.display_index_of(geo, stored) + 1)
        st.divider()
        _level_panel(user, study_id, levels, boxed, editable)
        st.divider()
        if box_slices:
            with st.expander(f"Slices with my boxes ({len(box_slices)})"):
                for stored, n, lvls in box_slices:
                    st.button(f"Slice {ag.display_index_of(geo, stored) + 1}: {n} box(es), {lvls}",
                              key=f"annotate_jump_{study_id}_{stored}", on_click=jump,
                              args=(stored,))
        _submit_panel(user, study_id, status, study_status)


with error_boundary("The annotation page"):
    main()
