"""The web server around the Streamlit app: the HTTP routes Streamlit itself cannot serve.

``server.py`` (beside ``app.py``) builds ``st.App("app.py", routes=ROUTES)``; ``streamlit run
server.py`` serves both. Today: the sign-in session cookie (:mod:`spine_web.session_routes`).
"""

from spine_web.session_routes import COOKIE, ROUTES

__all__ = ["COOKIE", "ROUTES"]
