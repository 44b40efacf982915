"""Sign-in: the guessing brake, OpenID Connect accounts on real databases, and app.py through
AppTest (refusals, what a signed-out user reaches, pages by role, accounts changed meanwhile,
hospital sign-in mapped onto local accounts)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import audit, users
from db import models as m
from db.session import unit_of_work
from spine_core import signin_throttle
from spine_core.errors import InputError, PermissionDenied
from spine_core.signin_throttle import FailureThrottle, throttle_keys
from spine_core.workspace import Workspace
from tests.app_helpers import (
    ROOT, app, button, demo_workspace, fast_scrypt, pages_on, signed_in, texts,
)

REFUSAL = "Wrong user name or password."


# --- the guessing brake ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_penalty_starts_after_the_free_failures_doubles_and_is_capped() -> None:
    throttle = FailureThrottle(free_failures=3, first_penalty_s=1.0, max_penalty_s=8.0,
                               clock=FakeClock())
    seen = []
    for _ in range(8):
        seen.append(throttle.penalty("user:alice"))
        throttle.failed("user:alice")
    assert seen == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert throttle.penalty("user:alice") == 8.0  # capped
    assert throttle.penalty("user:bob") == 0.0


def test_the_worst_key_counts_and_success_or_time_forgets() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(free_failures=1, first_penalty_s=1.0, forget_after_s=60.0,
                               clock=clock)
    user, session = throttle_keys(" Alice ", "s1")
    assert (user, session) == ("user:alice", "session:s1")
    for _ in range(3):
        throttle.failed(user, session)
    # a new session on the same account is slowed down all the same
    assert throttle.penalty(*throttle_keys("ALICE", "s2")) == 2.0
    # one session guessing many names is slowed down too
    assert throttle.penalty(*throttle_keys("bob", "s1")) == 2.0
    throttle.succeeded(user, session)
    assert throttle.penalty(user, session) == 0.0
    throttle.failed(user)
    throttle.failed(user)
    clock.now += 61.0
    assert throttle.failures(user) == 0 and throttle.penalty(user) == 0.0


def test_memory_is_bounded() -> None:
    throttle = FailureThrottle(max_keys=3, clock=FakeClock())
    for i in range(5):
        throttle.failed(f"user:u{i}")
    assert [throttle.failures(f"user:u{i}") for i in range(5)] == [0, 0, 1, 1, 1]


# --- OpenID Connect accounts (SQLite and PostgreSQL) ---------------------------------------------


@pytest.fixture
def sessions(db_sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    with fast_scrypt():
        yield db_sessions


def _oidc(sessions: sessionmaker[Session], subject: str, email: str,
          **kwargs: object) -> tuple[int, str, str]:
    with unit_of_work(sessions) as session:
        u = users.user_for_oidc(session, subject=subject, email=email,
                                **kwargs)  # type: ignore[arg-type]
        return u.id, u.username, u.role


def test_new_identity_gets_a_viewer_account_without_password(
    sessions: sessionmaker[Session],
) -> None:
    uid, name, role = _oidc(sessions, "sub-1", "Alice.Smith+CT@Hospital.org",
                            display_name="Alice Smith")
    assert (name, role) == ("alice.smith-ct@hospital.org", "viewer")
    with unit_of_work(sessions, readonly=True) as session:
        row = session.get(m.User, uid)
        assert row is not None and row.oidc_subject == "sub-1" and row.password_hash == ""
        assert row.display_name == "Alice Smith" and row.active
        created = audit.history(session, entity="user", entity_id=uid)
        assert [(e.action, e.actor) for e in created] == [("user.create", name)]
        assert "password_hash" not in (created[0].after or {})
        # no password: the password form never lets this account in
        assert users.authenticate(session, name, "") is None
    # the same identity again: the same account, nothing new
    assert _oidc(sessions, "sub-1", "alice.smith+ct@hospital.org") == (uid, name, "viewer")
    with unit_of_work(sessions, readonly=True) as session:
        assert session.scalar(select(m.User.id).where(m.User.username.like("alice%"))) == uid
        assert len(audit.history(session, entity="user", entity_id=uid)) == 1


def test_admin_role_changes_apply_and_the_subject_wins_over_the_email(
    sessions: sessionmaker[Session],
) -> None:
    uid, name, _ = _oidc(sessions, "sub-2", "bob@hospital.org")
    with unit_of_work(sessions) as session:
        users.set_role(session, name, "adjudicator", actor="admin", is_chair=True)
    # the provider now sends another address: still the same, now adjudicator, account
    assert _oidc(sessions, "sub-2", "robert@hospital.org") == (uid, name, "adjudicator")


def test_an_account_an_admin_created_in_advance_is_linked(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as session:
        pre = users.create_user(session, "carol@hospital.org", "a password", "annotator",
                                actor="admin").id
    uid, name, role = _oidc(sessions, "sub-3", "Carol@Hospital.org")
    assert (uid, name, role) == (pre, "carol@hospital.org", "annotator")
    with unit_of_work(sessions, readonly=True) as session:
        row = session.get(m.User, pre)
        assert row is not None and row.oidc_subject == "sub-3"
        link = audit.history(session, entity="user", entity_id=pre, action="user.link_oidc")
        assert len(link) == 1 and link[0].before == {"oidc_subject": None}
        assert link[0].after == {"oidc_subject": "sub-3"}
        # the password keeps working beside the hospital sign-in
        assert users.authenticate(session, name, "a password") is not None


def test_refusals(sessions: sessionmaker[Session]) -> None:
    _oidc(sessions, "sub-4", "dave@hospital.org")
    with unit_of_work(sessions) as session:
        users.create_user(session, "boss", "a password", "admin", actor="admin")
    # another identity claiming an address whose account is linked already
    with pytest.raises(PermissionDenied, match="linked to another"):
        _oidc(sessions, "sub-intruder", "dave@hospital.org")
    # an unverified address is never used to find an account
    with unit_of_work(sessions) as session:
        users.create_user(session, "erin@hospital.org", "a password", "admin", actor="admin")
    uid, name, role = _oidc(sessions, "sub-5", "erin@hospital.org", email_verified=False)
    assert name.startswith("oidc-") and role == "viewer"
    with unit_of_work(sessions, readonly=True) as session:
        erin = users.get_user(session, "erin@hospital.org")
        assert erin is not None and erin.oidc_subject is None
    # a deactivated account is refused, whichever way it is found
    with unit_of_work(sessions) as session:
        users.set_active(session, "dave@hospital.org", False, actor="admin")
        users.set_active(session, "erin@hospital.org", False, actor="admin")
    with pytest.raises(PermissionDenied, match="deactivated"):
        _oidc(sessions, "sub-4", "dave@hospital.org")
    with pytest.raises(PermissionDenied, match="deactivated"):
        _oidc(sessions, "sub-6", "erin@hospital.org")
    with unit_of_work(sessions, readonly=True) as session:  # the refused link was not saved
        erin = users.get_user(session, "erin@hospital.org")
        assert erin is not None and erin.oidc_subject is None
    # a claim that is not an address never names a local account such as the admin's
    uid, name, role = _oidc(sessions, "sub-8", "boss")
    assert name.startswith("oidc-") and role == "viewer"
    for subject in ("", "   ", "x" * 300):
        with pytest.raises(InputError, match="subject"):
            _oidc(sessions, subject, "frank@hospital.org")


def test_active_user(sessions: sessionmaker[Session]) -> None:
    uid, name, _ = _oidc(sessions, "sub-7", "gina@hospital.org")
    with unit_of_work(sessions) as session:
        assert users.active_user(session, uid).username == name  # type: ignore[union-attr]
        assert users.active_user(session, uid + 1000) is None
        users.set_active(session, name, False, actor="admin")
        assert users.active_user(session, uid) is None


def test_username_from_email() -> None:
    assert users.oidc_username("Ann@Hospital.ORG", "s") == "ann@hospital.org"
    assert users.oidc_username("..ann o'neil@h.org", "s") == "ann-o-neil@h.org"
    fallback = users.oidc_username("", "subject-1")
    assert fallback.startswith("oidc-") and fallback == users.oidc_username("!!!", "subject-1")
    for not_an_address in ("admin", "Admin ", "@admin", "admin@", "reader1"):
        assert users.oidc_username(not_an_address, "subject-1") == fallback
    assert fallback != users.oidc_username("", "subject-2")
    assert users.oidc_username("a" * 50 + "@hospital.example.org", "s") == (
        "a" * 50 + "@hospital.exam")  # cut to 64 characters
    assert users.oidc_username("a" * 100 + "@h.org", "s").startswith("oidc-")  # cut before '@'


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
    # every refusal counted, per user name and per session
    assert signin_throttle.SIGN_IN.failures("user:sleeper") == 1
    assert signin_throttle.SIGN_IN.failures("session:test session id") == 3


def test_repeated_failures_earn_a_penalty_and_success_clears_it(ws: Workspace) -> None:
    at = app().run()
    for _ in range(signin_throttle.FREE_FAILURES + 2):
        _sign_in(at, "Reader1", "wrong")
        assert [e.value for e in at.error] == [REFUSAL]
    keys = throttle_keys("reader1", "test session id")
    assert signin_throttle.SIGN_IN.penalty(*keys) > 0
    _sign_in(at, "reader1", "reader1")  # waits the penalty, then lets the right password in
    assert at.session_state["user"].username == "reader1"
    assert signin_throttle.SIGN_IN.penalty(*keys) == 0


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
        "This page is for admin users; you are signed in as annotator."]
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
    assert "adjudicator" in " ".join(texts(at.sidebar, "markdown"))
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
