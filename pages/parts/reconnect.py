"""A timer fragment so that a page comes back by itself after its server went away.

When a replica dies (or restarts), Streamlit's front end reconnects to whichever process answers
and opens a new session there. It asks that session for a run only if a run was under way, the
last run was a fragment's, or the page has a timer fragment; otherwise the page on screen stays
the dead process's last render until the reader does something (then server.py's
``run_whole_page_for_unknown_fragments`` runs the whole page). This empty timer fragment, in the
sidebar of every signed-in page, makes the front end ask at once: the page runs on the new
process as soon as the browser is connected again. Its own runs, one per
:data:`TIMER_S` per open page, draw nothing and cost a few milliseconds.
"""

from __future__ import annotations

import streamlit as st

#: Seconds between two runs of the timer (only its existence matters for a reconnect).
TIMER_S = 120.0


def _timer() -> None:
    """Nothing to draw: the timer only has to exist."""


_fragment = st.fragment(run_every=TIMER_S)(_timer)


def run_page_again_after_a_reconnect() -> None:
    """Put the timer fragment here (call it in a place that does not move: the sidebar)."""
    _fragment()
