"""Viewer: a study's slices in the client-side workstation (``spine_viewer``), the 3-D view
beside them in a tab, and the model's prediction (``pages.parts.prediction_panel``) under them.

The browser holds the whole volume: stepping, window/level, zoom and pan never rerun the script.
Only the slice the reader settles on comes back (debounced), and goes into the address
(``?study=<uid>&plane=axial&slice=<n>``, see ``pages.parts.viewer_location``), so deep links,
bookmarks, reload and Back/Forward open the same study and slice. The slice number is the one
the viewer shows (1-based, display order); the instance number is given beside it.

A study too large for the browser's memory budget falls back to the server-rendered slice views
(``server_slices_panel``: slider, ↑/↓ and PgUp/PgDn keys, clicks; only the three slices on screen
are rendered). The study is opened once per server process (``viewer_parts.load_study``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages.parts.common import SignedInUser, error_boundary, require_permission
from pages.parts.film_view import film_view_panel
from pages.parts.prediction_panel import (
    PredictedMask,
    ShownPrediction,
    prediction_boxes,
    prediction_section,
)
from pages.parts.server_slices import reset_for, server_slices_panel
from pages.parts.slice_view import PLANE_TITLES
from pages.parts.viewer_location import read_location, study_id_of, write_location
from pages.parts.viewer_parts import (
    StudyView,
    back_to_cases_button,
    figure_3d,
    level_toggles,
    load_study,
    reader_boxes,
    recent_reader_boxes,
    selected_study_id,
    shown_levels,
    view_is_current,
)
from pages.parts.viewer_workstation import (
    PLANE_AXIS,
    browser_limit,
    browser_refusal,
    settled_slice,
    slice_caption,
    viewer_boxes,
)
from spine_core.errors import CacheError, DicomError, MaskError, NotFound, SourceChangedError
from spine_core.io.radiograph import is_radiograph_volume, viewer_options
from spine_core.labels import LEVEL_NAMES
from spine_core.render import Plane
from spine_viewer import CT_PRESETS, ViewerSource, VolumeTooLargeError, keymap_markdown, workstation

NO_MASK = "viewer_without_mask"  # study ids the user chose to open without their mask
# --- the client-side workstation -------------------------------------------------------------

WS_KEY = "vw_ws"
WS_LAYOUTS = {"One plane": "single", "Three planes": "three"}
OVERLAYS = ("Dataset mask", "Model's mask")


def _go_to_plane(view: StudyView) -> None:
    """The plane control changed: show that plane at the linked cursor's slice."""
    plane = st.session_state.get("vw_ws_plane") or "axial"
    cursor = st.session_state.get("vw_ws_cursor", {}).get(view.info.study_id, view.centre)
    write_location(view.info.study_uid, plane, int(cursor[PLANE_AXIS[plane]]) + 1)


@st.fragment
def client_panel(view: StudyView, user: SignedInUser, prediction: ShownPrediction | None = None,
                 predicted: PredictedMask | None = None) -> None:
    """The study in the client-side viewer, with the page's few controls above it.

    The address is read on every run; the reader's settled slice (the browser's debounced
    commit) is written into it once, before the viewer is mounted, so what is passed back is
    always where the reader is."""
    if not view_is_current(view):  # its cache files changed since the page opened it
        st.rerun(scope="app")
    uid, study_id = view.info.study_uid, view.info.study_id
    cursors: dict[int, tuple[int, int, int]] = st.session_state.setdefault("vw_ws_cursor", {})
    recent: list[tuple[int, int, int]] = st.session_state.setdefault("vw_ws_recent", [])
    key = WS_KEY
    settled = settled_slice(key)
    if settled is not None and settled != st.session_state.get("vw_ws_seen"):
        st.session_state["vw_ws_seen"] = settled
        recent[:] = [*recent[-7:], settled.cursor]
        if st.session_state.get("vw_ws_seen_for") == (study_id, view.fingerprint):
            cursors[study_id] = settled.cursor
            write_location(uid, settled.plane, settled.index + 1)
    st.session_state["vw_ws_seen_for"] = (study_id, view.fingerprint)

    here = read_location()
    plane = here.plane or "axial"
    count = view.slice_count(Plane(plane))
    cursor = list(cursors.get(study_id, view.centre))
    if here.study_uid == uid and here.number is not None:
        cursor[PLANE_AXIS[plane]] = min(here.number, count) - 1
    index = cursor[PLANE_AXIS[plane]]
    if here.number != index + 1 or here.plane != plane:
        write_location(uid, plane, index + 1)
    passed = st.session_state.get("vw_ws_passed")
    axis = PLANE_AXIS[plane]
    if (passed is not None and passed[0] == study_id and passed[1][axis] != index
            and recent and recent[-1][axis] != index and any(c[axis] == index for c in recent)):
        # Back/Forward (or an edited address) to a slice the browser committed lately: the
        # component would take it for an echo of its own commit and keep its slice, so tell it
        # to go there (the volume stays in the browser)
        st.session_state["vw_ws_go_to"] = st.session_state.get("vw_ws_go_to", 0) + 1
        recent.clear()
    st.session_state["vw_ws_passed"] = (study_id, tuple(cursor))
    if st.session_state.get("vw_ws_plane") != plane:
        st.session_state["vw_ws_plane"] = plane

    bar = st.container(horizontal=True, vertical_alignment="center", gap="small")
    film = is_radiograph_volume(view.image)  # one image: no layout or plane to choose
    layout = None if film else bar.segmented_control(
        "Layout", list(WS_LAYOUTS), default="One plane", key="vw_ws_layout",
        label_visibility="collapsed")
    if not film:
        bar.segmented_control("Plane", list(PLANE_AXIS), key="vw_ws_plane",
                              format_func=lambda p: PLANE_TITLES[Plane(p)],
                              label_visibility="collapsed", on_change=_go_to_plane, args=(view,))
    readers_on = bar.toggle("Readers' boxes", value=True, key="vw_boxes")
    model_on = False
    if prediction is not None and prediction.boxes:
        model_on = bar.toggle("Predicted boxes", value=True, key="vw_pred_boxes")
    why_on = False
    if prediction is not None and prediction.explanation:
        why_on = bar.toggle("Grad-CAM", value=False, key="vw_gradcam",
                            help="Where the fracture classifier looked on each level it flagged "
                                 "(its Grad-CAM, in violet): an explanation of the score. The "
                                 "predicted boxes come from the detector trained on boxes.")
    overlay_name = OVERLAYS[0]
    if predicted is not None and view.mask is not None:
        overlay_name = bar.selectbox("Overlay", OVERLAYS, key="vw_overlay",
                                     label_visibility="collapsed",
                                     help="Colour the vertebrae of the dataset's mask or of the "
                                          "model's predicted mask")
    elif predicted is not None:
        overlay_name = OVERLAYS[1]
    mask: Any = view.mask
    volume_id = f"{view.info.series_uid}:{view.fingerprint}:{view.mask_id}"
    if overlay_name == OVERLAYS[1] and predicted is not None:
        mask, volume_id = predicted.volume, f"{volume_id}:prediction{predicted.prediction_id}"

    boxes = viewer_boxes(recent_reader_boxes(study_id, user) if readers_on else [],
                         prediction.boxes if model_on and prediction is not None else [],
                         prediction.explanation if why_on and prediction is not None else [])
    where = "Film · one image" if film else slice_caption(view, plane, index, tuple(cursor))
    options = viewer_options(view.image)
    bar.caption(f"**{where}** · ? keys",
                help="↑/↓ or the wheel step a slice, PgUp/PgDn ten; right-drag sets the window "
                     "(1/2/3 presets), Ctrl+wheel zooms, Shift+drag pans, R resets, L the level "
                     "colours.\n\n" + keymap_markdown(
                         options.get("presets", CT_PRESETS)))
    try:
        workstation(volume_id, lambda: ViewerSource(view.image, mask), key=key,
                    layout=WS_LAYOUTS.get(layout or "", "single"),  # type: ignore[arg-type]
                    plane=plane,  # type: ignore[arg-type]
                    cursor=cursor, boxes=boxes, editable=False, max_browser_bytes=browser_limit(),
                    **options,
                    go_to=int(st.session_state.get("vw_ws_go_to", 0)))
    except VolumeTooLargeError as exc:  # checked before; a mask switch may still exceed it
        st.info(f"{exc}.")


# --- 3-D --------------------------------------------------------------------------------------


def panel_3d(view: StudyView, user: SignedInUser, prediction: ShownPrediction | None = None,
             *, toggles: bool = True) -> None:
    """The vertebra meshes and boxes in 3-D; ``toggles``: its own level toggles (else the
    slice view's, on the same page, choose the levels)."""
    if view.mask is None:
        st.info("The 3-D view draws the vertebra mask, and this study is shown without one.")
        return
    bar = st.container(horizontal=True, vertical_alignment="center")
    boxes_on = bar.toggle("Fracture boxes", value=True, key="vw_3d_boxes")
    bar.caption("Drag to rotate, scroll to zoom; click a name in the plot's legend to hide it. "
                "Seen from the front: the patient's right is on your left.")
    ids = level_toggles(view, "vw_ovl") if toggles else shown_levels(view, "vw_ovl")
    boxes = [*reader_boxes(view.info.study_id, user), *prediction_boxes(prediction)] \
        if boxes_on else []
    st.plotly_chart(figure_3d(view, boxes, ids), key="vw_3d", config={"displaylogo": False})


# --- the page ----------------------------------------------------------------------------------


def _open(study_id: int) -> StudyView | None:
    """The study, or None after explaining what is wrong and offering a way forward."""
    without_mask: set[int] = st.session_state.setdefault(NO_MASK, set())
    try:
        return load_study(study_id, with_mask=study_id not in without_mask)
    except NotFound as exc:
        st.warning(str(exc))
    except SourceChangedError as exc:
        st.error(f"This study cannot be opened: {exc}.")
        st.info("Its files were moved, deleted or changed after import. Restore them, or ask an "
                "administrator to re-import the study's folder (`spine import FOLDER`); saved "
                "annotations are kept.")
    except MaskError as exc:
        st.error(f"The vertebra mask of this study cannot be shown: {exc}.")
        if st.button("Open without mask", type="primary", key="vw_without_mask"):
            without_mask.add(study_id)
            st.rerun()
    except (CacheError, DicomError) as exc:
        st.error(f"The images of this study cannot be read: {exc}.")
        st.info("Try again; if it persists, ask an administrator to re-import the study.")
    back_to_cases_button()
    return None


def _header(view: StudyView, user: SignedInUser) -> None:
    info = view.info
    st.subheader(f"Study {info.study_uid}")
    report = ("no report" if info.report_fractured is None else
              "report: no fracture" if not info.report_fractured else
              "report: fracture " + ", ".join(info.report_fractured))
    if view.mask is not None:
        mask = f"mask {LEVEL_NAMES[view.levels[0]]}–{LEVEL_NAMES[view.levels[-1]]}" \
            if view.levels else "mask (no level)"
    else:
        mask = "no mask" if info.mask_id is None else "opened without mask"
    radiograph = is_radiograph_volume(view.image)
    slices = "" if radiograph else f"{info.n_slices} slices"
    st.caption(" · ".join(x for x in (info.dataset.upper(), info.patient_id, info.description,
                                      slices, report, mask) if x))
    if radiograph:
        film_view_panel(view, user, key="vw_film_view")
    if info.warnings:
        with st.expander(f"{len(info.warnings)} import warning(s)"):
            for w in info.warnings:
                st.write(w)
    for w in (view.mask.meta.get("warnings") or []) if view.mask is not None else []:
        st.warning(f"Mask: {w}")  # e.g. resampled onto the image grid: check the overlay


def _chosen_study() -> int | None:
    """The study named in the address (a deep link, reload, Back/Forward), else the one chosen in
    the case list (then written into the address)."""
    uid = read_location().study_uid
    if uid is not None:
        found = study_id_of(uid)
        if found is not None:
            st.session_state["viewer_study_id"] = found
            return found
        st.warning(f"Study {uid} (in the address) is not in the catalogue; showing the study "
                   "chosen in the case list.")
    return selected_study_id()


def main(user: SignedInUser) -> None:
    study_id = _chosen_study()
    if study_id is None:
        st.info("Choose a study in the case list to open it here.")
        back_to_cases_button("Go to the case list")
        return
    view = _open(study_id)
    if view is None:
        return
    here = read_location()
    if here.study_uid != view.info.study_uid:  # opened from the case list: name it in the address
        write_location(view.info.study_uid)
    reset_for(view)
    _header(view, user)
    if study_id in st.session_state.get(NO_MASK, set()) and view.info.mask_id is not None:
        if st.button("Try the mask again", key="vw_retry_mask"):
            st.session_state[NO_MASK].discard(study_id)
            st.rerun()
    refusal = browser_refusal(view, view.mask is not None)
    if refusal is not None:  # the fallback: today's server-rendered slices, prediction above
        st.info(f"{str(refusal)[0].upper()}{str(refusal)[1:]}.")
        prediction, predicted = prediction_section(view, user, key="vw_pred")
        slices, solid = st.tabs(["Slices", "3-D vertebrae"])
        with slices:
            server_slices_panel(view, user, prediction, predicted)
        with solid:
            panel_3d(view, user, prediction, toggles=False)
        return
    # the slices take the window's height (down to its bottom, even at 1024×700): the page's
    # top margin shrinks, and the prediction goes under the views (filled first: they draw it)
    st.html("<style>.stMainBlockContainer, .block-container {padding-top: 2.5rem} "
            "[data-testid=stHeading] h3 {font-size: 1.25rem; overflow-wrap: anywhere; "
            "padding-bottom: 0}</style>")  # style only: takes no room on the page
    film = is_radiograph_volume(view.image)  # one image: no 3-D
    slices, solid = (st.container(), None) if film else st.tabs(["Slices", "3-D vertebrae"])
    with st.container():
        prediction, predicted = prediction_section(view, user, key="vw_pred")
    with slices:
        client_panel(view, user, prediction, predicted)
    if solid is not None:
        with solid:
            panel_3d(view, user, prediction)


signed_in = require_permission()
with error_boundary("The viewer"):
    main(signed_in)
