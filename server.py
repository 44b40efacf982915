"""The served app: ``streamlit run server.py`` serves app.py, the session-cookie routes and the
box-event route of the reading workstation (:mod:`spine_web.box_routes`) and the route its
viewer fetches the volume's chunks from (:mod:`spine_web.volume_routes`).

Streamlit alone cannot set an HttpOnly cookie, so the sign-in token reaches the browser through
:mod:`spine_web.session_routes` (never through the URL). The routes get the database's sign-in
stores (``db.signin_state``), the same rows app.py uses, so several replicas of this server on
one database redeem tickets and revoke tokens alike.
"""

import streamlit as st
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

_workspace = open_workspace(load_settings())
_signin = _workspace.signin
grants.serve_at(VOLUME_ROUTE, COOKIE, SESSION_STATE_KEY)  # the viewer fetches its chunks there

app = st.App("app.py", routes=[*session_routes(_signin.tokens, _signin.tickets),
                               *box_routes(_workspace, _signin.tokens),
                               *volume_routes(_signin.tokens, grants.default_registry())])
