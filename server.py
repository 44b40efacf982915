"""The served app: ``streamlit run server.py`` serves app.py and the session-cookie routes.

Streamlit alone cannot set an HttpOnly cookie, so the sign-in token reaches the browser through
:mod:`spine_web.session_routes` (never through the URL).
"""

import streamlit as st

from spine_web import ROUTES

app = st.App("app.py", routes=ROUTES)
