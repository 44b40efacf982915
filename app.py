"""SpineReview: Streamlit entry point. Who is signed in, and which pages their role sees.

Run with ``streamlit run app.py`` (``scripts/start.sh`` prepares the embedded default first).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from pages.parts.common import SignedInUser, current_user, error_boundary, workspace
from pages.parts.reconnect import run_page_again_after_a_reconnect
from spine_core import signin_throttle, words
from spine_core.errors import SpineError
from spine_core.roles import Permission, can
from spine_web import SESSION_STATE_KEY

if TYPE_CHECKING:
    from db.models import User

st.set_page_config(page_title="SpineReview", page_icon="🦴", layout="wide")

#: Folder of app.py: page scripts are found relative to it.
APP_DIR = Path(__file__).resolve().parent

#: Seconds a refused sign-in waits (constant, so a refusal tells nothing and guessing is slow);
#: repeated failures add a growing, capped penalty (spine_core.signin_throttle).
REFUSAL_DELAY_S = signin_throttle.REFUSAL_DELAY_S
#: Message shown on the sign-in page after the app signed someone out.
SIGNED_OUT_NOTICE = "signin_notice"
#: Old addresses carried the session token in this query parameter; it is dropped on sight.
LEGACY_SESSION_PARAM = "s"
SESSION_TOKEN = SESSION_STATE_KEY  # the viewer reads it there too (spine_viewer.grants)
#: The one-time ticket the browser still has to exchange for the session cookie.
HANDOFF = "session_handoff"
#: Set on sign-out: the browser deletes its session cookie on the next run.
CLEAR_COOKIE = "session_clear_cookie"

PAGES: dict[str, tuple[str, str, Permission]] = {
    # key: (script, title, the permission a role needs to see it; spine_core.roles has the table)
    "cases": ("pages/cases.py", "Cases", Permission.open_studies),
    "viewer": ("pages/viewer.py", "Viewer", Permission.open_studies),
    "annotate": ("pages/annotate.py", "Annotate", Permission.annotate),
    "adjudicate": ("pages/adjudicate.py", "Adjudication", Permission.read_disputes),
    "agreement": ("pages/agreement.py", "Agreement", Permission.see_all_readers),
    "dashboard": ("pages/dashboard.py", "Dispute dashboard", Permission.dispute_dashboard),
    "audit": ("pages/audit.py", "Audit log", Permission.read_audit),
    "models": ("pages/models.py", "Models", Permission.see_models),
    "demo": ("pages/demo.py", "Demonstration", Permission.demonstration),
    "admin": ("pages/admin.py", "Administration", Permission.manage_users),
    "assign": ("pages/assign.py", "Assignments", Permission.assign_readers),
}


def _oidc_configured() -> bool:
    """Whether hospital sign-in (OpenID Connect, ``[auth]`` in secrets.toml) is set up."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def _signed_in(user: User) -> SignedInUser:
    """The session's value for an account row."""
    return SignedInUser(user.id, user.username, user.display_name or user.username, user.role,
                        bool(user.is_chair))


def _sign_in_form() -> None:
    st.title("SpineReview")
    st.caption("Spine CT annotation, consensus and adjudication")
    notice = st.session_state.pop(SIGNED_OUT_NOTICE, None)
    if notice:
        st.info(notice)
    with st.form("sign-in"):
        username = st.text_input("User name", key="signin_username")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        user = _authenticate(username.strip(), password)
        if user is None:
            st.error("Wrong user name or password.")
        else:
            _start_session(user)
            st.rerun()
    if _oidc_configured():
        st.divider()
        if getattr(st.user, "is_logged_in", False):
            _adopt_oidc_user()
        elif importlib.util.find_spec("authlib") is None:
            st.warning("Hospital sign-in is configured, but the Authlib package it needs is not "
                       "installed: ask the administrator to install Authlib>=1.3.2 and restart.")
        elif st.button("Sign in with the hospital account"):
            st.login()


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def _client_address() -> str | None:
    """The client's address (behind the team's nginx: the one nginx saw), when known."""
    try:
        return signin_throttle.client_address(st.context.ip_address, dict(st.context.headers))
    except Exception:  # noqa: BLE001 - no request context (AppTest): unknown
        return None


def _authenticate(username: str, password: str) -> SignedInUser | None:
    """The user when name and password match an active account, else None after a delay.

    Every attempt on a user name or from a session that failed repeatedly first waits a growing
    penalty; a refusal then waits ``REFUSAL_DELAY_S`` (see spine_core.signin_throttle). Wrong
    password, unknown name and deactivated account are refused alike. Failures are counted in
    the database, per user name, session and client address, so every replica sees them.
    """
    from db.users import authenticate

    throttle = workspace().signin.throttle
    keys = signin_throttle.throttle_keys(username, _session_id(), _client_address())
    time.sleep(throttle.penalty(*keys))
    with workspace().sessions() as session:
        user = authenticate(session, username, password)
        signed = None if user is None else _signed_in(user)
    if signed is None:
        throttle.failed(*keys)
        time.sleep(REFUSAL_DELAY_S)
        return None
    throttle.succeeded(*keys)
    return signed


def _adopt_oidc_user() -> None:
    """Map the OpenID Connect identity onto its local account (db.users.user_for_oidc: linked by
    subject, else an admin's account named after the e-mail, else a new viewer)."""
    from db.session import unit_of_work
    from db.users import user_for_oidc

    claims = st.user.to_dict()
    verified = claims.get("email_verified")
    try:
        with unit_of_work(workspace().sessions) as session:
            user = user_for_oidc(
                session, subject=str(claims.get("sub") or ""), email=str(claims.get("email") or ""),
                display_name=str(claims.get("name") or ""),
                email_verified=verified if isinstance(verified, bool) else None,
            )
            signed = _signed_in(user)
    except SpineError as exc:
        st.error(f"Hospital sign-in refused: {exc}.")
        st.button("Sign out of the hospital account", on_click=st.logout, key="oidc_signout")
        return
    _start_session(signed)
    st.rerun()


def _recheck(user: SignedInUser | None) -> SignedInUser | None:
    """The signed-in user as the database has it now (one primary-key read per run): signed out
    when the account was deactivated or removed, role and chair updated when an admin changed
    them meanwhile."""
    if user is None:
        return None
    from db.users import active_user

    with workspace().sessions() as session:
        row = active_user(session, user.id)
        fresh = None if row is None else _signed_in(row)
    if fresh is None:
        for key in list(st.session_state):
            del st.session_state[key]
        st.session_state[SIGNED_OUT_NOTICE] = (
            "You were signed out: your account was deactivated. Ask an administrator."
        )
        return None
    if fresh != user:
        st.session_state["user"] = fresh
    return fresh


def _start_session(user: SignedInUser) -> None:
    """Sign ``user`` in for this browser tab and issue the token that survives a reload: the
    browser gets it as an HttpOnly cookie through a one-time ticket (never in the URL). Token
    and ticket are database rows: any replica, and this one after a restart, knows them."""
    st.session_state["user"] = user
    signin = workspace().signin
    token = signin.tokens.issue(user.id)
    st.session_state[SESSION_TOKEN] = token
    st.session_state[HANDOFF] = signin.tickets.issue(token)


def _restore_session() -> SignedInUser | None:
    """After a reload: the user of the session cookie's token, if it is live and the account
    active. A token in the address (older versions put it there) is dropped, never used."""
    from db.users import active_user
    from spine_web import COOKIE

    if LEGACY_SESSION_PARAM in st.query_params:
        del st.query_params[LEGACY_SESSION_PARAM]
    token = st.context.cookies.get(COOKIE)
    tokens = workspace().signin.tokens
    user_id = tokens.resolve(token)
    if user_id is None:
        return None
    with workspace().sessions() as session:
        row = active_user(session, user_id)
        user = None if row is None else _signed_in(row)
    if user is None:
        tokens.revoke(token)
        return None
    st.session_state["user"] = user
    st.session_state[SESSION_TOKEN] = token
    return user


def _hand_over_cookie() -> None:
    """Until the browser confirms it, have it exchange the sign-in ticket for the cookie."""
    from pages.parts.session_cookie import hand_over

    ticket = st.session_state.get(HANDOFF)
    if ticket and hand_over(ticket) is not None:
        st.session_state.pop(HANDOFF, None)  # done (or refused: a reload then asks to sign in)


def _sign_out() -> None:
    workspace().signin.tokens.revoke(st.session_state.get(SESSION_TOKEN))
    for key in list(st.session_state):
        del st.session_state[key]
    st.session_state[CLEAR_COOKIE] = True
    if getattr(st.user, "is_logged_in", False):
        st.logout()


def _signed_out_navigation() -> None:
    """Only the sign-in form, under every page address (a bookmarked page asks to sign in)."""
    if st.session_state.get(CLEAR_COOKIE):
        from pages.parts.session_cookie import clear

        if clear() is not None:
            st.session_state.pop(CLEAR_COOKIE, None)
    pages = [st.Page(_sign_in_form, title="Sign in", url_path="signin", default=True)]
    pages += [st.Page(_sign_in_form, title="Sign in", url_path=key) for key in PAGES]
    st.navigation(pages, position="hidden").run()


def main() -> None:
    user = _recheck(current_user() or _restore_session())
    if user is None:
        _signed_out_navigation()
        return
    if HANDOFF in st.session_state:
        _hand_over_cookie()
    pages = [
        st.Page(script, title=title, url_path=key, default=(key == "cases"))
        for key, (script, title, permission) in PAGES.items()
        if can(user.role, permission) and (APP_DIR / script).is_file()  # pages not yet written: left out
    ]
    with st.sidebar:
        st.markdown(f"**{user.display_name}** · {words.role_words(user.role)}")
        st.button("Sign out", on_click=_sign_out, key="signout")
        run_page_again_after_a_reconnect()
    st.navigation(pages).run()


with error_boundary("SpineReview"):
    main()
