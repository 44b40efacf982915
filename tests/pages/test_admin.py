"""The Administration page through AppTest on a real SQLite workspace (list, add, role, chair,
deactivate, password reset, report editor), every action audited, bad input answered with a
message and nothing lost. The core's admin-only actions: tests/db/test_user_admin.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import audit, users
from db import models as m
from db.catalogue import get_or_create_study
from db.session import unit_of_work
from db.workspace import Workspace
from tests.app_helpers import app, button, demo_workspace, pages_on, signed_in, texts

PW = "long enough"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = demo_workspace(tmp_path_factory.mktemp("admin"))
    with unit_of_work(ws.sessions) as session:
        get_or_create_study(session, "1.2.826.0.1.3680043.2.1", "rsna")
    return ws


@pytest.fixture
def ws(demo: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    with pages_on(demo, monkeypatch) as ws:
        yield ws


def admin_page(ws: Workspace, username: str = "admin") -> AppTest:
    at = app(signed_in(ws, username), script="pages/admin.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest) -> dict[str, dict[str, object]]:
    frame = at.dataframe[0].value
    return {row["User name"]: dict(row) for _, row in frame.iterrows()}


def _fill_new_user(at: AppTest, name: str, password: str, again: str, role: str = "annotator",
                   display: str = "") -> AppTest:
    at.text_input(key="admin_new_username").input(name)
    at.text_input(key="admin_new_display").input(display)
    at.selectbox(key="admin_new_role").set_value(role)
    at.text_input(key="admin_new_password").input(password)
    at.text_input(key="admin_new_password2").input(again)
    return button(at, "Add the user").click().run()


def test_only_admins_see_the_page(ws: Workspace) -> None:
    for name, role in [("reader1", "Reader"), ("adjudicator1", "Committee member"),
                       ("viewer", "Viewer")]:
        at = app(signed_in(ws, name), script="pages/admin.py").run()
        assert texts(at, "error") == [
            f"This page is for these roles: Administrator. You are signed in as {role}."]
        assert not at.dataframe and not at.text_input and not at.button
    at = admin_page(ws)
    rows = table(at)
    assert {"admin", "reader1", "adjudicator2", "viewer"} <= rows.keys()
    assert rows["adjudicator2"]["Committee chair"] and rows["reader1"]["Role"] == "Reader"
    assert rows["admin"]["Password"] and not rows["admin"]["Hospital sign-in"]


def test_add_a_user_and_the_refusals_keep_what_was_typed(ws: Workspace) -> None:
    at = admin_page(ws)
    _fill_new_user(at, "reader9", PW, PW + "x", display="Reader Nine")
    assert any("passwords differ" in e for e in texts(at, "error"))
    assert at.text_input(key="admin_new_username").value == "reader9"  # kept, to correct
    assert at.text_input(key="admin_new_display").value == "Reader Nine"
    _fill_new_user(at, "reader9", "abc", "abc", display="Reader Nine")
    assert any("characters" in e for e in texts(at, "error"))
    _fill_new_user(at, "Reader1", PW, PW)
    assert any("already exists" in e for e in texts(at, "error"))
    assert not at.exception and "reader9" not in table(at)

    _fill_new_user(at, "reader9", PW, PW, display="Reader Nine")
    assert not at.exception, at.exception
    assert texts(at, "success") == ["User 'reader9' added as Reader."]
    assert table(at)["reader9"]["Display name"] == "Reader Nine"
    assert at.text_input(key="admin_new_username").value == ""  # the form starts afresh
    with ws.sessions() as session:
        assert users.authenticate(session, "reader9", PW) is not None
        entry = audit.history(session, action="user.create", actor="admin")[0]
        assert entry.after["username"] == "reader9"  # type: ignore[index]


def _choose(at: AppTest, username: str) -> AppTest:
    return at.selectbox(key="admin_user").set_value(username).run()


def test_role_chair_active_and_password(ws: Workspace) -> None:
    with unit_of_work(ws.sessions) as session:
        users.create_user(session, "temp-reader", PW, "annotator", actor="test")
    at = _choose(admin_page(ws), "temp-reader")
    at.selectbox(key="admin_role_temp-reader").set_value("adjudicator")
    button(at, "Save role and chair").click().run()
    assert texts(at, "success") == ["temp-reader is now adjudicator."]
    at.checkbox(key="admin_chair_temp-reader").check()
    button(at, "Save role and chair").click().run()
    assert texts(at, "success") == ["temp-reader is now adjudicator, committee chair."]
    assert table(at)["temp-reader"]["Committee chair"]
    # a chair must adjudicate: ticking it for a viewer is refused, nothing changes
    at.selectbox(key="admin_role_temp-reader").set_value("viewer")
    button(at, "Save role and chair").click().run()
    assert texts(at, "success") == ["temp-reader is now viewer."]  # chair dropped with the role
    at.checkbox(key="admin_chair_temp-reader").check()
    button(at, "Save role and chair").click().run()
    assert any("only an adjudicator" in e for e in texts(at, "error"))
    assert table(at)["temp-reader"]["Role"] == "Viewer"

    button(at, "Deactivate the account").click().run()
    assert texts(at, "success") == ["temp-reader is deactivated."]
    assert not table(at)["temp-reader"]["Active"]
    button(at, "Reactivate the account").click().run()
    assert table(at)["temp-reader"]["Active"]

    at.text_input(key="admin_reset_temp-reader").input("fresh password")
    at.text_input(key="admin_reset2_temp-reader").input("fresh passw0rd")
    button(at, "Reset the password").click().run()
    assert any("passwords differ" in e for e in texts(at, "error"))
    at.text_input(key="admin_reset2_temp-reader").input("fresh password")
    button(at, "Reset the password").click().run()
    assert texts(at, "success") == ["The password of temp-reader was reset."]
    with ws.sessions() as session:
        assert users.authenticate(session, "temp-reader", "fresh password") is not None
        row = users.get_user(session, "temp-reader")
        assert row is not None
        actions = [e.action for e in audit.history(session, entity="user", entity_id=row.id,
                                                   actor="admin")]
    assert sorted(actions) == sorted(["user.set_role"] * 3 + ["user.set_active"] * 2
                                     + ["user.set_password"])


def test_unlink_button_only_for_linked_accounts(ws: Workspace) -> None:
    with unit_of_work(ws.sessions) as session:
        users.user_for_oidc(session, subject="idp-9", email="lena@hospital.org")
    at = _choose(admin_page(ws), "reader1")
    assert "Unlink the hospital identity" not in [b.label for b in at.button]
    at = _choose(admin_page(ws), "lena@hospital.org")
    assert table(at)["lena@hospital.org"]["Hospital sign-in"]
    assert not table(at)["lena@hospital.org"]["Password"]
    button(at, "Unlink the hospital identity").click().run()
    assert texts(at, "success") == ["lena@hospital.org is no longer linked to a hospital identity."]
    assert not table(at)["lena@hospital.org"]["Hospital sign-in"]


def test_admins_cannot_lock_themselves_out(ws: Workspace) -> None:
    at = _choose(admin_page(ws), "admin")
    button(at, "Deactivate the account").click().run()
    assert any("your own account" in e for e in texts(at, "error"))
    at.selectbox(key="admin_role_admin").set_value("viewer")
    button(at, "Save role and chair").click().run()
    assert any("only active admin" in e for e in texts(at, "error"))
    assert not at.exception and table(at)["admin"]["Role"] == "Administrator"


def test_report_editor(ws: Workspace) -> None:
    at = admin_page(ws)
    at.text_input(key="admin_report_uid").input("9.9.404").run()
    assert any("no study has the UID" in e for e in texts(at, "error"))
    uid = "1.2.826.0.1.3680043.2.1"
    at.text_input(key="admin_report_uid").input(uid).run()
    assert not at.exception, at.exception
    with ws.sessions() as session:
        study_id = session.scalar(select(m.Study.id).where(m.Study.study_uid == uid))
    prefix = f"admin_report_{study_id}"
    assert any("no report yet" in c for c in texts(at, "caption"))
    assert any("not labelled" in t for t in texts(at, "markdown"))
    at.selectbox(key=f"{prefix}_C3").set_value(False)
    at.selectbox(key=f"{prefix}_T2").set_value(False).run()
    assert any("derived from the levels): **not fractured**" in t for t in texts(at, "markdown"))
    at.selectbox(key=f"{prefix}_C5").set_value(True)
    at.text_area(key=f"{prefix}_text").input("Fracture of C5.")
    at.run()
    assert any("derived from the levels): **fractured**" in t for t in texts(at, "markdown"))
    button(at, "Save the report and re-check the study").click().run()
    assert not at.exception, at.exception
    assert any(s.startswith(f"Report of {uid} saved.") for s in texts(at, "success"))
    with ws.sessions() as session:
        report = session.scalars(select(m.Report).where(m.Report.study_id == study_id)).one()
        assert report.labels == {"C3": False, "C5": True, "T2": False}
        assert (report.patient_overall, report.text, report.source) == (
            True, "Fracture of C5.", "manual entry")
        entry = audit.history(session, action="report.set")[0]
        assert (entry.actor, entry.entity_id) == ("admin", uid)
    # reopened, the editor shows what is stored
    again = admin_page(ws)
    again.text_input(key="admin_report_uid").input(uid).run()
    assert again.selectbox(key=f"{prefix}_C5").value is True
    assert again.selectbox(key=f"{prefix}_C1").value is None
    assert again.text_area(key=f"{prefix}_text").value == "Fracture of C5."


def test_admins_see_each_readers_reading_time(ws: Workspace) -> None:
    import datetime as dt

    from db import annotations, reading_time

    t0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    with unit_of_work(ws.sessions) as s:
        study, _ = get_or_create_study(s, "1.2.826.0.1.3680043.2.77", "rsna")
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        reader = s.scalars(select(m.User).where(m.User.username == "reader1")).one()
        annotations.assign(s, admin, study.id, [reader.id])
        reading_time.open_study(s, reader, study.id, now=t0)
        for n in range(1, 5):  # four heartbeats of 30 s, 30 s apart: two minutes of reading
            reading_time.record_reading(s, reader, study.id, 30.0, now=t0 + dt.timedelta(seconds=30 * n))
    at = admin_page(ws)
    summary = next(d for d in at.dataframe if "Total active min" in d.value.columns).value
    row = summary[summary["Reader"] == "reader1"].iloc[0]
    assert (row["Assigned"], row["Opened"], row["Submitted"]) == (1, 1, 0)
    assert row["Total active min"] == 2.0
    per_study = next(d for d in at.dataframe if "Active min" in d.value.columns).value
    assert per_study[per_study["Study"] == "1.2.826.0.1.3680043.2.77"]["Active min"].tolist() == [2.0]
    # readers do not see the page at all
    assert texts(app(signed_in(ws, "reader1"), script="pages/admin.py").run(), "error")
