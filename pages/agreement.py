"""Agreement between readers (adjudicators and admins): per-level Fleiss' kappa and
Krippendorff's alpha, each reader's sensitivity/specificity against the final labels, each box's
IoU with its union box, and a consensus view of one study — every reader's boxes in the reader's
colour and the union ground truth in its own, as Figure 1 of the RSNA 2022 dataset paper.

Thin: the data come from ``db.annotations.agreement_inputs`` (blinded, audited store), the
statistics from ``spine_core.consensus``, the overlays from ``spine_core.annotation_geometry``.
"""

from __future__ import annotations

import html
import math
import warnings

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from db import annotations as ann
from db import models as m
from db.dispute_stats import studies_read_by_two
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.film_agreement import film_agreement_panel
from spine_core import annotation_geometry as ag
from spine_core.consensus import level_agreement, member_ious, reader_performance, union_boxes
from spine_core.metrics import UndefinedMetricWarning
from spine_core.render import BONE, ZoomBox, render_slice
from spine_core.roles import Permission


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


UNDEFINED = "undefined"


def _shown(df: pd.DataFrame, formats: dict[str, str]) -> pd.DataFrame:
    """``df`` with the numbers of ``formats``' columns as text and undefined ones (None, NaN) as
    the word the captions use: "undefined", never "None"."""
    out = df.copy()
    for column, fmt in formats.items():
        out[column] = [UNDEFINED if _nan(v) is None else format(v, fmt) for v in df[column]]
    return out


def _inputs(user: SignedInUser, submitted_only: bool, unmarked: bool) -> ann.AgreementInputs:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        if me is None:
            return ann.AgreementInputs({}, {}, {}, {})
        return ann.agreement_inputs(session, me, submitted_only=submitted_only,
                                    unmarked_as_not_fractured=unmarked)


# --- per level -----------------------------------------------------------------------------------


def _levels(data: ann.AgreementInputs, unsure_as_missing: bool) -> None:
    st.subheader("Agreement per level")
    stats = level_agreement(data.calls, unsure_as_missing=unsure_as_missing)
    if not stats:
        st.info("No level calls yet.")
        return
    df = pd.DataFrame([{
        "level": s.level, "studies (≥2 readers)": s.n_subjects, "readers": s.n_readers,
        "Fleiss' kappa": _nan(s.fleiss_kappa), "Krippendorff's alpha": _nan(s.alpha),
        "agreement %": None if _nan(s.percent_agreement) is None else 100 * s.percent_agreement,
        "kappa on studies": s.n_kappa_subjects,
    } for s in stats.values()])
    fig = go.Figure()
    fig.add_bar(x=df["level"], y=df["Fleiss' kappa"], name="Fleiss' kappa")
    fig.add_bar(x=df["level"], y=df["Krippendorff's alpha"], name="Krippendorff's alpha")
    fig.add_scatter(x=df["level"], y=df["agreement %"] / 100, name="raw agreement",
                    mode="markers+lines", yaxis="y")
    fig.update_layout(barmode="group", yaxis={"title": "coefficient", "range": [-1, 1.05]},
                      height=360, margin={"t": 30, "b": 30}, legend={"orientation": "h"})
    st.plotly_chart(fig, width="stretch")
    st.dataframe(_shown(df, {"Fleiss' kappa": ".2f", "Krippendorff's alpha": ".2f",
                             "agreement %": ".0f"}), hide_index=True, width="stretch",
                 key="agreement_levels")
    st.caption("A value reads 'undefined' when there were fewer than two readers on any study, "
               "or every call was the same (chance agreement is then 1, and kappa 0/0). Kappa "
               "uses the studies read by the most readers; alpha accepts missing ratings.")


# --- per reader ----------------------------------------------------------------------------------


def _readers(data: ann.AgreementInputs) -> None:
    st.subheader("Readers against the final labels")
    if not any(data.final.values()):
        st.info("No final labels yet (reports, agreed readers or committee decisions).")
        return
    perf = reader_performance(data.calls, data.final)
    if not perf:
        st.info("No reader calls on levels with a final label.")
        return
    with warnings.catch_warnings():  # undefined sensitivity (no positives) shows as empty
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        rows = [{
            "reader": str(p.reader), "sensitivity": _nan(p.sensitivity),
            "specificity": _nan(p.specificity), "TP": p.confusion.tp, "FN": p.confusion.fn,
            "TN": p.confusion.tn, "FP": p.confusion.fp, "unsure": p.unsure,
        } for p in perf.values()]
    df = pd.DataFrame(rows)
    long = df.melt(id_vars="reader", value_vars=["sensitivity", "specificity"],
                   var_name="measure", value_name="value")
    fig = px.bar(long, x="reader", y="value", color="measure", barmode="group",
                 range_y=[0, 1.05], height=320)
    fig.update_layout(margin={"t": 30, "b": 30}, legend={"orientation": "h"})
    st.plotly_chart(fig, width="stretch")
    st.dataframe(_shown(df, {"sensitivity": ".2f", "specificity": ".2f"}), hide_index=True,
                 width="stretch", key="agreement_readers")
    st.caption("Per level of every study with a final label; unsure calls are counted apart and "
               "left out of sensitivity and specificity ('undefined' when a reader met no "
               "fractured, or no intact, level).")


# --- boxes ---------------------------------------------------------------------------------------


def _box_ious(data: ann.AgreementInputs, min_iou: float) -> pd.DataFrame:
    rows = []
    for uid, boxes in data.boxes.items():
        for box, union, value in member_ious(union_boxes(boxes, min_iou=min_iou)):
            rows.append({"study": uid, "reader": str(box.reader), "box": box.id,
                         "slice": box.slice_index, "level": box.level or "",
                         "readers in union": union.n_readers, "IoU with union": value})
    return pd.DataFrame(rows)


def _boxes(data: ann.AgreementInputs, min_iou: float) -> None:
    st.subheader("Boxes against their union box")
    df = _box_ious(data, min_iou)
    if df.empty:
        st.info("No boxes yet.")
        return
    shared = df[df["readers in union"] > 1]
    if shared.empty:
        st.info("No box overlaps another reader's yet: every box is its own union.")
    else:
        fig = px.box(shared, x="reader", y="IoU with union", points="all", color="reader",
                     range_y=[0, 1.02], height=320,
                     color_discrete_map={r: _hex(c) for r, c in
                                         ag.reader_colours(df["reader"].unique()).items()})
        fig.update_layout(margin={"t": 30, "b": 30}, showlegend=False)
        st.plotly_chart(fig, width="stretch")
    summary = df.groupby("reader").agg(
        boxes=("box", "count"),
        alone=("readers in union", lambda s: int((s == 1).sum())),
        median_iou=("IoU with union", lambda s: s[df.loc[s.index, "readers in union"] > 1].median()),
    ).reset_index()
    st.dataframe(summary.rename(columns={"alone": "found by no other reader",
                                         "median_iou": "median IoU (shared boxes)"}),
                 hide_index=True, width="stretch")
    with st.expander("Every box"):
        st.dataframe(df, hide_index=True, width="stretch")


# --- consensus view (Figure 1) -------------------------------------------------------------------


CONSENSUS_PX = 640


def _crop(study, overlays):  # type: ignore[no-untyped-def]
    """A square crop of the axial plane around the slice's boxes, with as much spare around them
    as they are large (at least 24 display pixels), inside the image."""
    geo = study.geometry
    h, w = geo.plane_shape(geo.acquisition_plane)
    r0, c0 = min(o.row0 for o in overlays), min(o.col0 for o in overlays)
    r1, c1 = max(o.row1 for o in overlays), max(o.col1 for o in overlays)
    side = max(r1 - r0, c1 - c0) + 2 * max(24.0, max(r1 - r0, c1 - c0))
    rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
    top = int(max(0, min(rc - side / 2, h - side)))
    left = int(max(0, min(cc - side / 2, w - side)))
    return ZoomBox(top, left, top + int(side), left + int(side)).clipped((h, w))


def _consensus(data: ann.AgreementInputs, min_iou: float) -> None:
    st.subheader("Consensus view")
    with_boxes = sorted(uid for uid, b in data.boxes.items() if b)
    if not with_boxes:
        st.info("No study has readers' boxes yet.")
        return
    uid = st.selectbox("Study", with_boxes, key="agreement_study")
    boxes = data.boxes[uid]
    unions = union_boxes(boxes, min_iou=min_iou)
    slices = sorted({b.slice_index for b in boxes})
    from pages.parts.viewer_parts import load_study

    with unit_of_work(workspace().sessions, readonly=True) as session:
        series = ann.primary_series(session, data.study_ids[uid])
        numbers = [int(n) for n in series.instance_numbers]
    study = load_study(data.study_ids[uid], with_mask=False)
    volume, geo = study.image, study.geometry
    label = {k: f"instance {numbers[k] if numbers else k + 1} ({sum(b.slice_index == k for b in boxes)} boxes)"
             for k in slices}
    if len(slices) > 1:
        stored = st.select_slider("Slice with boxes", options=slices, key=f"agreement_slice_{uid}",
                                  format_func=label.__getitem__)
    else:
        stored = slices[0]
        st.caption(f"The only slice with boxes: {label[stored]}")
    colours = ag.reader_colours(b.reader for b in boxes)
    crop = _crop(study, ag.consensus_overlays(geo, boxes, unions, stored, colours))
    scale = max(1, int(CONSENSUS_PX // max(crop.shape)))
    overlays = ag.consensus_overlays(geo, boxes, unions, stored, colours, reader_labels=False,
                                     union_margin=4 / scale, thickness=(2, 3))
    rgb = render_slice(volume, None, geo.acquisition_plane, ag.display_index_of(geo, stored),
                       BONE, overlay=None, zoom=crop, geometry=geo)
    rgb = ag.draw_overlays(rgb, overlays, scale=scale, origin=(crop.row0, crop.col0))
    legend = [f"<span style='border:3px solid {_hex(c)};padding:0 6px;margin-right:8px'>"
              f"{html.escape(r)}</span>" for r, c in colours.items()]
    legend.append(f"<span style='border:3px solid {_hex(ag.UNION_COLOUR)};padding:0 6px'>"
                  "union (ground truth)</span>")
    st.markdown("".join(legend), unsafe_allow_html=True)
    left, right = st.columns([3, 2])
    instance = numbers[stored] if numbers else stored + 1
    left.image(rgb, width=min(CONSENSUS_PX, rgb.shape[1]), caption=f"{uid} · instance {instance}")
    here = [u for u in unions if u.slice_index == stored]
    right.dataframe(pd.DataFrame([{
        "union": i + 1, "readers": ", ".join(map(str, u.readers)), "level": u.level or "mixed",
        "x": u.x, "y": u.y, "width": u.width, "height": u.height,
        "member IoUs": ", ".join(f"{v:.2f}" for v in u.member_ious()),
    } for i, u in enumerate(here)]), hide_index=True, width="stretch")


def _grades(user: SignedInUser) -> None:
    """Weighted kappa of Genant grades for every pair of readers (the dataset counts as one)."""
    from db import grades as gr
    from db import models as m

    st.subheader("Genant grades: agreement between readers")
    with workspace().sessions() as session:
        me = session.get(m.User, user.id)
        pairs = gr.grade_agreement(session, me) if me is not None else []
    if not pairs:
        st.info("No two readers graded the same vertebrae yet (Genant grades are read on VerSe and "
                "CTSpine1K studies; the dataset's own grades count as a reader).")
        return
    st.caption("Cohen's weighted kappa over the vertebrae both graded (1: perfect, 0: chance); "
               "quadratic weights count a two-grade disagreement four times a one-grade one.")
    st.dataframe(_shown(pd.DataFrame([{"reader A": p.reader_a, "reader B": p.reader_b,
                                       "vertebrae": p.n, "kappa (linear)": p.kappa_linear,
                                       "kappa (quadratic)": p.kappa_quadratic} for p in pairs]),
                        {"kappa (linear)": ".2f", "kappa (quadratic)": ".2f"}),
                 hide_index=True, key="agreement_grade_pairs")
    chosen = st.selectbox("Pair", range(len(pairs)), key="agreement_grade_pair",
                          format_func=lambda i: f"{pairs[i].reader_a} / {pairs[i].reader_b}")
    pair = pairs[chosen]
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Grade confusion** (rows: {pair.reader_a}, columns: {pair.reader_b})")
        st.dataframe(pd.DataFrame(pair.confusion, index=[f"{pair.reader_a} {g}" for g in range(4)],
                                  columns=[f"{pair.reader_b} {g}" for g in range(4)]),
                     key="agreement_grade_confusion")
    with right:
        st.markdown("**Per vertebra** (quadratic kappa)")
        st.dataframe(_shown(pd.DataFrame([{"level": lvl, "vertebrae": n, "kappa": k}
                                          for lvl, (n, k) in pair.per_level.items()],
                                         columns=["level", "vertebrae", "kappa"]),
                            {"kappa": ".2f"}), hide_index=True, key="agreement_grade_levels")


def main() -> None:
    user = require_permission(Permission.see_all_readers)
    st.title("Agreement")
    settings = workspace().settings
    c1, c2, c3, c4 = st.columns(4)
    submitted_only = c1.toggle("Submitted work only", value=True, key="agreement_submitted")
    unmarked = c2.toggle("Unmarked = not fractured", value=True, key="agreement_unmarked",
                         help="A reader who submitted without marking a level is taken to call "
                              "it not fractured (the adjudication rule)")
    unsure_missing = c3.toggle("Unsure = no rating", value=False, key="agreement_unsure")
    min_iou = c4.slider("Union min IoU", 0.0, 1.0, float(settings.union_min_iou), 0.05,
                        key="agreement_min_iou",
                        help=f"Exports use the setting SPINE_UNION_MIN_IOU = "
                             f"{settings.union_min_iou:g}; 0 merges any overlap")
    data = _inputs(user, submitted_only, unmarked)
    if not data.calls and not data.boxes:
        st.info("No reader has " + ("submitted " if submitted_only else "") + "work yet.")
        _grades(user)
        return
    with unit_of_work(workspace().sessions, readonly=True) as session:
        read_by_two = len(studies_read_by_two(session))
    c1, c2 = st.columns(2)
    c1.metric("Studies with readers' work", len(data.calls))
    c2.metric("Studies read by at least two readers", read_by_two,
              help="Studies that two or more readers submitted; the dispute dashboard counts the "
                   "same studies")
    tabs = st.tabs(["Levels", "Readers", "Boxes", "Consensus view", "Genant grades", "Radiographs"])
    with tabs[5]:
        film_agreement_panel(user)
    with tabs[4]:
        _grades(user)
    with tabs[0]:
        _levels(data, unsure_missing)
    with tabs[1]:
        _readers(data)
    with tabs[2]:
        _boxes(data, min_iou)
    with tabs[3]:
        _consensus(data, min_iou)


with error_boundary("The agreement page"):
    main()
