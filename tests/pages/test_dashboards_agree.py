"""The dispute dashboard and the Agreement page count the same "studies read by at least two
readers" on the demo data (``spine demo``'s dataset with its readers' work, imported), and show
words, not codes; the dashboard's period control filters every chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db import dispute_stats as stats
from db.disputes import refresh_all
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from pages.parts.common import workspace
from spine_core.config import Settings
from spine_core.phantom.demo import write_demo_dataset
from tests.app_helpers import demo_workspace, signed_in

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 90
METRIC = "Studies read by at least two readers"


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("dashboards")
    ws = demo_workspace(root / "var")  # the demo accounts (reader1..3) the readers' work names
    write_demo_dataset(root / "demo", region="cervical", layout="rsna", n_studies=4, seed=2022,
                       shape=(48, 64, 64), workers=1)
    report = import_path(root / "demo", Settings(data_dir=root / "var", workers=1),
                         actor="test", progress=False)
    assert report.studies_added == 4, report.problems
    with unit_of_work(ws.sessions) as s:
        refresh_all(s, ws.settings, actor="test")
    return ws


@pytest.fixture(autouse=True)
def pages_on_demo(demo_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINE_DATA_DIR", str(demo_ws.settings.data_dir))
    monkeypatch.setenv("SPINE_WORKERS", "1")
    workspace.clear()


def _page(ws: Workspace, name: str, user: str = "admin") -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=TIMEOUT)
    at.session_state["user"] = signed_in(ws, user)
    return at.run()


def _metric(at: AppTest, label: str) -> int:
    return int(next(mt.value for mt in at.metric if mt.label == label))


def _all_text(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("title", "subheader", "markdown", "caption", "info",
                                       "warning", "error") for e in getattr(at, kind)]
    for chart in at.get("plotly_chart"):
        parts.append(chart.proto.spec)
    return "\n".join(parts)


def test_the_dashboard_and_the_agreement_page_count_the_same_studies(demo_ws: Workspace) -> None:
    with unit_of_work(demo_ws.sessions, readonly=True) as s:
        expected = len(stats.studies_read_by_two(s))
        points = stats.agreement_over_time(s, period="week")
    assert expected > 0, "the demo data has studies read by several readers"
    assert sum(p.studies for p in points) == expected

    dash = _page(demo_ws, "dashboard.py")
    assert not dash.exception, dash.exception
    agreement = _page(demo_ws, "agreement.py")
    assert not agreement.exception, agreement.exception
    assert _metric(dash, METRIC) == _metric(agreement, METRIC) == expected
    levels = next(d for d in agreement.dataframe if "studies (≥2 readers)" in d.value.columns)
    assert int(levels.value["studies (≥2 readers)"].max()) == expected
    assert "None" not in levels.value.astype(str).to_numpy().ravel()
    # the dashboard's agreement chart has a point, not "needs two readers"
    assert len(dash.get("plotly_chart")) >= 1
    assert not any("at least two readers was finished" in i.value for i in dash.info)


def test_the_dashboard_speaks_words_and_its_period_filters_every_chart(
        demo_ws: Workspace) -> None:
    dash = _page(demo_ws, "dashboard.py")
    text = _all_text(dash)
    for code in ("status=open", "readers_vs_report", "readers_disagree", "not_fractured"):
        assert code not in text, code
    charts = len(dash.get("plotly_chart"))
    assert charts >= 2  # disputes by level, agreement over time
    # the data were made just now: a period in the future-proof past keeps them all; a zero-length
    # window is not offered, so check that "Last 7 days" keeps every chart and metric equal
    week = dash.radio(key="dashboard_since").set_value("Last 7 days").run()
    assert len(week.get("plotly_chart")) == charts
    assert _metric(week, METRIC) == _metric(dash, METRIC)
    assert any("applies to every number and chart" in c.value for c in week.caption)


def test_the_adjudication_page_shows_kinds_and_calls_in_words(demo_ws: Workspace) -> None:
    at = _page(demo_ws, "adjudicate.py", "adjudicator1")
    assert not at.exception, at.exception
    shown_text = " ".join(at.selectbox(key="adjudicate_dispute").options)  # as the browser shows
    assert "readers_disagree" not in shown_text and "readers_vs_report" not in shown_text
    assert any(word in shown_text for word in ("Readers disagree", "Readers vs report"))
    kinds = at.multiselect(key="adjudicate_kinds")
    assert "Readers disagree" in kinds.options and "readers_disagree" not in kinds.options
    votes = at.radio(key="vote_choice").options
    assert "Not fractured" in votes and "not_fractured" not in votes
