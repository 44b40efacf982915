"""Dispute dashboard: open and closed disputes by level and kind, time to decision, and the
readers' agreement over time (aggregates only; the numbers come from ``db.dispute_stats``)."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import plotly.express as px
import streamlit as st

from db import dispute_stats as stats
from pages.parts.common import error_boundary, require_permission, workspace
from spine_core.adjudication import craniocaudal_key
from spine_core.roles import Permission

KIND_LABELS = {
    "readers_vs_report": "Readers vs report",
    "readers_disagree": "Readers disagree",
    "model_vs_final": "Model vs final label",
}


def _counts(rows: list[stats.CountRow]) -> None:
    st.subheader("Disputes by level and kind")
    if not rows:
        st.info("No disputes yet.")
        return
    frame = pd.DataFrame([{"level": r.level, "kind": KIND_LABELS.get(r.kind, r.kind),
                           "status": r.status, "disputes": r.count} for r in rows])
    order = sorted(frame["level"].unique(), key=craniocaudal_key)
    figure = px.bar(frame, x="level", y="disputes", color="kind", facet_col="status",
                    category_orders={"level": order, "status": ["open", "decided"]},
                    barmode="stack")
    st.plotly_chart(figure, key="dashboard_counts")


def _times(rows: list[stats.DecisionTime]) -> None:
    st.subheader("Time to decision")
    live = [r for r in rows if not r.superseded]
    if not live:
        st.info("No decision yet.")
        return
    hours = [r.hours for r in live]
    c1, c2, c3 = st.columns(3)
    c1.metric("Decisions in force", len(live))
    c2.metric("Median hours", f"{statistics.median(hours):.1f}")
    c3.metric("Reopened rounds", sum(1 for r in rows if r.round > 1))
    frame = pd.DataFrame([{"kind": KIND_LABELS.get(r.kind, r.kind), "hours": r.hours,
                           "policy": r.policy, "level": r.level} for r in live])
    st.plotly_chart(px.box(frame, x="kind", y="hours", color="policy", points="all",
                           hover_data=["level"]), key="dashboard_times")


def _agreement(points: list[stats.AgreementPoint], period: str) -> None:
    st.subheader("Readers' agreement over time")
    if not points:
        st.info("Agreement needs studies submitted by at least two readers.")
        return
    frame = pd.DataFrame([
        {"period": p.period_start, "measure": name, "value": value, "studies": p.studies}
        for p in points
        for name, value in (("percent agreement", p.percent_agreement),
                            ("Krippendorff's alpha", p.alpha))
        if not math.isnan(value)
    ])
    if frame.empty:
        st.info("Agreement is undefined so far (every call was the same).")
        return
    figure = px.line(frame, x="period", y="value", color="measure", markers=True,
                     hover_data=["studies"], range_y=[min(0.0, float(frame["value"].min())), 1.0])
    figure.update_xaxes(title=f"{period} of the last submission")
    st.plotly_chart(figure, key="dashboard_agreement")


def main() -> None:
    require_permission(Permission.dispute_dashboard)
    st.title("Dispute dashboard")
    period = st.radio("Agreement per", ["week", "month", "day"], horizontal=True,
                      key="dashboard_period")
    with workspace().sessions() as session:
        counts = stats.dispute_counts(session)
        times = stats.decision_times(session)
        points = stats.agreement_over_time(session, period=period)
    c1, c2 = st.columns(2)
    c1.metric("Open disputes", sum(r.count for r in counts if r.status == "open"))
    c2.metric("Decided disputes", sum(r.count for r in counts if r.status == "decided"))
    _counts(counts)
    _times(times)
    _agreement(points, period)


with error_boundary("The dispute dashboard"):
    main()
