"""SpineReview: Streamlit entry point. Who is signed in, and which pages their role sees.

Run with ``streamlit run app.py`` (``scripts/start.sh`` prepares the embedded default first).
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from pages.common import SignedInUser, current_user, error_boundary, workspace

st.set_page_config(page_title="SpineReview", page_icon="🦴", layout="wide")

#: Folder of app.py: page scripts are found relative to it.
APP_DIR = Path(__file__).resolve().parent

#: Seconds a refused sign-in waits (constant, so a refusal tells nothing and guessing is slow).
REFUSAL_DELAY_S = 1.0

PAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # key: (script, title, roles that see it)
    "cases": ("pages/cases.py", "Cases", ("annotator", "adjudicator", "admin", "viewer")),
    "viewer": ("pages/viewer.py", "Viewer", ("annotator", "adjudicator", "admin", "viewer")),
    "annotate": ("pages/annotate.py", "Annotate", ("annotator",)),
    "adjudicate": ("pages/adjudicate.py", "Adjudication", ("adjudicator", "admin")),
    "agreement": ("pages/agreement.py", "Agreement", ("adjudicator", "admin")),
    "dashboard": ("pages/dashboard.py", "Dispute dashboard", ("adjudicator", "admin", "viewer")),
    "audit": ("pages/audit.py", "Audit log", ("admin",)),
    "models": ("pages/models.py", "Models", ("adjudicator", "admin", "viewer")),
    "demo": ("pages/demo.py", "Demonstration", ("admin", "viewer", "adjudicator")),
    "admin": ("pages/admin.py", "Administration", ("admin",)),
    "assign": ("pages/assign.py", "Assignments", ("admin",)),
}


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def _sign_in_form() -> None:
    st.title("SpineReview")
    st.caption("Spine CT annotation, consensus and adjudication")
    with st.form("sign-in"):
        username = st.text_input("User name", key="signin_username")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        user = _authenticate(username.strip(), password)
        if user is None:
            time.sleep(REFUSAL_DELAY_S)
            st.error("Wrong user name or password.")
        else:
            st.session_state["user"] = user
            st.rerun()
    if _oidc_configured():
        st.divider()
        if st.button("Sign in with the hospital account"):
            st.login()
        if getattr(st.user, "is_logged_in", False):
            _adopt_oidc_user()


def _authenticate(username: str, password: str) -> SignedInUser | None:
    from db.users import authenticate

    with workspace().sessions() as session:
        user = authenticate(session, username, password)
        if user is None:
            return None
        return SignedInUser(user.id, user.username, user.display_name or user.username,
                            user.role, bool(user.is_chair))


def _adopt_oidc_user() -> None:
    """Map an OpenID Connect identity onto a local account (by subject, created as viewer)."""
    from db.users import user_for_oidc

    subject = str(st.user.get("sub", ""))
    email = str(st.user.get("email", "")) or subject
    with workspace().sessions.begin() as session:
        user = user_for_oidc(session, subject=subject, email=email)
        st.session_state["user"] = SignedInUser(
            user.id, user.username, user.display_name or user.username, user.role, bool(user.is_chair)
        )
    st.rerun()


def _sign_out() -> None:
    for key in list(st.session_state):
        del st.session_state[key]
    if getattr(st.user, "is_logged_in", False):
        st.logout()


def main() -> None:
    user = current_user()
    if user is None:
        st.navigation([st.Page(_sign_in_form, title="Sign in", url_path="signin")],
                      position="hidden").run()
        return
    pages = [
        st.Page(script, title=title, url_path=key, default=(key == "cases"))
        for key, (script, title, roles) in PAGES.items()
        if user.role in roles and (APP_DIR / script).is_file()  # pages not yet written: left out
    ]
    with st.sidebar:
        st.markdown(f"**{user.display_name}** · {user.role}")
        st.button("Sign out", on_click=_sign_out, key="signout")
    st.navigation(pages).run()


with error_boundary("SpineReview"):
    main()
