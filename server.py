"""The served app: ``streamlit run server.py`` serves app.py, the session-cookie routes and the
box-event route of the reading workstation (:mod:`spine_web.box_routes`) and the route its
viewer fetches the volume's chunks from (:mod:`spine_web.volume_routes`).

Streamlit alone cannot set an HttpOnly cookie, so the sign-in token reaches the browser through
:mod:`spine_web.session_routes` (never through the URL). The routes get the database's sign-in
stores (``db.signin_state``), the same rows app.py uses, so several replicas of this server on
one database redeem tickets and revoke tokens alike.
"""

import logging

import streamlit as st
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.pages_manager import PagesManager

from db.workspace import open_workspace
from spine_core.config import load_settings
from spine_viewer import grants
from spine_web import COOKIE, SESSION_STATE_KEY, session_routes
from spine_web.box_routes import box_routes
from spine_web.volume_routes import ROUTE as VOLUME_ROUTE
from spine_web.volume_routes import volume_routes

# app.py's st.navigation chooses the pages. Until the first st.navigation call of a process,
# Streamlit takes the pages/ folder beside the script for its old multipage layout: a replica's
# first session arriving on a page's URL (a reader of a killed replica reconnecting on /annotate)
# would run pages/annotate.py bare (an error page, for every such session of that process).
PagesManager.uses_pages_directory = False


def log_app_lines() -> None:
    """The app's own log lines (loggers under ``spine``, INFO and up) on the server's stderr,
    beside Streamlit's: without a handler Python drops INFO lines, such as the one below saying
    that a reconnected browser's page was run whole."""
    log = logging.getLogger("spine")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def run_whole_page_for_unknown_fragments() -> None:
    """A browser that reconnects to this process gets its page run here.

    When a replica dies (or restarts), Streamlit's front end reconnects to whichever process
    answers and opens a new session there, but runs nothing: the page on screen is the dead
    process's last render. Its next request is often a rerun of a fragment (the viewer asking for
    a chunk or committing a slice, a progress panel's timer), which the new session, never having
    run the page, does not know: Streamlit drops it (an info line), so the page stopped following
    the viewer and a viewer still streaming stayed at "loading n %". Here a rerun of a fragment
    the session does not know runs the whole page instead, with the same widget states and page.
    That includes a session whose first run here is still under way (asked for by the reconnect
    timer, :mod:`pages.parts.reconnect`): its fragments are not registered yet, and Streamlit would
    drop the viewer's slice commit ("the fragment ... does not exist anymore"), seen in about one
    run in three of the reconnect browser test. A fragment that a full run removed costs one full
    run instead of nothing.
    """
    if getattr(AppSession, "_spine_whole_page_patch", False):
        return
    original = AppSession.request_rerun

    def request_rerun(self: AppSession, client_state: ClientState | None) -> None:
        fragment = client_state.fragment_id if client_state is not None else ""
        if client_state is not None and fragment and not self.has_fragment(fragment):
            whole = ClientState()
            whole.CopyFrom(client_state)
            whole.fragment_id, whole.is_auto_rerun = "", False
            logging.getLogger("spine.server").info(
                "session %s: fragment %s unknown here (a reconnect, or the page's run under way):"
                " running the whole page", self.id, fragment)
            client_state = whole
        original(self, client_state)

    AppSession.request_rerun = request_rerun  # type: ignore[method-assign]
    AppSession._spine_whole_page_patch = True  # type: ignore[attr-defined]


log_app_lines()
run_whole_page_for_unknown_fragments()

_workspace = open_workspace(load_settings())
_signin = _workspace.signin
grants.serve_at(VOLUME_ROUTE, COOKIE, SESSION_STATE_KEY)  # the viewer fetches its chunks there

app = st.App("app.py", routes=[*session_routes(_signin.tokens, _signin.tickets),
                               *box_routes(_workspace, _signin.tokens),
                               *volume_routes(_signin.tokens, grants.default_registry())])
