"""What every page shares: the workspace, the signed-in user, role guards and the error boundary.

Pages stay thin: they ask the core for what to show and hand it what the user did. This module
holds no domain logic either, only the Streamlit plumbing around it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from db.workspace import Workspace, open_workspace
from spine_core import words
from spine_core.config import load_settings
from spine_core.errors import SpineError
from spine_core.roles import Permission, can, roles_with

log = logging.getLogger("spinereview.app")


def _never_run_pages_directly() -> None:
    """Route a page request through app.py, never straight to a script in pages/.

    Streamlit starts a fresh server in its legacy "pages directory" mode until the main script
    first calls ``st.navigation``; a first request for ``/admin`` would then run pages/admin.py
    without app.py's sign-in. Switch the server to app.py's navigation and rerun at once.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without this internal
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_never_run_pages_directly()


@dataclass(frozen=True)
class SignedInUser:
    """The signed-in user as the pages see it (a plain value, safe to keep in session_state)."""

    id: int
    username: str
    display_name: str
    role: str
    is_chair: bool = False


@st.cache_resource(show_spinner=False)
def workspace() -> Workspace:
    """One workspace per server process (settings from SPINE_* variables)."""
    return open_workspace(load_settings())


def current_user() -> SignedInUser | None:
    user = st.session_state.get("user")
    return user if isinstance(user, SignedInUser) else None


def require_permission(permission: Permission = Permission.open_studies) -> SignedInUser:
    """Stop the page unless a user whose role has ``permission`` is signed in (server-side check)."""
    user = current_user()
    if user is None:
        st.warning("Please sign in.")
        st.stop()
    if not can(user.role, permission):
        roles = ", ".join(words.role_words(r.value) for r in roles_with(permission))
        st.error(f"This page is for these roles: {roles}. You are signed in as "
                 f"{words.role_words(user.role)}.")
        st.stop()
    return user  # type: ignore[return-value]


@contextlib.contextmanager
def error_boundary(what: str = "This page") -> Iterator[None]:
    """Turn core errors into a clear message; never show a traceback in the browser."""
    try:
        yield
    except SpineError as exc:
        st.error(str(exc))
    except ScriptControlException:  # st.stop() / st.rerun() are control flow, not errors
        raise
    except Exception as exc:  # noqa: BLE001 - last line of defence for the browser
        log.exception("unexpected error in %s", what)
        st.error(
            f"{what} failed unexpectedly ({type(exc).__name__}: {exc}). Nothing you saved was lost; "
            "reload the page, and tell an administrator if it happens again."
        )
