"""The web server around the Streamlit app: the HTTP routes Streamlit itself cannot serve.

``server.py`` (beside ``app.py``) builds ``st.App("app.py", routes=session_routes(tokens,
tickets))`` with the database's sign-in stores; ``streamlit run server.py`` serves both. The
sign-in session cookie (:mod:`spine_web.session_routes`), the box events of the reading
workstation, saved without a page rerun (:mod:`spine_web.box_routes`), and the chunks of the
volume its viewer fetches, checked against the session (:mod:`spine_web.volume_routes`).
"""

from spine_web.session_routes import COOKIE, SESSION_STATE_KEY, session_routes

__all__ = ["COOKIE", "SESSION_STATE_KEY", "session_routes"]
