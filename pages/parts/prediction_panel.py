"""The model's prediction beside the human work: shared pieces of the viewer and annotation pages.

* :func:`load_prediction` reads a study's latest prediction as plain values
  (:class:`ShownPrediction`); :func:`predicted_mask` opens its mask on the study's grid (cached
  per prediction and file).
* :func:`prediction_section` shows which model predicted the study, when and how fast, its
  per-level and patient probabilities (on a radiograph: the vertebrae it found with their counted
  labels, :mod:`spine_core.film_prediction`), and lets every signed-in role but viewer ask for a
  (new) prediction: the run goes on in the background (:mod:`db.prediction_runs`; in a ``spine
  worker`` with ``SPINE_WORKER=external``) with a progress bar fed by the predictor's progress
  callback; a slow, failing or unreachable backend ends with a clear message, a retry button and
  nothing stored.
* :func:`prediction_controls` and :func:`prediction_png` draw the predicted mask as an outline
  (its own toggle, opacity and colour, so it never looks like the dataset's filled mask);
  :func:`prediction_boxes` gives the predicted boxes in their own colour with their score.
* :func:`copy_panel` lets a reader copy predicted boxes into their own work
  (``db.box_events.save_box`` with ``source="prediction"``); :func:`draw_predicted_boxes`
  marks them on the reader's canvas image.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import streamlit as st

from db.access import ReaderScope, reader_scope
from db.prediction_copies import copy_input, is_copied, save_copies
from db.prediction_runs import RUNS, RunSnapshot, StoredRun, StudyPredictionRun
from pages.parts.common import SignedInUser, workspace
from pages.parts.viewer_parts import ShownBox, StudyView, plane_image
from spine_core import words
from spine_core.boxes import Box
from spine_core.colours import MODEL_COLOUR, RGB
from spine_core.errors import SpineError
from spine_core.film_prediction import film_prediction_line, vertebra_rows
from spine_core.inference.protocol import PredictedBox, Predictor
from spine_core.io.radiograph import is_radiograph_volume
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_COLOURS, LEVEL_IDS, LEVEL_NAMES
from spine_core.render import (
    OverlayStyle,
    Plane,
    Window,
    ZoomBox,
    draw_rect,
    encode_png,
    outline_labels,
    plane_pixels,
)
from spine_core.roles import Permission, can
from spine_core.volume import Volume

#: The colour of everything the model drew (readers' colours and the level colours avoid it).
#: Roles that may ask for a prediction: predictions are not reader work, so annotators may too.
#: Seconds between two looks at a running prediction.
POLL_S = 1.0

#: What to tell the user first, per kind of failure (``db.prediction_runs.failure_kind``).
FAILURE_HEADINGS = {
    "unreachable": "The model backend cannot be reached.",
    "busy": "The model backend is busy.",
    "timeout": "The model backend did not answer in time.",
    "backend": "The model backend failed.",
    "model": "The model could not be loaded.",
    "prediction": "The model's answer could not be stored.",
    "conflict": "Another prediction of this study was stored at the same moment.",
    "input": "The model cannot use this study.",
    "exists": "This model version already predicted the study.",
}


# --------------------------------------------------------------------------------------------
# The stored prediction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShownPrediction:
    """A study's latest prediction as plain values (probabilities by canonical level name)."""

    id: int
    study_id: int
    model: str
    created_at: dt.datetime
    created_by: str
    backend: str
    patient_probability: float | None
    level_probabilities: Mapping[str, float]
    boxes: tuple[PredictedBox, ...]
    timings: Mapping[str, float]
    mask_path: str
    #: the fracture classifier's Grad-CAM boxes: why it scored the flagged levels (not detections)
    explanation: tuple[PredictedBox, ...] = ()

    def boxes_on(self, slice_index: int) -> list[PredictedBox]:
        """The predicted boxes on stored slice ``slice_index``."""
        return [b for b in self.boxes if b.slice_index == int(slice_index)]


def _boxes(raw: Sequence[Any] | None, explanation: bool = False) -> tuple[PredictedBox, ...]:
    """The stored boxes that can be drawn: the detections, or with ``explanation`` the
    explanation boxes."""
    out = []
    for item in raw or []:
        try:
            box = PredictedBox.from_json(dict(item))
        except (KeyError, TypeError, ValueError):
            continue  # written by an older model version: skip what cannot be drawn
        if box.width > 0 and box.height > 0 and box.explanation == explanation:
            out.append(box)
    return tuple(out)


def _numbers(raw: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (raw or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def load_prediction(study_id: int) -> ShownPrediction | None:
    """The study's latest prediction (any model), or None when no model has run on it."""
    from db import models as m
    from db.predictions import latest_prediction

    with workspace().sessions() as session:
        row = latest_prediction(session, int(study_id))
        if row is None:
            return None
        version = session.get(m.ModelVersion, row.model_version_id)
        return ShownPrediction(
            id=row.id, study_id=row.study_id,
            model=f"{version.name} {version.version}" if version is not None else "model",
            created_at=row.created_at, created_by=row.created_by or "", backend=row.backend or "",
            patient_probability=row.patient_probability,
            level_probabilities=_numbers(row.level_probabilities), boxes=_boxes(row.boxes),
            timings=_numbers(row.timings), mask_path=row.mask_path or "",
            explanation=_boxes(row.boxes, explanation=True),
        )


@dataclass(frozen=True, eq=False)
class PredictedMask:
    """A prediction's mask on its study's image grid (canonical level ids); one per prediction
    file, so it can key small render caches."""

    prediction_id: int
    volume: Volume


@st.cache_resource(max_entries=8, show_spinner="Loading the predicted mask…")
def _load_mask(prediction_id: int, series_id: int, stamp: tuple[int, int], path: str,
               _view: StudyView) -> PredictedMask:
    from spine_core.io.masks import load_aligned_mask
    from spine_core.labels import VOCABULARIES

    del series_id, stamp  # the cache key, with the prediction and the path
    aligned = load_aligned_mask(path, _view.image, vocabulary=VOCABULARIES["canonical"])
    volume = _view.image.with_array(np.asarray(aligned.array, dtype=np.uint8), kind="mask")
    return PredictedMask(prediction_id, volume)


def predicted_mask(view: StudyView, prediction: ShownPrediction | None
                   ) -> tuple[PredictedMask | None, str]:
    """(mask, problem): the predicted mask when there is one that can be shown, else why not
    (an empty problem when the prediction simply has no mask)."""
    if prediction is None or not prediction.mask_path:
        return None, ""
    path = Path(prediction.mask_path)
    if not path.is_file():
        return None, f"its mask file {path} is missing; predict the study again"
    stat = path.stat()
    try:
        mask = _load_mask(prediction.id, view.info.series_id, (stat.st_size, stat.st_mtime_ns),
                          str(path), view)
    except SpineError as exc:
        return None, f"{exc}; predict the study again"
    return mask, ""


# --------------------------------------------------------------------------------------------
# Drawing it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionStyle:
    """How the viewer draws the prediction: the mask as an outline (``opacity``, in the model's
    colour or each level's), and the boxes."""

    mask: bool = True
    opacity: float = 0.9
    level_colours: bool = False
    boxes: bool = True


def outline_overlay(rgb: npt.NDArray[np.uint8], labels: npt.NDArray[np.integer], *,
                    opacity: float, colour: RGB | None = MODEL_COLOUR) -> npt.NDArray[np.uint8]:
    """``rgb`` with the border pixels of each labelled region blended in ``colour`` (None: each
    level's own colour) at ``opacity``; a new array."""
    edge = outline_labels(np.asarray(labels))
    hit = edge > 0
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if not hit.any() or opacity <= 0:
        return out
    if colour is None:
        table = np.zeros((256, 3), dtype=np.float64)
        for lid, c in LEVEL_COLOURS.items():
            table[lid] = c
        paint = table[np.clip(edge[hit], 0, 255).astype(np.intp)]
    else:
        paint = np.asarray(colour, dtype=np.float64)[None, :]
    a = float(opacity)
    out[hit] = np.rint(out[hit].astype(np.float64) * (1.0 - a) + paint * a).astype(np.uint8)
    return out


def prediction_png(view: StudyView, plane: Plane, index: int, window: Window,
                   overlay: OverlayStyle | None, zoom: ZoomBox, mask: PredictedMask,
                   style: PredictionStyle) -> bytes:
    """One slice (with the dataset's mask as ``overlay`` says) and the predicted mask's outline
    on top, as PNG bytes; cached per process like the viewer's own slices."""
    return _prediction_png(view, plane, int(index), window, overlay, zoom, mask,
                           float(style.opacity), bool(style.level_colours))


@functools.lru_cache(maxsize=96)
def _prediction_png(view: StudyView, plane: Plane, index: int, window: Window,
                    overlay: OverlayStyle | None, zoom: ZoomBox, mask: PredictedMask,
                    opacity: float, level_colours: bool) -> bytes:
    rgb = plane_image(view, plane, index, window, overlay, zoom)
    labels = plane_pixels(mask.volume.array, view.geometry, plane, index, zoom=zoom)
    rgb = outline_overlay(rgb, labels, opacity=opacity,
                          colour=None if level_colours else MODEL_COLOUR)
    return encode_png(rgb)


def _box_label(box: PredictedBox) -> str:
    return " ".join(x for x in ("model", box.level or "", f"{box.score:.2f}") if x)


def prediction_boxes(prediction: ShownPrediction | None) -> list[ShownBox]:
    """The predicted boxes as the viewer draws them: the model's colour, level and score."""
    if prediction is None:
        return []
    return [ShownBox(Box(b.slice_index, b.x, b.y, b.width, b.height), MODEL_COLOUR,
                     _box_label(b), "model") for b in prediction.boxes]


def prediction_controls(prediction: ShownPrediction | None, mask: PredictedMask | None,
                        key: str, container: Any = None) -> PredictionStyle | None:
    """The prediction's own overlay controls; None when there is no prediction to draw."""
    if prediction is None:
        return None
    box = container if container is not None else st
    box.markdown(f"**Model** · {prediction.model}")
    mask_on = box.toggle("Predicted mask", value=True, key=f"{key}_mask",
                         disabled=mask is None, help="Drawn as an outline, in pink unless level "
                         "colours are asked for")
    opacity = box.slider("Predicted mask opacity", 0.0, 1.0, 0.9, 0.05, key=f"{key}_opacity",
                         disabled=mask is None)
    levels = box.toggle("Predicted levels in colour", value=False, key=f"{key}_levels",
                        disabled=mask is None)
    boxes_on = box.toggle("Predicted boxes", value=True, key=f"{key}_boxes",
                          disabled=not prediction.boxes)
    return PredictionStyle(bool(mask_on) and mask is not None, float(opacity), bool(levels),
                           bool(boxes_on))


# --------------------------------------------------------------------------------------------
# Probabilities, model, timings
# --------------------------------------------------------------------------------------------


def probability_rows(prediction: ShownPrediction) -> list[dict[str, Any]]:
    """One row per level the model scored, head to feet: level and probability of fracture."""
    rank = {LEVEL_NAMES[lid]: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    names = sorted((n for n in prediction.level_probabilities if n in LEVEL_IDS),
                   key=rank.__getitem__)
    return [{"Level": n, "Fracture probability": prediction.level_probabilities[n]}
            for n in names]


def timings_text(timings: Mapping[str, float]) -> str:
    """'load 0.05 s · threshold 0.03 s · total 0.08 s'."""
    if not timings:
        return "no timings recorded"
    parts = [f"{name.removesuffix('_s').replace('_', ' ')} {value:.2f} s"
             for name, value in timings.items()]
    return " · ".join(parts)


def who(username: str, user: SignedInUser) -> str:
    """Who asked for a prediction, as ``user`` may know it: annotators are blinded to each other,
    so another user's name (perhaps a reader of the same study) is not shown to them."""
    if username == user.username:
        return "you"
    return "another user" if reader_scope(user) is ReaderScope.own else username


def _summary(prediction: ShownPrediction, user: SignedInUser, film: bool = False) -> str:
    p = prediction.patient_probability
    when = prediction.created_at.strftime("%Y-%m-%d %H:%M UTC")
    by = f" by {who(prediction.created_by, user)}" if prediction.created_by else ""
    if film:  # the radiograph ensemble labels vertebrae and scores no fracture
        return (f"**Model prediction** · {prediction.model} · {when}{by} · "
                f"**{film_prediction_line(prediction.boxes)}**")
    patient = "—" if p is None else f"{p:.2f}"
    n = len(prediction.boxes)
    return (f"**Model prediction** · {prediction.model} · {when}{by} · patient fracture "
            f"probability **{patient}** · {n} box{'es' if n != 1 else ''}")


def _film_details(prediction: ShownPrediction) -> None:
    """A radiograph's predicted vertebrae, head to feet, with their labels and scores."""
    rows = vertebra_rows(prediction.boxes)
    table, facts = st.columns([3, 2], gap="medium")
    with table:
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", column_config={
                "Detection score": st.column_config.ProgressColumn(
                    "Detection score", min_value=0.0, max_value=1.0, format="%.2f")})
        else:
            st.caption("The model found no vertebra on this film.")
    with facts:
        st.caption("Labels are counted from the reference vertebra the model found (C2 on "
                   "cervical films, S1 on lumbar films); a vertebra without a label was found "
                   "where no reference could be counted from. The radiograph model gives no "
                   "fracture probability.")
        st.caption(f"Timings: {timings_text(prediction.timings)}")
        st.caption(f"Ran on: {prediction.backend or 'unknown'}")


def _details(prediction: ShownPrediction) -> None:
    rows = probability_rows(prediction)
    table, facts = st.columns([3, 2], gap="medium")
    with table:
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", column_config={
                "Fracture probability": st.column_config.ProgressColumn(
                    "Fracture probability", min_value=0.0, max_value=1.0, format="%.2f")})
        else:
            st.caption("The model gave no per-level probability.")
    with facts:
        p = prediction.patient_probability
        st.metric("Patient fracture probability", "—" if p is None else f"{p:.2f}")
        st.caption(f"Timings: {timings_text(prediction.timings)}")
        st.caption(f"Ran on: {prediction.backend or 'unknown'}")


# --------------------------------------------------------------------------------------------
# Asking for a prediction
# --------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _predictor(backend_url: str, backend_token: str, timeout_s: float, device: str,
               models_dir: str) -> Predictor:
    """One predictor per backend setting for the whole server (local models load once)."""
    from spine_core.inference.select import predictor_from_settings

    del backend_url, backend_token, timeout_s, device, models_dir  # the cache key
    return predictor_from_settings(workspace().settings)


def current_predictor() -> Predictor:
    """The predictor the settings in force select (``SPINE_BACKEND_URL``...)."""
    s = workspace().settings
    return _predictor(s.backend_url, s.backend_token, float(s.backend_timeout_s), s.device,
                      str(s.models_dir or ""))


def may_predict(user: SignedInUser) -> bool:
    return can(user.role, Permission.predict_study)


def _run_key(key: str, study_id: int) -> str:
    return f"{key}_run_{study_id}"


def _problem_key(key: str, study_id: int) -> str:
    return f"{key}_problem_{study_id}"


def start_prediction(user: SignedInUser, study_id: int, key: str) -> None:
    """Start predicting the study in the background (a button callback); a refusal is kept in
    the session and shown by :func:`prediction_section`."""
    st.session_state.pop(_problem_key(key, study_id), None)
    st.session_state.pop(f"{key}_backend_{study_id}", None)
    if not may_predict(user):
        st.session_state[_problem_key(key, study_id)] = (
            f"Your role ({words.role_words(user.role)}) may look at predictions but not ask for them.")
        return
    ws = workspace()
    try:
        run = RUNS.submit(ws.settings.database_url, ws, current_predictor(), study_id,
                          actor=user.username)
    except SpineError as exc:
        st.session_state[_problem_key(key, study_id)] = str(exc)
        return
    st.session_state[_run_key(key, study_id)] = run


def _check_backend(key: str, study_id: int) -> None:
    from spine_core.inference.status import backend_status

    status = backend_status(workspace().settings)
    st.session_state[f"{key}_backend_{study_id}"] = (status.ok, status.summary)


@st.fragment(run_every=POLL_S)
def _live_progress(database: str, study_id: int, user: SignedInUser) -> None:
    """The running prediction's progress, redrawn every :data:`POLL_S`; the whole page reruns
    when it ends (to draw the new prediction or the failure)."""
    run = RUNS.current(database, study_id, workspace().sessions)
    if run is None or not run.running:
        st.rerun(scope="app")
    snap = run.snapshot()  # type: ignore[union-attr]
    st.progress(snap.fraction, text=f"Predicting this study ({snap.message}) · asked by "
                f"{who(snap.started_by, user)}. You can go on reading meanwhile.")


def _failure(snap: RunSnapshot, user: SignedInUser, study_id: int, key: str) -> None:
    heading = FAILURE_HEADINGS.get(snap.kind, "The prediction failed.")
    st.error(f"{heading} {snap.error[:1].upper()}{snap.error[1:]}. Nothing was stored; the page "
             "shows the earlier prediction, if any.")
    bar = st.container(horizontal=True)
    bar.button("Try again", key=f"{key}_retry", type="primary", on_click=start_prediction,
               args=(user, study_id, key))
    bar.button("Check the backend", key=f"{key}_check", on_click=_check_backend,
               args=(key, study_id))
    checked = st.session_state.get(f"{key}_backend_{study_id}")
    if checked is not None:
        ok, summary = checked
        (st.success if ok else st.warning)(f"**Backend** · {summary}")


def prediction_section(view: StudyView, user: SignedInUser, *, key: str = "pred"
                       ) -> tuple[ShownPrediction | None, PredictedMask | None]:
    """The study's model prediction: summary, predict / predict again (progress, failures with
    a retry), probabilities per level and timings. Returns the prediction to draw and its mask."""
    study_id = view.info.study_id
    database = workspace().settings.database_url
    active = RUNS.current(database, study_id, workspace().sessions)
    running = active is not None and active.running
    own: StudyPredictionRun | StoredRun | None = st.session_state.get(_run_key(key, study_id))
    prediction = load_prediction(study_id)
    mask, mask_problem = predicted_mask(view, prediction)
    film = is_radiograph_volume(view.image)

    with st.container(border=True):
        head, action = st.columns([5, 1], vertical_alignment="center")
        head.markdown(_summary(prediction, user, film) if prediction is not None else
                      "**Model prediction** · none yet for this study")
        if may_predict(user):
            action.button("Predict again" if prediction is not None else "Predict this study",
                          key=f"{key}_predict", disabled=running, on_click=start_prediction,
                          args=(user, study_id, key), width="stretch",
                          help="Runs the model on this study (SPINE_BACKEND_URL, or this "
                               "machine) and stores its prediction")
        elif prediction is None:
            head.caption("Annotators, adjudicators and administrators can ask for one.")
        problem = st.session_state.pop(_problem_key(key, study_id), None)
        if problem:
            st.error(f"The prediction was not started: {problem}")
        if running:
            _live_progress(database, study_id, user)
        elif own is not None:
            snap = own.snapshot()
            if snap.failed:
                _failure(snap, user, study_id, key)
            elif snap.succeeded:
                st.success("The prediction was stored and is drawn on the "
                           + ("film." if film else "slices."))
                del st.session_state[_run_key(key, study_id)]
        if mask_problem:
            st.warning(f"The predicted mask cannot be shown: {mask_problem}.")
        if prediction is not None and film:
            with st.expander("Predicted vertebrae, timings"):
                _film_details(prediction)
        elif prediction is not None:
            with st.expander("Probabilities per level, timings"):
                _details(prediction)
    return prediction, mask


# --------------------------------------------------------------------------------------------
# Readers: starting from the prediction
# --------------------------------------------------------------------------------------------


def draw_predicted_boxes(rgb: npt.NDArray[np.uint8], view: StudyView,
                         boxes: Sequence[PredictedBox], display_index: int, zoom: ZoomBox
                         ) -> None:
    """Outline the predicted boxes of acquisition slice ``display_index`` on the crop ``zoom``
    of that slice's image, in place, in the model's colour."""
    geo = view.geometry
    for b in boxes:
        d = geo.box_in_plane(Box(b.slice_index, b.x, b.y, b.width, b.height),
                             geo.acquisition_plane, display_index)
        if d is not None:
            draw_rect(rgb, d.row0 - zoom.row0, d.col0 - zoom.col0, d.row1 - zoom.row0,
                      d.col1 - zoom.col0, MODEL_COLOUR, thickness=1)


#: ``write(action, done_message) -> saved``: the annotation page's one-transaction writer.
Writer = Callable[[Callable[[Any, Any], object], str], bool]


def copy_boxes(boxes: Sequence[PredictedBox], labels: npt.NDArray[np.integer] | None,
               study_id: int, write: Writer, on_copied: Callable[[], None]) -> None:
    """Save ``boxes`` as the reader's own in one transaction (a button callback)."""
    inputs = [copy_input(b, labels) for b in boxes]
    if not inputs:
        return
    n = len(inputs)

    def action(session: Any, me: Any) -> None:
        save_copies(session, me, study_id, inputs)

    levels = sorted({i.level for i in inputs if i.level})
    done = (f"{n} predicted box{'es' if n > 1 else ''} copied"
            + (f" ({', '.join(levels)})" if levels else ""))
    if write(action, done):
        on_copied()


def show_on_canvas(key: str = "annotate_pred") -> bool:
    """Whether the reader keeps the model's boxes drawn on the image (the toggle of
    :func:`copy_panel`, on until turned off)."""
    return bool(st.session_state.get(f"{key}_show", True))


def copy_panel(prediction: ShownPrediction | None, study_id: int, slice_index: int,
               saved: Sequence[Any], labels: npt.NDArray[np.integer] | None, editable: bool,
               write: Writer, on_copied: Callable[[], None], *, key: str = "annotate_pred",
               jump: Callable[[int], None] | None = None,
               slice_number: Callable[[int], int] | None = None) -> None:
    """The model's boxes on this slice, to copy into the reader's own work one by one or all
    at once (``source="prediction"``; only this reader sees the copies, as any box of theirs).

    With ``jump`` (stored slice index -> move the page there) and ``slice_number`` (stored index ->
    the number shown to the reader), a slice without model boxes offers to go to the nearest one.
    """
    if prediction is None:
        st.caption("No model prediction for this study yet (the viewer can ask for one).")
        return
    boxes = prediction.boxes_on(slice_index)
    st.markdown(f"**Model's boxes on this slice** ({len(boxes)}) · {prediction.model}")
    st.toggle("Show the model's boxes on the image (pink)", value=True, key=f"{key}_show")
    if not boxes:
        on = sorted({b.slice_index for b in prediction.boxes})
        st.caption("The model drew no box on this slice" + (
            f"; it drew on {len(on)} other slice(s)." if on else "."))
        if on and jump is not None:
            nearest = min(on, key=lambda k: (abs(k - slice_index), k))
            shown = slice_number(nearest) if slice_number else nearest + 1
            st.button(f"Go to slice {shown}, the nearest with model boxes",
                      key=f"{key}_goto_{study_id}_{slice_index}", on_click=jump, args=(nearest,))
        return
    todo = [b for b in boxes if not is_copied(b, saved)]
    st.button("Copy predicted boxes on this slice", key=f"{key}_all_{study_id}_{slice_index}",
              disabled=not editable or not todo, on_click=copy_boxes,
              args=(todo, labels, study_id, write, on_copied),
              help="Saves them as your own boxes; edit or delete them like any box you drew")
    for i, b in enumerate(boxes):
        copied = b not in todo
        text, button = st.columns([3, 1], vertical_alignment="center")
        text.caption(f"{b.level or 'level ?'} · score {b.score:.2f} · {b.width:.0f}×"
                     f"{b.height:.0f} px at ({b.x:.0f}, {b.y:.0f})")
        button.button("Copied" if copied else "Copy", key=f"{key}_one_{study_id}_{slice_index}_{i}",
                      disabled=not editable or copied, on_click=copy_boxes,
                      args=([b], labels, study_id, write, on_copied))
