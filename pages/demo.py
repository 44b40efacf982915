"""Demonstration (read-only): large slices with the dataset's truth beside the model's prediction,
and per level what the report, the final label and the model say.

Nothing here writes. A study without a prediction shows its truth and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from db import models as m
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.prediction_panel import (
    ShownPrediction,
    load_prediction,
    predicted_mask,
    prediction_boxes,
)
from pages.parts.slice_view import PLANE_TITLES, slice_view
from pages.parts.viewer_parts import (
    ShownBox,
    StudyView,
    box_items,
    initial_slices,
    level_label_items,
    load_study,
    plane_image_png,
    position_text,
    selected_study_id,
    shown_zoom,
    window_controls,
)
from spine_core.boxes import Box
from spine_core.colours import TRUTH_COLOUR
from spine_core.errors import MaskError
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_IDS, LEVEL_NAMES
from spine_core.render import OverlayStyle, Plane
from spine_core.roles import Permission
from spine_core.volume import Volume

PLANE_CHOICES = (Plane.SAGITTAL, Plane.AXIAL, Plane.CORONAL)
MAX_STUDIES = 500


@dataclass(frozen=True)
class Truth:
    report: dict[str, bool]
    final: dict[str, bool]
    patient_overall: bool | None
    boxes: tuple[ShownBox, ...]


def _studies() -> dict[int, str]:
    """Studies with images to choose from (by UID, at most MAX_STUDIES)."""
    from db.catalogue import list_cases

    with workspace().sessions() as session:
        page = list_cases(session, sort="study_uid", descending=False, page_size=MAX_STUDIES)
    return {r.study_id: f"{r.study_uid} · {r.dataset} · {r.report_summary}" for r in page.rows
            if r.n_slices > 0}


def truth_of(study_id: int, user: SignedInUser) -> Truth:
    """Report labels, final labels, and the dataset's boxes where this user may see them."""
    from db.adjudication_inputs import report_labels
    from db.annotations import visible_boxes
    from db.disputes import final_labels_of
    from db.reports import report_of

    with workspace().sessions() as session:
        actor = session.get(m.User, user.id)
        rows = visible_boxes(session, actor, study_id, include_dataset=True) if actor else []
        boxes = [ShownBox(Box(r.slice_index, r.x, r.y, r.width, r.height), TRUTH_COLOUR,
                          f"truth {r.level or ''}".strip(), "truth")
                 for r in rows if r.source == "dataset" and r.width > 0 and r.height > 0]
        report = report_of(session, study_id)
        return Truth(report_labels(session, study_id), final_labels_of(session, study_id),
                     report.patient_overall if report is not None else None, tuple(boxes))


def _fmt(value: bool | None) -> str:
    return "—" if value is None else ("fractured" if value else "intact")


def level_table(view: StudyView, truth: Truth, result: ShownPrediction | None
                ) -> list[dict[str, str]]:
    """One row per level: the report, the final label and the model's probability."""
    names = set(truth.report) | set(truth.final) | set(view.info.mask_levels)
    if result is not None:
        names |= set(result.level_probabilities)
    rank = {LEVEL_NAMES[lid]: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    rows = []
    for name in sorted((n for n in names if n in LEVEL_IDS), key=rank.__getitem__):
        p = result.level_probabilities.get(name) if result is not None else None
        rows.append({"Level": name, "Report": _fmt(truth.report.get(name)),
                     "Final label": _fmt(truth.final.get(name)),
                     "Model": "—" if p is None else f"{p:.2f}"})
    return rows


@st.fragment
def side_by_side(view: StudyView, truth: Truth, result: ShownPrediction | None,
                 model_mask: Volume | None) -> None:
    """The chosen plane twice, large: truth on the left, the model on the right."""
    c1, c2, c3 = st.columns([2, 2, 3], vertical_alignment="bottom")
    plane = c1.segmented_control("Plane", PLANE_CHOICES, default=Plane.SAGITTAL,
                                 format_func=PLANE_TITLES.get, key="demo_plane") or Plane.SAGITTAL
    window = window_controls("demo_win", container=c2)
    n = view.slice_count(plane)
    key = f"demo_slice_{view.info.study_id}_{plane.value}"
    if key not in st.session_state:
        st.session_state[key] = initial_slices(view)[plane] + 1
    index = c3.slider(f"{PLANE_TITLES[plane]} slice", 1, n, key=key) - 1
    zoom = shown_zoom(view, plane, True)
    overlay = OverlayStyle(opacity=0.4)
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Truth** · the dataset's mask" + (" and boxes" if truth.boxes else ""))
        names = level_label_items(view, plane, index, zoom) if plane is Plane.SAGITTAL else []
        slice_view(plane_image_png(view, plane, index, window, overlay, zoom), key="demo_truth",
                   plane=plane, index=index, zoom=zoom, edges=view.geometry.edges(plane),
                   header=position_text(view, plane, index), labels=names,
                   boxes=box_items(view, list(truth.boxes), plane, index, zoom), max_vh=60.0)
    with right:
        if result is None:
            st.markdown("**Model** · no prediction yet")
        else:
            st.markdown(f"**Model** · {result.model} · "
                        f"{result.created_at:%Y-%m-%d %H:%M} UTC")
        names = (level_label_items(view, plane, index, zoom, mask=model_mask)
                 if plane is Plane.SAGITTAL and model_mask is not None else [])
        shown = overlay if model_mask is not None else None
        png = plane_image_png(view, plane, index, window, shown, zoom, mask=model_mask)
        slice_view(png, key="demo_model", plane=plane, index=index, zoom=zoom,
                   edges=view.geometry.edges(plane), header=position_text(view, plane, index),
                   labels=names, max_vh=60.0,
                   boxes=box_items(view, prediction_boxes(result), plane, index, zoom))


def main(user: SignedInUser) -> None:
    st.title("Demonstration")
    st.caption("Read-only. The dataset's truth beside the model's prediction.")
    studies = _studies()
    if not studies:
        st.info("No study with images yet: import a dataset first.")
        return
    chosen = selected_study_id()
    ids = list(studies)
    study_id = st.selectbox("Study", ids, index=ids.index(chosen) if chosen in studies else 0,
                            format_func=studies.get, key="demo_study")
    try:
        view = load_study(study_id)
    except MaskError as exc:
        st.warning(f"The dataset's mask cannot be shown ({exc}); showing the images alone.")
        view = load_study(study_id, with_mask=False)
    truth = truth_of(study_id, user)
    result = load_prediction(study_id)
    mask, problem = predicted_mask(view, result)
    model_mask = mask.volume if mask is not None else None
    if result is None:
        st.info("No prediction yet for this study: the truth is shown alone. A model run "
                "(Models page, or `spine predict`) adds its prediction here.")
    elif problem:
        st.warning(f"The predicted mask cannot be shown: {problem}.")
    side_by_side(view, truth, result, model_mask)

    t1, t2 = st.columns([3, 2])
    with t1:
        st.dataframe(level_table(view, truth, result), hide_index=True, width="stretch")
    with t2:
        final_any = any(truth.final.values()) if truth.final else None
        st.metric("Report, whole study", _fmt(truth.patient_overall))
        st.metric("Final label, whole study", _fmt(final_any))
        p = result.patient_probability if result is not None else None
        st.metric("Model, whole study", "no prediction yet" if result is None else
                  ("—" if p is None else f"{p:.2f}"))


signed_in = require_permission(Permission.demonstration)
with error_boundary("The demonstration"):
    main(signed_in)
