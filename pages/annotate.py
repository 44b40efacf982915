"""The reader's screen: draw fracture boxes in the reading workstation and mark each level.

The viewer is ``spine_viewer.workstation`` (the volume is streamed to the browser once; slices,
window, zoom and the boxes are drawn there). It reports each box change once, with the version
the tab showed; :func:`_store_event` turns each into exactly one ``db.box_events`` call in its own
transaction (``db.box_event_requests``). A stale tab gets a ConflictError: the page says so
and shows the database's boxes again; nothing of another tab is overwritten. The viewer and the
slice's panel live in an ``st.fragment``: stepping through slices never reruns the page; a box
event reruns it once, so the level calls, fractures and the submit check follow the boxes.

Under server.py the viewer posts box events to ``spine_web.box_routes`` instead (the same
``db.box_event_requests`` code, no rerun); it reruns the page only when a save changed the levels
or fractures, left a level to ask about, or was refused (``result.refresh``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import streamlit as st

from db import annotations as ann
from db import box_event_requests as ab
from db import box_events as be
from db import models as m
from db.session import unit_of_work
from pages.parts import prediction_panel as pp
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.film_view import film_view_panel
from pages.parts.radiograph_reading import film_reading_table, film_submit_button
from pages.parts.relabel_panel import relabel_panel
from spine_core import annotation_geometry as ag
from spine_core import words
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied
from spine_core.io.radiograph import is_radiograph_volume, viewer_options
from spine_core.roles import Permission
from spine_viewer import CT_PRESETS, BoxEvent, keymap_markdown

CALL_LABELS = {"fractured": "Fractured", "not_fractured": "Not fractured", "unsure": "Unsure"}
K_STUDY = "annotate_study"
K_FLASH = "annotate_flash"


# --- state helpers -------------------------------------------------------------------------------


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
    """Run one change in its own transaction; a refused change is shown (the page reloads what
    is saved on its next run)."""
    try:
        with unit_of_work(workspace().sessions) as session:
            me = session.get(m.User, user.id)
            if me is None:
                raise PermissionDenied("your account no longer exists; sign in again")
            action(session, me)
    except ConflictError as exc:
        _flash("warning", f"{CONFLICT}: {exc}")
        return False
    except (InputError, PermissionDenied, NotFound) as exc:
        _flash("error", f"Not saved: {exc}")
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
        return f"{mark} {uid[-24:]} ({words.in_words(words.ASSIGNMENT_STATUSES, status).lower()})"

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


# --- the viewer ----------------------------------------------------------------------------------

K_FRACTURE = "annotate_fracture"
NO_FRACTURE = "—"
CONFLICT = "The study changed in another tab or device; refreshed. Your last change was not saved"
HEARTBEAT_S = 10.0  # send the reading time at most this often
IDLE_CAP_S = 60.0  # at most this much reading counts between two actions in the viewer


def _ask_key(study_id: int) -> str:
    return f"annotate_ask_{study_id}"


def _version_key(study_id: int) -> str:
    return f"annotate_study_version_{study_id}"


def _own_boxes(user: SignedInUser, study_id: int) -> list[be.BoxState]:
    """The reader's boxes (blinded: their own only); remembers the study version this tab shows."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        if me is None:
            return []
        state = be.boxes_state(session, me, study_id)
    st.session_state[_version_key(study_id)] = state.study_version
    return state.boxes


def _order(study: Any) -> Any:
    from spine_viewer.transport import display_geometry

    return display_geometry(study.image)


def _store_event(user: SignedInUser, study_id: int, study: Any, ev: BoxEvent) -> None:
    """One viewer event -> one db call, in its own transaction. A stale tab is told and the
    viewer shows the database's boxes again (the boxes are reloaded after every event)."""
    labels = study.mask.array[ev.slice] if study.mask is not None else None
    fracture = st.session_state.get(K_FRACTURE)
    fracture = None if fracture in (None, NO_FRACTURE) else str(fracture)
    try:
        with unit_of_work(workspace().sessions) as session:
            me = session.get(m.User, user.id)
            if me is None:
                raise PermissionDenied("your account no longer exists; sign in again")
            out = ab.apply_event(session, me, study_id, ev, labels=labels, fracture=fracture,
                                 base_study_version=st.session_state.get(_version_key(study_id)))
    except ConflictError as exc:
        _flash("warning", f"{CONFLICT}: {exc}")
        return
    except (InputError, PermissionDenied, NotFound) as exc:
        _flash("error", f"Not saved: {exc}")
        return
    result = out.event
    if out.off_vertebra:
        _flash("warning", f"The box on axial slice {_shown(study, ev.slice)} is off the vertebra: it has "
                          "no level. Move it onto the vertebra, or submit anyway.")
    if result.superseded:
        _flash("toast", f"{len(result.superseded)} key box(es) of the fracture on that slice replaced")
    if result.ask_levels:
        asked = st.session_state.setdefault(_ask_key(study_id), [])
        asked += [lvl for lvl in result.ask_levels if lvl not in asked]
    n = len(result.interpolated)
    _flash("toast", out.message + (f" · {n} interpolated box(es) in the fracture" if n else ""))


def _reading_heartbeat(user: SignedInUser, study_id: int, activity: bool) -> None:
    """Count active reading from the viewer's own reports (slice settled, box event): the time
    since the previous one, at most ``IDLE_CAP_S``; sent every ``HEARTBEAT_S`` at most."""
    import time

    from db.reading_time import record_reading

    now = time.monotonic()
    key = f"annotate_reading_{study_id}"
    last, pending, sent = st.session_state.get(key, (now, 0.0, now))
    if activity:
        pending += min(now - last, IDLE_CAP_S)
        last = now
    if pending >= 1.0 and now - sent >= HEARTBEAT_S:
        try:
            with unit_of_work(workspace().sessions) as session:
                me = session.get(m.User, user.id)
                if me is not None:
                    record_reading(session, me, study_id, pending)
            pending, sent = 0.0, now
        except (InputError, PermissionDenied, NotFound):
            pending = 0.0
    st.session_state[key] = (last, pending, sent)


def _open_reading(user: SignedInUser, study_id: int) -> None:
    """Stamp the first opening of the study (once per browser session and study)."""
    from db.reading_time import open_study

    key = f"annotate_opened_{study_id}"
    if st.session_state.get(key):
        return
    try:
        with unit_of_work(workspace().sessions) as session:
            me = session.get(m.User, user.id)
            if me is not None:
                open_study(session, me, study_id)
    except (InputError, PermissionDenied, NotFound):
        pass
    st.session_state[key] = True


def _start_slice(study_id: int, study: Any, order: Any, own: Sequence[be.BoxState]) -> int:
    """The viewer's first axial slice (display index): the URL's, else the first slice with the
    reader's boxes, else the middle of the spine."""
    key = f"annotate_goto_{study_id}"
    if key not in st.session_state:
        n = order.display_shape[0]
        try:
            if st.query_params.get("study") != study.info.study_uid:
                raise ValueError("the slice in the URL is another study's")
            start = int(st.query_params.get("slice", "")) - 1  # the URL has the shown number
            if not 0 <= start < n:
                raise ValueError("the slice in the URL is outside the study")
        except ValueError:
            start = n // 2
            if own:
                start = order.source_to_display((own[0].slice_index, 0, 0))[0]
            elif study.mask is not None:
                import numpy as np

                hit = np.flatnonzero(np.asarray(study.mask.array).any(axis=(1, 2)))
                if hit.size:
                    start = order.source_to_display((int((hit[0] + hit[-1]) // 2), 0, 0))[0]
        st.session_state[key] = min(max(start, 0), n - 1)
    return int(st.session_state[key])


def _shown(study: Any, stored: int) -> int:
    """The number the viewer shows for stored slice ``stored`` ("Axial n / N")."""
    return int(_order(study).source_to_display((stored, 0, 0))[0]) + 1


def _jump(study_id: int, study: Any, stored: int) -> None:
    st.session_state[f"annotate_goto_{study_id}"] = _order(study).source_to_display((stored, 0, 0))[0]


def _slice_panel(user: SignedInUser, study_id: int, study: Any, stored: int,
                 prediction: pp.ShownPrediction | None, editable: bool) -> None:
    """What lies on the slice the reader settled on: their boxes and the model's."""
    own = [b for b in _own_boxes(user, study_id) if b.slice_index == stored]
    st.markdown(f"**Boxes on this slice** ({len(own)}) · axial {_shown(study, stored)}")
    if not own:
        st.caption("Press B (box tool) and drag on the axial image to draw a box; drag a box or "
                   "its handles to move or resize it; Delete deletes the selected box.")
    fractures = sorted({b.fracture for b in _own_boxes(user, study_id) if b.fracture},
                       key=lambda f: (len(f), f))
    for b in own:
        kind = "key box" if b.is_key else "interpolated"
        st.caption(f"#{b.id} · {b.level or 'no level (off the vertebra)'} · {kind}"
                   + (f" · fracture {b.fracture}" if b.fracture else "")
                   + f" · {b.width:.0f}×{b.height:.0f} px at ({b.x:.0f}, {b.y:.0f})")
        if b.is_key and editable:
            _box_fracture(user, study_id, b, fractures)

    def copied() -> None:
        st.session_state["annotate_full_rerun"] = True

    pp.copy_panel(prediction, study_id, stored, own, _labels_on(study, prediction, stored),
                  editable, functools.partial(_write, user, study_id), copied,
                  jump=lambda k: _jump(study_id, study, k),
                  slice_number=lambda k: _shown(study, k))


def _box_fracture(user: SignedInUser, study_id: int, box: be.BoxState,
                  fractures: Sequence[str]) -> None:
    """Move a key box to another fracture (or to none): both fractures are re-interpolated."""
    options = [NO_FRACTURE, *fractures]
    current = box.fracture or NO_FRACTURE
    key = f"annotate_box_fracture_{box.id}_{box.version}"

    def moved() -> None:
        chosen = st.session_state.get(key)
        target = None if chosen in (None, NO_FRACTURE) else str(chosen)
        if target == box.fracture:
            return
        _write(user, study_id,
               lambda session, me: be.change_box(session, me, box.id, box.version,
                                                 replace(box.as_input(), fracture=target)),
               f"Box #{box.id} moved to " + (f"fracture {target}" if target else "no fracture"))
        st.session_state["annotate_full_rerun"] = True

    st.selectbox(f"Fracture of box #{box.id}", options, index=options.index(current), key=key,
                 on_change=moved, label_visibility="collapsed",
                 format_func=lambda f: "no fracture (single box)" if f == NO_FRACTURE else f"fracture {f}",
                 help="Which fracture this key box belongs to; its interpolated boxes follow")


def _server_fallback(user: SignedInUser, study: Any, why: Exception) -> None:
    """A study too big for the browser: read it in server-rendered slices; say that drawing
    boxes needs the workstation (level calls below still work)."""
    from pages.parts.server_slices import reset_for, server_slices_panel

    st.warning(f"{str(why)[0].upper()}{str(why)[1:]}. Its slices are rendered on the server "
               "instead (each step waits for the server), and boxes cannot be drawn here: an "
               "administrator can raise SPINE_VIEWER_MAX_BROWSER_MB for this workstation. Level "
               "calls below work as usual.")
    reset_for(study)
    server_slices_panel(study, user)


def _viewer(user: SignedInUser, study_id: int, study: Any, editable: bool,
            prediction: pp.ShownPrediction | None) -> None:
    """The workstation and the slice's panel (a fragment: slice commits and the volume's
    streaming rerun only this; a box event reruns the page, whose panels follow the boxes; with
    the box route a save reruns it only when the viewer asks: ``result.refresh``)."""
    from pages.parts.viewer_workstation import browser_limit, browser_refusal
    from spine_viewer import ViewerSource, VolumeTooLargeError, workstation

    order = _order(study)
    own = _own_boxes(user, study_id)
    start = _start_slice(study_id, study, order, own)
    handled: list[BoxEvent] = []

    def on_event(ev: BoxEvent) -> None:
        handled.append(ev)
        _store_event(user, study_id, study, ev)

    def boxes() -> list[Any]:
        model = prediction.boxes if prediction is not None and pp.show_on_canvas() else ()
        return ab.viewer_boxes(_own_boxes(user, study_id), model)

    info = study.info
    refusal = browser_refusal(study, study.mask is not None)
    if refusal is not None:
        _server_fallback(user, study, refusal)
        return
    viewer, side = st.columns([3, 1.1], gap="small")
    with viewer:
        try:
            result = workstation(
                f"{info.series_uid}:{study.fingerprint}:{study.mask_id}",
                lambda: ViewerSource(study.image, study.mask), key=f"annotate_viewer_{study_id}",
                layout="single", plane="axial",  # boxes are drawn on axial slices; T: three planes
                slice=start, boxes=boxes,
                on_event=on_event, editable=editable, height="fill", max_browser_bytes=browser_limit(),
                box_post=_box_post(study_id, study), **viewer_options(study.image))
        except VolumeTooLargeError as exc:
            _server_fallback(user, study, exc)
            return
    stored = ab_stored_slice(order, result, start, study_id)
    if result.slice is not None:
        st.query_params["slice"] = str(result.slice.index + 1)  # "Axial n": one number everywhere
    if result.refresh is not None:
        _refreshed(study_id, result.refresh)
    _reading_heartbeat(user, study_id, activity=bool(handled) or result.slice is not None
                       or result.refresh is not None)
    with side:
        _slice_panel(user, study_id, study, stored, prediction, editable)
    if handled or result.refresh is not None or st.session_state.pop("annotate_full_rerun", False):
        st.rerun()


def _box_post(study_id: int, study: Any) -> dict[str, Any] | None:
    """Where the viewer posts box events without a rerun (``spine_web.box_routes``, served by
    server.py; None under AppTest, and for a radiograph, whose table follows each box)."""
    from spine_web import box_routes

    if not box_routes.mounted() or is_radiograph_volume(study.image):
        return None
    fracture = st.session_state.get(K_FRACTURE)
    return {"url": box_routes.ROUTE.lstrip("/"), "study": study_id,
            "fracture": None if fracture in (None, NO_FRACTURE) else str(fracture),
            "base_study_version": st.session_state.get(_version_key(study_id))}


def _warm_box_route(study_id: int) -> None:
    """Open the study's grid for the box route now (once per session and study; kept per server
    process), so the reader's first box does not wait for it."""
    from spine_web import box_routes

    key = f"annotate_grid_{study_id}"
    if not box_routes.mounted() or st.session_state.get(key):
        return
    from db.study_grid import study_grid
    from spine_core.errors import SpineError

    try:
        with unit_of_work(workspace().sessions, readonly=True) as session:
            study_grid(workspace(), session, study_id)
    except SpineError:
        pass  # the route says what is wrong when a box is saved
    st.session_state[key] = True


def _refreshed(study_id: int, refresh: Any) -> None:
    """A box saved through the route changed what the page shows (or was refused): say so and
    ask about levels left without a box; the caller reruns the page."""
    if refresh.message:
        _flash("warning" if refresh.kind == "warning" else "toast", refresh.message)
    if refresh.ask_levels:
        asked = st.session_state.setdefault(_ask_key(study_id), [])
        asked += [lvl for lvl in refresh.ask_levels if lvl not in asked]


def ab_stored_slice(order: Any, result: Any, start: int, study_id: int) -> int:
    """The stored slice the reader settled on (the start slice until they move)."""
    if result.slice is not None and result.slice.plane == "axial":
        return int(result.slice.voxel[0])
    if result.slice is not None:
        return order.display_to_source((result.slice.cursor[0], 0, 0))[0]
    return order.display_to_source((start, 0, 0))[0]


def _fracture_picker(user: SignedInUser, study_id: int, own: Sequence[be.BoxState],
                     editable: bool) -> None:
    """Which fracture new key boxes join: key boxes of one fracture on different slices
    interpolate; "—" draws boxes on their own."""
    used = sorted({b.fracture for b in own if b.fracture},
                  key=lambda f: (len(f), f))
    pending = st.session_state.get(f"annotate_new_fracture_{study_id}")
    options = [NO_FRACTURE, *used, *([pending] if pending and pending not in used else [])]
    if st.session_state.get(K_FRACTURE) not in options:
        st.session_state[K_FRACTURE] = NO_FRACTURE

    def new_fracture() -> None:
        with unit_of_work(workspace().sessions, readonly=True) as session:
            me = session.get(m.User, user.id)
            fid = be.next_fracture_id(session, me, study_id) if me is not None else "F1"
        if fid in used:  # cannot happen, but never reuse a fracture by accident
            fid = f"F{len(used) + 1}"
        st.session_state[f"annotate_new_fracture_{study_id}"] = fid
        st.session_state[K_FRACTURE] = fid

    a, b = st.columns([3, 1.2], vertical_alignment="bottom")
    a.selectbox("Fracture of new boxes", options, key=K_FRACTURE, disabled=not editable,
                format_func=lambda f: "none (single boxes)" if f == NO_FRACTURE else f"fracture {f}",
                help="Key boxes of one fracture on different slices are joined by interpolated "
                     "boxes on the slices between them")
    b.button("New fracture", on_click=new_fracture, disabled=not editable,
             key=f"annotate_new_fracture_btn_{study_id}", width="stretch")


def _ask_panel(user: SignedInUser, study_id: int, editable: bool) -> None:
    """"Is C5 still fractured?" for each level whose last box the reader deleted."""
    asked: list[str] = st.session_state.get(_ask_key(study_id), [])
    if not asked or not editable:
        return
    level = asked[0]

    def answer(still: bool) -> None:
        st.session_state[_ask_key(study_id)] = [lvl for lvl in asked if lvl != level]
        if still:
            _flash("toast", f"{level} stays fractured")
            return
        with unit_of_work(workspace().sessions, readonly=True) as session:
            me = session.get(m.User, user.id)
            own = ann.own_level_calls(session, me, study_id) if me else {}
            version = own[level].version if level in own else None
        _write(user, study_id, lambda s, me: ann.set_level_call(
            s, me, study_id, level, "not_fractured", expected_version=version),
            f"{level}: {CALL_LABELS['not_fractured']}")

    with st.container(border=True):
        st.markdown(f"**Is {level} still fractured?** You deleted its last box.")
        yes, no = st.columns(2)
        yes.button(f"Yes, {level} is fractured", on_click=answer, args=(True,),
                   key=f"annotate_ask_yes_{study_id}_{level}", width="stretch")
        no.button(f"No, {level} is not fractured", on_click=answer, args=(False,),
                  key=f"annotate_ask_no_{study_id}_{level}", width="stretch")


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
        if not _write(user, study_id, lambda s, me: ann.set_level_call(
                s, me, study_id, level, value, expected_version=version),
                f"{level}: {CALL_LABELS[value]}"):
            st.session_state.pop(key, None)  # refused: the control shows the stored call again

    for level in levels:
        call, version = calls.get(level, (None, None))
        key = f"annotate_call_{study_id}_{level}_{version}_{level in boxed}"
        if editable and level not in boxed and _unsaved_choice(key, call):
            # the reader's click reached the server but its callback did not run (a run cut
            # short by another rerun under load): save it now, against the version shown
            chosen = st.session_state[key]
            if _write(user, study_id, lambda s, me, lvl=level, v=version, val=chosen:
                      ann.set_level_call(s, me, study_id, lvl, val, expected_version=v),
                      f"{level}: {CALL_LABELS[chosen]}"):
                st.rerun()
            del st.session_state[key]  # refused (said above): show the stored call again
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


def _unsaved_choice(key: str, stored: str | None) -> bool:
    """Whether the level-call control ``key`` holds a choice the database does not: the
    widget's value arrived with a run whose on_change callback never ran."""
    value = st.session_state.get(key)
    return value is not None and value in CALL_LABELS and value != stored


GRADE_LABELS = {0: "0 normal", 1: "1 mild", 2: "2 moderate", 3: "3 severe"}
MORPHOLOGIES = ("wedge", "biconcave", "crush")


def _grade_panel(user: SignedInUser, study_id: int, levels: list[str], editable: bool,
                 renumbered: Mapping[str, str]) -> None:
    """Genant grade 0-3 and morphology per level (VerSe-style reading); a level the reader
    renumbered shows both names (grades are kept against the mask's level)."""
    from db import grades as gr

    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        own = gr.grades_of(session, me, study_id) if me else {}
    st.markdown("**Levels: Genant grade** — height loss 20–25 % mild, 25–40 % moderate, over 40 % "
                "severe; the morphology says where it is lost")

    def save(level: str, grade_key: str, morph_key: str, version: int | None) -> None:
        grade = st.session_state.get(grade_key)
        if grade is None:
            return
        morph = None if grade == 0 else st.session_state.get(morph_key)
        text = f"{level}: grade {grade}" + (f", {morph}" if morph else "")
        if not _write(user, study_id, lambda s, me: gr.set_grade(
                s, me, study_id, level, int(grade), morph, expected_version=version), text):
            for key in (grade_key, morph_key):  # refused: the controls show what is stored
                st.session_state.pop(key, None)

    for level in levels:
        have = own.get(level)
        version = have.version if have else None
        grade_key = f"annotate_grade_{study_id}_{level}_{version}"
        morph_key = f"annotate_morph_{study_id}_{level}_{version}"
        grade, morph = st.session_state.get(grade_key), st.session_state.get(morph_key)
        if editable and grade in GRADE_LABELS and (
                have is None or grade != have.grade
                or (grade != 0 and morph in MORPHOLOGIES and morph != have.morphology)):
            # a choice that reached the server without its callback (a run cut short under
            # load, as for level calls): save it now rather than lose it
            save(level, grade_key, morph_key, version)
            if st.session_state.get(grade_key) is not None:
                st.rerun()
        name, grade_col, morph_col = st.columns([1, 6, 5], vertical_alignment="center")
        name.markdown(f"**{level}**" + (f" → {renumbered[level]}" if level in renumbered else ""))
        grade_col.segmented_control(
            f"{level} grade", list(GRADE_LABELS), default=have.grade if have else None,
            format_func=GRADE_LABELS.__getitem__, key=grade_key, disabled=not editable,
            on_change=save, args=(level, grade_key, morph_key, version), label_visibility="collapsed")
        morph_col.segmented_control(
            f"{level} morphology", MORPHOLOGIES, default=have.morphology if have else None,
            key=morph_key, disabled=not editable or not have or have.grade == 0,
            on_change=save, args=(level, grade_key, morph_key, version), label_visibility="collapsed",
            help="Wedge: anterior height lost; biconcave: the middle; crush: the whole body")
    unmarked = [lvl for lvl in levels if lvl not in own]
    if unmarked:
        st.caption(f"Not graded yet: {', '.join(unmarked)}")


def _scheme(study_id: int) -> str:
    from db.grades import scheme_of

    with unit_of_work(workspace().sessions, readonly=True) as session:
        return scheme_of(session, study_id)


def _labels_on(study: Any, prediction: pp.ShownPrediction | None, slice_index: int) -> Any:
    """The level labels of a stored slice: the dataset's mask, else the predicted one."""
    if study.mask is not None:
        return study.mask.array[slice_index]
    predicted, _ = pp.predicted_mask(study, prediction)
    return predicted.volume.array[slice_index] if predicted is not None else None


def _submit_panel(user: SignedInUser, study_id: int, status: str, study_status: str,
                  film: bool = False) -> None:
    if status == "submitted":
        locked = not ann.reopen_allowed(study_status)
        st.success("You submitted this study.")
        if st.button("Reopen", disabled=locked, key=f"annotate_reopen_{study_id}",
                     help="Adjudication has started: it can no longer be reopened" if locked else None):
            if _write(user, study_id, lambda s, me: ann.reopen(s, me, study_id), "Study reopened"):
                st.rerun()
        return
    if film:  # a film's own checks: its vertebra labels and reference
        film_submit_button(user, study_id, _write)
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
    # Notices and the "still fractured?" question each fill one container: Streamlit mounts an
    # element anew when its position changes, so a warning of its own above the viewer would
    # reload the viewer (its volume, zoom, window and tool) every time one came or went.
    notices = st.container()
    with notices:
        _show_flash()
    chosen = _choose_study(user)
    if chosen is None:
        return
    study_id, uid, status, study_status = chosen
    study, mask_problem = _open(study_id)
    if mask_problem:
        notices.warning(f"The vertebra mask could not be opened ({mask_problem}); new boxes get "
                        "no level (submit anyway, or ask an administrator to fix the mask).")
    editable = status != "submitted"
    if editable:
        _open_reading(user, study_id)
        _warm_box_route(study_id)
    prediction = pp.load_prediction(study_id)
    st.query_params["study"] = uid
    own = _own_boxes(user, study_id)

    head, pick = st.columns([2, 2], vertical_alignment="bottom")
    state = ("submitted (read-only)" if not editable
             else words.in_words(words.ASSIGNMENT_STATUSES, status).lower())
    head.markdown(f"**Annotate** · study `{uid}` · {state}")
    with pick:
        _fracture_picker(user, study_id, own, editable)
    with st.container():  # always there, even empty (see above)
        _ask_panel(user, study_id, editable)
    if is_radiograph_volume(study.image):
        film_view_panel(study, user, key="an_film_view")
    st.fragment(_viewer)(user, study_id, study, editable, prediction)
    film = film_reading_table(user, study_id, editable, _write)  # a film: one box per vertebra
    with st.expander("Keys of the viewer (the same on every page; ? inside the viewer)"):
        st.markdown(keymap_markdown(
            viewer_options(study.image).get("presets", CT_PRESETS)))
    if film:  # the vertebra table stands in for the CT's level calls
        _submit_panel(user, study_id, status, study_status, film=True)
        return

    boxed = {b.level for b in own if b.level}
    levels = ag.levels_to_call(study.info.mask_levels, boxed)
    calls_col, rest = st.columns([3, 2], gap="medium")
    with calls_col:
        renumbered = relabel_panel(user, study_id, study.info.mask_levels or (), editable,
                                   _write).mapping
        if _scheme(study_id) == "genant":  # every vertebra in the field of view (not the sacrum)
            present = set(study.info.mask_levels or ())
            graded = [lvl for lvl in levels if lvl in present and lvl not in ("S", "Co")]
            _grade_panel(user, study_id, graded or levels, editable, renumbered)
        else:
            _level_panel(user, study_id, levels, boxed, editable)
    with rest:
        fractures: dict[str, list[be.BoxState]] = {}
        for b in own:
            fractures.setdefault(b.fracture or "", []).append(b)
        if own:
            with st.expander(f"My boxes ({len(own)})", expanded=True):
                for fid, rows in sorted(fractures.items()):
                    keys = sum(b.is_key for b in rows)
                    name = f"Fracture {fid}" if fid else "Single boxes"
                    shown = sorted(_shown(study, b.slice_index) for b in rows)
                    st.caption(f"{name}: {keys} key box(es), {len(rows) - keys} interpolated · "
                               f"axial slices {shown[0]}–{shown[-1]}")
                    for b in rows:
                        if b.is_key:
                            st.button(f"Axial {_shown(study, b.slice_index)}: {b.level or 'no level'}",
                                      key=f"annotate_jump_{study_id}_{b.id}",
                                      on_click=_jump, args=(study_id, study, b.slice_index))
        _submit_panel(user, study_id, status, study_status)


with error_boundary("The annotation page"):
    main()
