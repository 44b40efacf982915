"""Committee, dashboard and audit pages through Streamlit's AppTest, on a real imported DICOM
study in real SQLite and PostgreSQL databases.

The study: a 6-slice CT written as DICOM and imported; two readers box C2 on one slice (boxes
overlap: one union); the report says C2 is intact, so C2 is a readers-vs-report dispute.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db import annotations, box_events
from db import disputes as store
from db import models as m
from db.importer import import_path
from db.reports import set_report
from db.session import unit_of_work
from db.workspace import Workspace, open_workspace
from pages.parts.common import SignedInUser, workspace
from spine_core.colours import UNION_COLOUR
from spine_core.config import Settings
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume
from tests.app_helpers import workstation_view

ROOT = Path(__file__).resolve().parents[2]
STUDY_UID = uid_from_seed("adjudicate-page-study")
TIMEOUT = 60


@dataclass
class Scene:
    ws: Workspace
    users: dict[str, SignedInUser]
    study_id: int
    dispute_id: int


def _write_study(folder: Path) -> None:
    array = np.full((6, 48, 48), -1000, dtype=np.int16)
    array[:, 12:36, 12:36] = 700
    volume = Volume(array, ct_affine(array.shape, (2.0, 0.8, 0.8)))
    write_series(volume, folder / "case", SeriesInfo(STUDY_UID, uid_from_seed(STUDY_UID, "s")))


@pytest.fixture
def scene(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    settings = Settings(data_dir=tmp_path / "var", db_url=db_url, workers=1,
                        adjudication_policy="committee", quorum=2)
    _write_study(tmp_path / "dicom")
    report = import_path(tmp_path / "dicom", settings, actor="test", progress=False)
    assert report.studies_added == 1, report.problems
    ws = open_workspace(settings)
    with unit_of_work(ws.sessions) as s:
        for name, role, chair in [("admin", "admin", False), ("r1", "annotator", False),
                                  ("r2", "annotator", False), ("adj1", "adjudicator", False),
                                  ("chair", "adjudicator", True)]:
            s.add(m.User(username=name, display_name=name, role=role, is_chair=chair,
                         password_hash="!"))
        s.flush()
        users = {u.username: SignedInUser(u.id, u.username, u.display_name, u.role, u.is_chair)
                 for u in s.scalars(select(m.User))}
        study = s.scalars(select(m.Study).where(m.Study.study_uid == STUDY_UID)).one()
        admin = s.get(m.User, users["admin"].id)
        set_report(s, users["admin"], study.id, {"C2": False}, "No acute fracture.", "RIS")
        annotations.assign(s, admin, study.id, [users["r1"].id, users["r2"].id])
        for reader, x in (("r1", 14.0), ("r2", 20.0)):
            actor = s.get(m.User, users[reader].id)
            box_events.save_box(s, actor, study.id, annotations.BoxInput(2, x, 14.0, 12.0, 10.0,
                                                                            level="C2"))
            annotations.submit(s, actor, study.id)
        store.refresh_disputes(s, study.id, settings)
        dispute_id = s.scalars(select(m.Dispute.id)).one()
        study_id = study.id
    monkeypatch.setenv("SPINE_DB_URL", db_url)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SPINE_QUORUM", "2")
    workspace.clear()
    yield Scene(ws, users, study_id, dispute_id)
    workspace.clear()


def page(name: str, user: SignedInUser) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=TIMEOUT)
    at.session_state["user"] = user
    return at.run()


def button(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type
    return next(b for b in at.button if b.label == label)


def votes(scene: Scene) -> int:
    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        return int(s.scalar(select(func.count(m.Vote.id))) or 0)


def test_committee_votes_decides_and_reopens_through_the_page(scene: Scene) -> None:
    at = page("adjudicate.py", scene.users["adj1"])
    assert not at.exception, at.exception
    assert at.selectbox(key="adjudicate_dispute").value == scene.dispute_id
    assert "readers vs report" in at.selectbox(key="adjudicate_dispute").format_func(
        scene.dispute_id).lower()
    # the study in the workstation, opened at the boxed slice, zoomed to the boxes, both readers'
    # boxes labelled large and their union
    view = workstation_view(at)
    assert view["cursor"][0] == 2 and view["layout"] == "single" and view["large_labels"]
    shown = {(b["kind"], b["reader"], b["x0"]) for b in view["boxes"]}
    assert shown == {("union", "union", 14.0), ("other reader", "r1", 14.0),
                     ("other reader", "r2", 20.0)}
    assert view["focus"] == [14.0, 14.0, 32.0, 24.0]
    assert not at.get("image")  # no server-rendered slices beside it
    legend = " ".join(md.value for md in at.markdown)
    assert "r1" in legend and "r2" in legend and "union" in legend
    assert "**Readers 2 of 2 call C2 fractured; the report says not fractured.**" in legend
    assert any("No acute fracture." in t.value for t in at.text)

    at.radio(key="vote_choice").set_value("fractured")
    at.text_area(key="vote_rationale").input("   ")
    button(at, "Cast vote").click().run()
    assert any("no rationale" in e.value for e in at.error)
    assert votes(scene) == 0

    at.text_area(key="vote_rationale").input("lucent line through the dens on two slices")
    button(at, "Cast vote").click().run()
    assert not at.exception, at.exception
    assert any("Vote recorded" in s.value and "1 of 2 votes" in s.value for s in at.success)
    assert votes(scene) == 1
    assert any("already voted" in c.value for c in at.caption)  # no second vote offered

    chair = page("adjudicate.py", scene.users["chair"])
    chair.radio(key="vote_choice").set_value("not_fractured")
    chair.text_area(key="vote_rationale").input("nutrient canal, not a fracture")
    button(chair, "Cast vote").click().run()
    assert any("chair" in s.value for s in chair.success)
    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        dispute = s.get(m.Dispute, scene.dispute_id)
        assert dispute is not None and dispute.status == "decided"
        label = s.scalars(select(m.FinalLabel).where(m.FinalLabel.level == "C2")).one()
        assert (label.fractured, label.source) == (False, "decision")

    admin = page("adjudicate.py", scene.users["admin"])
    admin.radio(key="adjudicate_status").set_value("decided").run()
    assert any("policy **The committee votes**" in md.value for md in admin.markdown)
    button(admin, "Reopen for a new round").click().run()
    assert any("needs a reason" in e.value for e in admin.error)
    admin.text_area(key="reopen_reason").input("second opinion requested by the surgeon")
    button(admin, "Reopen for a new round").click().run()
    assert any("Reopened" in s.value for s in admin.success)
    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        dispute = s.get(m.Dispute, scene.dispute_id)
        assert dispute is not None and (dispute.status, dispute.round) == ("open", 2)


def test_a_study_too_big_for_the_browser_shows_server_slices(scene: Scene) -> None:
    from pages.parts.viewer_workstation import LIMIT_KEY

    at = AppTest.from_file(str(ROOT / "pages" / "adjudicate.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = scene.users["adj1"]
    at.session_state[LIMIT_KEY] = 1024  # bytes: no volume fits
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 1  # one slice carries both readers' boxes
    assert not [el for el in at.get("bidi_component") if el.proto.bytes]
    assert any("rendered on the server" in i.value for i in at.info)


def test_queue_filters_and_roles(scene: Scene) -> None:
    at = page("adjudicate.py", scene.users["adj1"])
    at.multiselect(key="adjudicate_kinds").set_value(["model_vs_final"]).run()
    assert any("No dispute matches" in i.value for i in at.info)
    at.multiselect(key="adjudicate_kinds").set_value([]).run()
    at.multiselect(key="adjudicate_levels").set_value(["C2"]).run()
    assert at.selectbox(key="adjudicate_dispute").value == scene.dispute_id

    reader = page("adjudicate.py", scene.users["r1"])
    assert any("This page is for these roles: Committee member, Administrator" in e.value
               for e in reader.error)
    assert not reader.get("image")


def test_dashboard_and_audit_pages(scene: Scene) -> None:
    dash = page("dashboard.py", scene.users["adj1"])
    assert not dash.exception, dash.exception
    assert [mt.value for mt in dash.metric][:2] == ["1", "0"]  # open, decided
    assert len(dash.get("plotly_chart")) >= 1

    denied = page("audit.py", scene.users["adj1"])
    assert any("This page is for these roles: Administrator" in e.value for e in denied.error)

    audit = page("audit.py", scene.users["admin"])
    assert not audit.exception, audit.exception
    audit.selectbox(key="audit_action").set_value("dispute.").run()
    assert any("1 matching entry" in c.value for c in audit.caption)
    audit.selectbox(key="audit_action").set_value("report.set").run()
    frame = audit.dataframe[0].value
    assert list(frame["actor"]) == ["admin"] and "No acute fracture." in frame["after"][0]


def test_audit_csv_export_filters_by_actor_action_and_day(scene: Scene) -> None:
    from db import audit_search

    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        admin = scene.users["admin"]
        everything, total = audit_search.search_audit(s, admin)
        assert total == len(everything) > 5
        boxes, n = audit_search.search_audit(s, admin, audit_search.AuditFilter(actor="r1",
                                                                             action="box."))
        assert n == 1 and boxes[0].action == "box.create"
        today = everything[0].at.date()
        since, until = audit_search.day_range(today, today)
        _, n_today = audit_search.search_audit(s, admin, audit_search.AuditFilter(since=since,
                                                                              until=until))
        assert n_today == total
        _, n_before = audit_search.search_audit(s, admin, audit_search.AuditFilter(until=since))
        assert n_before == 0
        out = io.StringIO()
        assert audit_search.write_audit_csv(everything, out) == total
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert set(rows[0]) == set(audit_search.AUDIT_COLUMNS)
    opened = next(r for r in rows if r["action"] == "dispute.open")
    assert '"kind":"readers_vs_report"' in opened["after"] and opened["before"] == ""


def test_dispute_slice_shows_each_reader_and_the_union_in_their_colours(scene: Scene) -> None:
    from db import dispute_queries as views
    from db.studies import open_image
    from pages.parts.dispute_slice import render_slice_view

    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        detail = views.dispute_detail(s, scene.users["adj1"], scene.dispute_id, scene.ws.settings)
        volume = open_image(scene.ws, s.get(m.Series, detail.series_id))
    (view,) = detail.slices
    assert (view.slice_index, view.instance_number) == (2, 3)
    assert [(b.reader, b.x) for b in view.boxes] == [("r1", 14.0), ("r2", 20.0)]
    (union,) = view.unions
    assert (union.x, union.y, union.width, union.height, union.readers) == (
        14.0, 14.0, 18.0, 10.0, ("r1", "r2"))
    colours = detail.reader_colours
    assert len({colours["r1"], colours["r2"], UNION_COLOUR}) == 3

    rgb = render_slice_view(volume, view)
    # axial stack with rows towards P and columns towards L: display pixels = stored pixels
    assert tuple(rgb[14, 16]) == colours["r1"]  # top edge of r1's box only
    assert tuple(rgb[14, 30]) == colours["r2"]  # top edge of r2's box only
    assert tuple(rgb[12, 24]) == UNION_COLOUR  # union frame just above both
    assert tuple(rgb[23, 16]) == colours["r1"]  # bottom edge (y + height - 1)
    r, g, b = (int(v) for v in rgb[30, 5])
    assert r == g == b  # untouched grey image elsewhere
    assert detail.vote_refusal is None and detail.tally is not None
    assert "0 of 2 votes" in detail.tally.reason


def test_admin_corrects_the_report_and_the_dispute_is_withdrawn(scene: Scene) -> None:
    adj1 = page("adjudicate.py", scene.users["adj1"])
    assert not any(sb.key == "report_C2" for sb in adj1.selectbox)  # admins only

    admin = page("adjudicate.py", scene.users["admin"])
    admin.selectbox(key="report_C2").set_value(True)
    admin.text_area(key="report_text").input("Addendum: C2 dens fracture.")
    button(admin, "Save the report and re-check the study").click().run()
    assert not admin.exception, admin.exception
    assert any("Report saved" in s.value and "1 withdrawn" in s.value for s in admin.success)
    assert any("No dispute matches" in i.value for i in admin.info)
    with unit_of_work(scene.ws.sessions, readonly=True) as s:
        assert s.scalar(select(func.count(m.Dispute.id))) == 0
        study = s.get(m.Study, scene.study_id)
        assert study is not None and study.status == "final"
        label = s.scalars(select(m.FinalLabel).where(m.FinalLabel.level == "C2")).one()
        assert (label.fractured, label.source) == (True, "readers")
        report = s.scalars(select(m.Report)).one()
        assert report.text == "Addendum: C2 dens fracture." and report.labels == {"C2": True}

    button(admin, "Check read studies for disputes").click().run()
    assert any("1 studies checked: 0 new dispute(s), 0 open" in i.value for i in admin.info)
