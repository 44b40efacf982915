"""Dispute dashboard: open and closed disputes by level and kind, time to decision, and the
readers' agreement over time (aggregates only; the numbers come from ``db.dispute_stats``).

One period control filters every chart and number on the page; "studies read by at least two
readers" is :func:`db.dispute_stats.studies_read_by_two`, the same count the Agreement page shows.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pandas as pd
import plotly.express as px
import streamlit as st

from db import dispute_stats as stats
from pages.parts.common import error_boundary, require_permission, workspace
from spine_core import words
from spine_core.adjudication import craniocaudal_key
from spine_core.roles import Permission

#: The period control: its words and how far back it reaches (None: everything).
PERIODS: dict[str, dt.timedelta | None] = {
    "All time": None,
    "Last 7 days": dt.timedelta(days=7),
    "Last 30 days": dt.timedelta(days=30),
    "Last 12 months": dt.timedelta(days=365),
}
GROUPING = {"week": "Per week", "month": "Per month", "day": "Per day"}


def _counts(rows: list[stats.CountRow], period: str) -> None:
    st.subheader("Disputes by level and kind")
    if not rows:
        st.info(f"No dispute was opened in this period ({period.lower()}).")
        return
    frame = pd.DataFrame([{"Level": r.level, "Kind": words.kind_words(r.kind),
                           "Status": words.status_words(r.status), "Disputes": r.count}
                          for r in rows])
    order = sorted(frame["Level"].unique(), key=craniocaudal_key)
    figure = px.bar(frame, x="Level", y="Disputes", color="Kind", facet_col="Status",
                    category_orders={"Level": order, "Status": ["Open", "Decided"]},
                    barmode="stack",
                    title="Open and decided disputes at each level, by kind of disagreement")
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1] + " disputes"))
    st.plotly_chart(figure, key="dashboard_counts")
    st.caption("Each bar counts the disputes opened in the period at one level; its colours are "
               "the kinds of disagreement.")


def _times(rows: list[stats.DecisionTime], period: str) -> None:
    st.subheader("Time to decision")
    live = [r for r in rows if not r.superseded]
    if not live:
        st.info(f"No decision was made in this period ({period.lower()}).")
        return
    hours = [r.hours for r in live]
    c1, c2, c3 = st.columns(3)
    c1.metric("Decisions in force", len(live))
    c2.metric("Median hours to a decision", f"{statistics.median(hours):.1f}")
    c3.metric("Decisions after a reopening", sum(1 for r in rows if r.round > 1))
    frame = pd.DataFrame([{"Kind": words.kind_words(r.kind), "Hours": r.hours,
                           "Policy": words.policy_words(r.policy), "Level": r.level}
                          for r in live])
    st.plotly_chart(px.box(frame, x="Kind", y="Hours", color="Policy", points="all",
                           hover_data=["Level"],
                           title="Hours from opening a dispute to its decision, by kind"),
                    key="dashboard_times")


def _agreement(points: list[stats.AgreementPoint], period: str) -> None:
    st.subheader("Readers' agreement over time")
    grouping = st.radio("Group the agreement chart", list(GROUPING), horizontal=True,
                        format_func=GROUPING.__getitem__, key="dashboard_period")
    if not points:
        st.info(f"No study read by at least two readers was finished in this period "
                f"({period.lower()}).")
        return
    frame = pd.DataFrame([
        {"period": p.period_start, "measure": name, "value": value, "studies": p.studies}
        for p in points
        for name, value in (("Percent agreement", p.percent_agreement),
                            ("Krippendorff's alpha", p.alpha))
        if not math.isnan(value)
    ])
    if frame.empty:
        st.info("Agreement is undefined so far: every reader made the same call on every level.")
        return
    figure = px.line(frame, x="period", y="value", color="measure", markers=True,
                     hover_data=["studies"], range_y=[min(0.0, float(frame["value"].min())), 1.0],
                     title="How often the readers agree, for the studies finished in each "
                           f"{grouping}")
    figure.update_xaxes(title=f"The {grouping} of the last reader's submission")
    figure.update_yaxes(title="Agreement (1 is perfect)")
    st.plotly_chart(figure, key="dashboard_agreement")


def main() -> None:
    require_permission(Permission.dispute_dashboard)
    st.title("Dispute dashboard")
    period = st.radio("Period", list(PERIODS), horizontal=True, key="dashboard_since")
    st.caption("The period applies to every number and chart on this page: disputes opened, "
               "decisions made and studies finished in it.")
    span = PERIODS[period]
    since = dt.datetime.now(dt.UTC) - span if span is not None else None
    grouping = str(st.session_state.get("dashboard_period", "week"))
    with workspace().sessions() as session:
        counts = stats.dispute_counts(session, since=since)
        times = stats.decision_times(session, since=since)
        points = stats.agreement_over_time(session, period=grouping, since=since)
        read_by_two = [s for s in stats.studies_read_by_two(session).values()
                       if since is None or s.finished_at >= since]
    c1, c2, c3 = st.columns(3)
    c1.metric("Open disputes", sum(r.count for r in counts if r.status == "open"))
    c2.metric("Decided disputes", sum(r.count for r in counts if r.status == "decided"))
    c3.metric("Studies read by at least two readers", len(read_by_two),
              help="Studies that two or more readers submitted; the Agreement page counts the "
                   "same studies")
    _counts(counts, period)
    _times(times, period)
    _agreement(points, period)


with error_boundary("The dispute dashboard"):
    main()
