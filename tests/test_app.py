"""Sign-in through app.py with AppTest: refusals and the guessing brake, what a signed-out user
reaches, pages by role, accounts changed meanwhile, hospital sign-in mapped onto local accounts.
The guessing brake itself: tests/spine_core/test_signin_throttle.py; the OpenID Connect accounts on
real databases: tests/db/test_users_oidc.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from db import users
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core import signin_throttle
from spine_core.signin_throttle import throttle_keys
from tests.app_helpers import ROOT, app, button, demo_workspace, pages_on, signed_in, texts

REFUSAL = "Wrong user name or password."


# --- app.py through AppTest ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return demo_workspace(tmp_path_factory.mktemp("signin"))


@pytest.fixture
def ws(demo: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    with pages_on(demo, monkeypatch) as ws:
        yield ws


def _make_user(ws: Workspace, name: str, role: str, password: str = "pass-word") -> None:
    with unit_of_work(ws.sessions) as session:
        if users.get_user(session, name) is None:
            users.create_user(session, name, password, role, actor="test")
        else:
            users.set_role(session, name, role, actor="test")
            users.set_active(session, name, True, actor="test")


def _sign_in(at, username: str, password: str):  # noqa: ANN001, ANN202 - AppTest
    at.text_input(key="signin_username").input(username)
    at.text_input(key="signin_password").input(password)
    return button(at, "Sign in").click().run()


def test_wrong_password_unknown_name_and_deactivated_account_are_refused_alike(
    ws: Workspace,
) -> None:
    _make_user(ws, "sleeper", "annotator", "right-password")
    with unit_of_work(ws.sessions) as session:
        users.set_active(session, "sleeper", False, actor="test")
    at = app().run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    for name, password in [("admin", "wrong"), ("nobody", "admin"),
                           ("sleeper", "right-password")]:
        _sign_in(at, name, password)
        assert not at.exception
        assert [e.value for e in at.error] == [REFUSAL], name
        assert "user" not in at.session_state
    # every refusal counted, per user name and per session, in the database
    assert ws.signin.throttle.failures("user:sleeper") == 1
    assert ws.signin.throttle.failures("session:test session id") == 3


def test_repeated_failures_earn_a_penalty_and_success_clears_it(ws: Workspace) -> None:
    at = app().run()
    for _ in range(signin_throttle.FREE_FAILURES + 2):
        _sign_in(at, "Reader1", "wrong")
        assert [e.value for e in at.error] == [REFUSAL]
    keys = throttle_keys("reader1", "test session id")
    assert ws.signin.throttle.penalty(*keys) > 0
    _sign_in(at, "reader1", "reader1")  # waits the penalty, then lets the right password in
    assert at.session_state["user"].username == "reader1"
    assert ws.signin.throttle.penalty(*keys) == 0


def test_signed_out_the_app_registers_only_the_sign_in_page(ws: Workspace) -> None:
    at = app().run()
    assert not at.exception
    assert texts(at, "title") == ["SpineReview"]
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.dataframe and not at.selectbox and not at.text_area and not at.sidebar.children
    for page in ("pages/admin.py", "pages/audit.py", "pages/cases.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)  # st.navigation knows no other page


PAGE_SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py"))


@pytest.mark.parametrize("script", PAGE_SCRIPTS)
def test_a_page_script_run_directly_shows_nothing_to_a_signed_out_user(
    ws: Workspace, script: str
) -> None:
    """Streamlit runs a script of a folder named ``pages`` beside app.py *without* app.py when
    its URL is the first one a freshly started server serves (its pages-folder mode, seen on a
    real server; AppTest's switch_page does the same). Every page must then refuse on its own."""
    at = app(script=script).run()  # a page's own bugs are its tests' business: only what it shows
    assert set(texts(at, "warning")) <= {"Please sign in."}
    shown = [el for el in at.main.children.values() if el.type not in ("warning", "exception")]
    assert not shown, f"{script} shows {shown} to a signed-out user"


def test_admin_sees_the_administration_page_and_an_annotator_does_not(ws: Workspace) -> None:
    at = _sign_in(app().run(), "admin", "admin")
    assert at.session_state["user"].role == "admin"
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    assert "Administration" in texts(at, "title") and at.dataframe

    reader = _sign_in(app().run(), "reader2", "reader2")
    assert reader.session_state["user"].role == "annotator"
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        reader.switch_page("pages/admin.py")
    direct = app(reader.session_state["user"], script="pages/admin.py").run()
    assert texts(direct, "error") == [
        "This page is for these roles: Administrator. You are signed in as Reader."]
    assert "Administration" not in texts(direct, "title") and not direct.dataframe


def test_role_changed_meanwhile_applies_at_the_next_run(ws: Workspace) -> None:
    _make_user(ws, "temp-admin", "admin")
    stale = signed_in(ws, "temp-admin")
    with unit_of_work(ws.sessions) as session:
        users.set_role(session, "temp-admin", "adjudicator", actor="test", is_chair=True)
    at = app(stale).run()  # the session still says admin
    assert not at.exception
    user = at.session_state["user"]
    assert (user.role, user.is_chair) == ("adjudicator", True)
    assert "Committee member" in " ".join(texts(at.sidebar, "markdown"))
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/admin.py")


def test_deactivated_meanwhile_is_signed_out(ws: Workspace) -> None:
    _make_user(ws, "temp-adj", "adjudicator")
    stale = signed_in(ws, "temp-adj")
    with unit_of_work(ws.sessions) as session:
        users.set_active(session, "temp-adj", False, actor="test")
    at = app(stale, viewer_study_id=1).run()
    assert not at.exception
    assert "user" not in at.session_state and "viewer_study_id" not in at.session_state
    assert texts(at, "title") == ["SpineReview"]
    assert any("deactivated" in i for i in texts(at, "info"))
    assert [t.label for t in at.text_input] == ["User name", "Password"]


# --- hospital sign-in (OpenID Connect) through app.py ---------------------------------------------

AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                 "client_id": "spine", "client_secret": "secret",
                 "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration"}}


def test_no_hospital_button_without_auth_settings(ws: Workspace) -> None:
    at = app().run()
    assert "Sign in with the hospital account" not in [b.label for b in at.button]
    at = app()
    at.secrets = dict(AUTH)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and "user" not in at.session_state
    if importlib.util.find_spec("authlib") is not None:
        assert "Sign in with the hospital account" in [b.label for b in at.button]
    else:  # st.login needs Authlib: say so instead of failing at the click
        assert any("Authlib" in w for w in texts(at, "warning"))


def test_a_hospital_identity_is_mapped_onto_a_local_account(ws: Workspace) -> None:
    at = app()
    at.secrets = dict(AUTH)
    at.user = {"is_logged_in": True, "sub": "entra-42", "email": "Hana@Hospital.org",
               "name": "Hana H.", "email_verified": True}
    at.run()
    assert not at.exception, at.exception
    user = at.session_state["user"]
    assert (user.username, user.role, user.display_name) == (
        "hana@hospital.org", "viewer", "Hana H.")
    with unit_of_work(ws.sessions) as session:
        users.set_active(session, "hana@hospital.org", False, actor="test")
    again = app()
    again.secrets = dict(AUTH)
    again.user = dict(at.user)
    again.run()
    assert "user" not in again.session_state
    assert any("deactivated" in e for e in texts(again, "error"))
    assert "Sign out of the hospital account" in [b.label for b in again.button]


def test_a_hospital_identity_gets_the_role_an_admin_prepared(ws: Workspace) -> None:
    _make_user(ws, "ivan@hospital.org", "adjudicator")
    at = app()
    at.secrets = dict(AUTH)
    at.user = {"is_logged_in": True, "sub": "entra-77", "email": "Ivan@hospital.org"}
    at.run()
    assert not at.exception, at.exception
    user = at.session_state["user"]
    assert (user.username, user.role) == ("ivan@hospital.org", "adjudicator")
    at.switch_page("pages/adjudicate.py")  # registered for adjudicators: no ValueError
