"""Models: each model version measured against the human work, and batch prediction.

Per model version: its card and counts; the RSNA weighted log loss; ROC curves and AUC per level
and for the patient against the final labels; sensitivity/specificity at a threshold (a slider
that reruns only its table); Dice per level and the VerSe identification rate against the
dataset masks; on radiographs, the vertebrae found and labelled against the readers' final truth
(:mod:`db.film_predictions`). The numbers come from :mod:`db.model_metrics`; "Predict all" runs
:func:`db.predictions.predict_many` in a background thread (:mod:`db.prediction_jobs`), or queues
it for a ``spine worker`` process (``SPINE_WORKER=external``), so the batch goes on when the page
is left, and one batch runs per database at a time; the page shows its progress from the
database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from db import catalogue
from db.film_predictions import film_prediction_metrics
from db.model_metrics import (
    PATIENT,
    ClassificationMetrics,
    ModelVersionSummary,
    SegmentationMetrics,
    StudyOutcome,
    classification_metrics,
    gather,
    model_versions,
    operating_points,
    rate,
    segmentation_metrics,
)
from db.prediction_jobs import JOBS, JobSnapshot
from db.session import unit_of_work
from db.workspace import Workspace
from pages.parts.common import (
    SignedInUser,
    current_user,
    error_boundary,
    require_permission,
    workspace,
)
from pages.parts.training_panel import training_section
from spine_core.adjudication import craniocaudal_key
from spine_core.errors import SpineError
from spine_core.film_prediction import FOUND_MIN_IOU
from spine_core.inference.protocol import Predictor
from spine_core.inference.status import BackendStatus, backend_status
from spine_core.roles import Permission, can

#: Predictions whose Dice is computed on opening the page; more wait for a button.
AUTO_COMPUTE = 10
#: Problems listed one by one before "and N more".
SHOW_PROBLEMS = 20


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _target_name(target: str) -> str:
    return "Patient" if target == PATIENT else target


# --- backend and predictor ---------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner="Checking the model backend…")
def _status(backend_url: str, backend_token: str, device: str, models_dir: str) -> BackendStatus:
    del backend_url, backend_token, device, models_dir  # the cache key: the settings in force
    return backend_status(workspace().settings)


@st.cache_resource(show_spinner=False)
def _predictor(backend_url: str, backend_token: str, device: str, models_dir: str) -> Predictor:
    """One predictor per backend setting for the whole server (local models load once)."""
    from spine_core.inference.select import predictor_from_settings

    del backend_url, backend_token, device, models_dir  # the cache key
    return predictor_from_settings(workspace().settings)


def _settings_key(ws: Workspace) -> tuple[str, str, str, str]:
    s = ws.settings
    return s.backend_url, s.backend_token, s.device, str(s.models_dir or "")


def backend_line(ws: Workspace) -> None:
    status = _status(*_settings_key(ws))
    left, right = st.columns([6, 1], vertical_alignment="center")
    (left.success if status.ok else left.warning)(f"**Backend** · {status.summary}")
    if right.button("Check again", key="models_check_backend"):
        _status.clear()
        st.rerun()


# --- predict all -------------------------------------------------------------------------------


def _show_job(snap: JobSnapshot) -> None:
    who = f" (started by {snap.started_by}{', model ' + snap.model if snap.model else ''})"
    if snap.running:
        st.progress(snap.fraction, text=snap.summary() + who)
    elif snap.error:
        st.error(f"The last batch{who} could not run: {snap.error}")
    elif snap.failed or snap.stopped:
        st.warning(f"Last batch{who}: {snap.summary()}")
    else:
        st.success(f"Last batch{who}: {snap.summary()}")
    if snap.problems:
        with st.expander(f"{len(snap.problems)} studies failed", expanded=not snap.running):
            for line in snap.problems[:SHOW_PROBLEMS]:
                st.text(line)
            if len(snap.problems) > SHOW_PROBLEMS:
                st.caption(f"… and {len(snap.problems) - SHOW_PROBLEMS} more")


def _job_panel() -> None:
    ws = workspace()
    job = JOBS.current(ws.settings.database_url, ws.sessions)
    if job is None:
        return
    snap = job.snapshot()
    _show_job(snap)
    if snap.running:
        if st.button("Stop after the current study", key="models_stop"):
            job.cancel()
        st.session_state["models_job_seen_running"] = True
    elif snap.error and _may_run(ws):
        if st.button("Run this batch again (it resumes)", key="models_retry"):
            _retry(ws)
    elif st.session_state.pop("models_job_seen_running", False):
        st.rerun()  # the batch just ended: refresh the whole page (new predictions, metrics)


def _may_run(ws: Workspace) -> bool:
    user = current_user()
    return user is not None and can(user.role, Permission.run_predictions)


def _retry(ws: Workspace) -> None:
    """Start the failed batch again (e.g. its worker died), from any replica."""
    user = current_user()
    if user is None:
        return
    try:
        JOBS.retry(ws.settings.database_url, ws, _predictor(*_settings_key(ws)),
                   actor=user.username)
    except SpineError as exc:
        st.error(str(exc))
        return
    st.rerun()


_job_live = st.fragment(run_every=1.0)(_job_panel)
_job_still = st.fragment(_job_panel)


def predict_section(ws: Workspace, user: SignedInUser) -> None:
    st.subheader("Predict")
    job = JOBS.current(ws.settings.database_url, ws.sessions)
    running = job is not None and job.running
    (_job_live if running else _job_still)()
    if not can(user.role, Permission.run_predictions):
        st.caption("Adjudicators and administrators can run the models here (or `spine predict`).")
        return
    with unit_of_work(ws.sessions, readonly=True) as session:
        study_ids = catalogue.study_ids(session)
    if not study_ids:
        st.info("No study imported yet: import a dataset first (`spine import PATH`).")
        return
    replace = st.checkbox("Predict again the studies this model already predicted",
                          key="models_replace", disabled=running)
    label = f"Predict all {len(study_ids)} studies"
    if st.button(label, key="models_predict_all", type="primary", disabled=running):
        JOBS.submit(ws.settings.database_url, ws, _predictor(*_settings_key(ws)), study_ids,
                    actor=user.username, replace=replace)
        st.rerun()
    where = (" A `spine worker` process runs it." if ws.settings.external_worker else "")
    st.caption("Studies already predicted by the same model version are skipped (unless asked): "
               "a stopped batch resumes where it ended. The batch goes on if you leave this page."
               + where)


# --- metrics -------------------------------------------------------------------------------------


def version_picker(versions: Sequence[ModelVersionSummary]) -> ModelVersionSummary:
    by_id = {v.id: v for v in versions}
    chosen = st.selectbox(
        "Model version", list(by_id), key="models_version",
        format_func=lambda i: f"{by_id[i].label} · {by_id[i].n_predictions} studies predicted",
    )
    return by_id[chosen if chosen in by_id else versions[0].id]


def card_section(version: ModelVersionSummary, cls: ClassificationMetrics) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Studies predicted", cls.n_predictions)
    c2.metric("With final labels", cls.n_labelled)
    c3.metric("In the RSNA score", cls.n_scored, help="studies with C1–C7 and the patient labelled "
              "and predicted")
    last = version.last_prediction_at
    c4.metric("Last prediction", last.strftime("%d %b %H:%M") if last else "—",
              help=f"{last:%Y-%m-%d %H:%M} UTC" if last else None)
    intended = str((version.card or {}).get("intended_use") or "").strip()
    if intended:  # the card's first line (e.g. synthetic-only weights) never hides in the expander
        st.warning(f"**Model card:** {intended}", icon=":material/science:")
    with st.expander("Model card"):
        if version.card:
            st.json(version.card)
        else:
            st.caption("This model version has no card.")


def radiograph_section(ws: Workspace, version: ModelVersionSummary) -> None:
    """The films this version predicted: what it found and labelled, against the readers' final
    truth (:mod:`db.film_predictions`); nothing when it predicted no film."""
    with unit_of_work(ws.sessions, readonly=True) as session:
        films = film_prediction_metrics(session, version.id,
                                        union_min_iou=float(ws.settings.union_min_iou))
    if not films.rows:
        return
    st.subheader("Radiographs: vertebrae found and labelled against the readers' final truth")
    pooled = films.pooled
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Films predicted", len(films.rows),
              help=f"{len(films.scored)} with a final truth from their readers")
    c2.metric("Vertebrae found", _fmt(pooled.detection_rate),
              help=f"{pooled.found} of the readers' {pooled.n_truth} vertebrae have a predicted "
                   f"box of IoU ≥ {FOUND_MIN_IOU:g}")
    c3.metric("Labelling accuracy", _fmt(pooled.labelling_accuracy),
              help=f"{pooled.labelled_right} of the {pooled.found} found vertebrae labelled as "
                   "the readers did")
    c4.metric("Mean box IoU", _fmt(pooled.mean_iou), help="of the found vertebrae")
    if not films.scored:
        st.info("No predicted film has a final truth yet: readers label and submit the films "
                "(Annotate page); a disputed labelling waits for the committee.")
    rows = [{"Study": r.study_uid, "Model found": r.found,
             "Model's labels": r.predicted_labels or "—",
             "Readers' labels": r.truth_labels or "—",
             "Found": f"{r.score.found}/{r.score.n_truth}" if r.score else "—",
             "Labelled right": f"{r.score.labelled_right}/{r.score.found}" if r.score else "—",
             "Note": r.why} for r in films.rows]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_films")


def classification_section(cls: ClassificationMetrics) -> None:
    st.subheader("Fracture classification against the final labels")
    if cls.n_labelled == 0:
        st.info("No predicted study has final labels yet: the readers, the report or the committee "
                "settle them (Adjudication page).")
        return
    levels = [r for t, r in cls.roc.items() if t != PATIENT and not math.isnan(r.auc)]
    patient = cls.roc.get(PATIENT)
    c1, c2, c3 = st.columns(3)
    c1.metric("RSNA weighted log loss", _fmt(cls.log_loss),
              help=f"lower is better; pooled over all rows: {_fmt(cls.log_loss_pooled)}")
    c2.metric("Patient AUC", _fmt(patient.auc) if patient else "—")
    c3.metric("Mean level AUC", _fmt(sum(r.auc for r in levels) / len(levels)) if levels else "—")
    if cls.not_scored:
        with st.expander(f"{len(cls.not_scored)} labelled studies are not in the log loss"):
            for line in cls.not_scored[:SHOW_PROBLEMS]:
                st.text(line)
    curves = [r for r in cls.roc.values() if not math.isnan(r.auc)]
    if not curves:
        st.info("ROC curves need fractured and intact cases of a level; none has both yet.")
        return
    left, right = st.columns(2)
    figure = go.Figure()
    for r in curves:
        figure.add_trace(go.Scatter(x=r.fpr, y=r.tpr, mode="lines+markers", line_shape="hv",
                                    name=f"{_target_name(r.target)} (AUC {r.auc:.3f})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line={"dash": "dot", "color": "grey"}))
    figure.update_layout(xaxis_title="1 − specificity", yaxis_title="sensitivity",
                         xaxis_range=[0, 1], yaxis_range=[0, 1.02], title="ROC curves")
    left.plotly_chart(figure, key="models_roc")
    frame = pd.DataFrame([{"target": _target_name(r.target), "AUC": r.auc, "fractured": r.n_pos,
                           "intact": r.n_neg} for r in curves])
    bars = px.bar(frame, x="target", y="AUC", hover_data=["fractured", "intact"], range_y=[0, 1],
                  title="AUC per level")
    right.plotly_chart(bars, key="models_auc")


@st.fragment
def threshold_section(studies: list[StudyOutcome], targets: list[str]) -> None:
    st.subheader("Sensitivity and specificity at a threshold")
    threshold = st.slider("Call a level fractured when the model's probability is at least",
                          0.0, 1.0, 0.5, 0.01, key="models_threshold")
    rows = []
    for target, c in operating_points(studies, threshold, targets).items():
        rows.append({"Target": _target_name(target),
                     "Fractured": c.tp + c.fn, "Intact": c.tn + c.fp,
                     "TP": c.tp, "FP": c.fp, "TN": c.tn, "FN": c.fn,
                     "Sensitivity": _fmt(rate(lambda x: x.sensitivity, c)),
                     "Specificity": _fmt(rate(lambda x: x.specificity, c))})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_operating_points")


def _segmentation(ws: Workspace, studies: list[StudyOutcome]) -> SegmentationMetrics:
    ids = [s.prediction_id for s in studies if s.mask_path]
    seg = segmentation_metrics(ws, ids, compute=False)
    if not seg.pending:
        return seg
    if len(seg.pending) > AUTO_COMPUTE and not st.button(
            f"Compute Dice and identification for {len(seg.pending)} more predictions",
            key="models_compute_seg"):
        st.caption(f"{len(seg.pending)} predictions not measured yet (each reads two masks; the "
                   "results are kept, so this is done once).")
        return seg
    bar = st.progress(0.0, text="Reading the predicted and the dataset masks…")
    seg = segmentation_metrics(ws, ids, progress=lambda f, text: bar.progress(f, text=text))
    bar.empty()
    return seg


def segmentation_section(ws: Workspace, studies: list[StudyOutcome]) -> SegmentationMetrics:
    st.subheader("Vertebra segmentation against the dataset masks")
    seg = _segmentation(ws, studies)
    if seg.problems:
        st.error(f"{len(seg.problems)} predictions could not be measured: "
                 + "; ".join(seg.problems[:5]) + (" …" if len(seg.problems) > 5 else ""))
    if not seg.studies:
        st.info("No prediction with a mask has a dataset mask or centroids to compare with."
                if not seg.pending else "Not measured yet.")
        return seg
    c1, c2, c3 = st.columns(3)
    c1.metric("Mean Dice", _fmt(seg.mean_dice), help=f"over {len(seg.studies)} studies")
    c2.metric("Identification rate", _fmt(seg.identification_rate),
              help=f"{seg.hits} of {seg.n_true} vertebrae within 20 mm and closest (VerSe)")
    c3.metric("Mean centroid distance (mm)", _fmt(seg.mean_distance_mm, 1))
    frame = pd.DataFrame([{"level": d.level, "Dice": d.mean, "studies": d.n_studies}
                          for d in seg.dice_by_level])
    if not frame.empty:
        st.plotly_chart(px.bar(frame, x="level", y="Dice", hover_data=["studies"], range_y=[0, 1],
                               title="Mean Dice per level"), key="models_dice")
    if seg.not_applicable:
        with st.expander(f"{len(seg.not_applicable)} predictions have nothing to compare"):
            for line in seg.not_applicable[:SHOW_PROBLEMS]:
                st.text(line)
    return seg


def level_table(cls: ClassificationMetrics, seg: SegmentationMetrics) -> None:
    st.subheader("Per level")
    dice = {d.level: d for d in seg.dice_by_level}
    found = seg.identification_by_level()
    names = sorted({*(t for t in cls.roc if t != PATIENT), *dice, *found}, key=craniocaudal_key)
    rows = []
    for name in [*names, *([PATIENT] if PATIENT in cls.roc else [])]:
        r = cls.roc.get(name)
        hits = found.get(name)
        rows.append({
            "Level": _target_name(name),
            "Fractured": r.n_pos if r else 0, "Intact": r.n_neg if r else 0,
            "AUC": _fmt(r.auc) if r else "—",
            "Dice": _fmt(dice[name].mean) if name in dice else "—",
            "Identified": f"{hits[0]}/{hits[1]}" if hits else "—",
        })
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_levels")


def main() -> None:
    user = require_permission(Permission.see_models)
    st.title("Models")
    ws = workspace()
    backend_line(ws)
    try:
        predict_section(ws, user)
    except SpineError as exc:  # e.g. a batch already running, a backend URL we cannot use
        st.error(str(exc))
    training_section()
    st.divider()
    with unit_of_work(ws.sessions, readonly=True) as session:
        versions = model_versions(session)
        if not versions:
            st.info("No model has predicted any study yet. Run the models above or with "
                    "`spine predict`; their results against the final labels appear here.")
            return
        version = version_picker(versions)
        studies = gather(session, version.id)
    cls = classification_metrics(studies)
    card_section(version, cls)
    radiograph_section(ws, version)
    classification_section(cls)
    targets = [t for t, r in cls.roc.items() if r.n_pos + r.n_neg > 0]
    if targets:
        threshold_section(studies, targets)
    seg = segmentation_section(ws, studies)
    level_table(cls, seg)


with error_boundary("The models page"):
    main()
