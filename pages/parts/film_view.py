"""A radiograph's one-line description and its view, which a reader may set (lateral, AP, PA).

Thin: :mod:`db.film_views` checks who may set it (readers on their assigned films, adjudicators,
admins), stores it and audits it; the line shows the set view over the header's, and by whom.
"""

from __future__ import annotations

import streamlit as st

from db import film_views as fv
from db import models as m
from db.session import unit_of_work
from pages.parts.common import SignedInUser, workspace
from pages.parts.viewer_parts import StudyView
from spine_core.errors import InputError, NotFound, PermissionDenied
from spine_core.io.radiograph import describe

FROM_HEADER = ""
_NOTICE = "film_view_notice"


def _state(user: SignedInUser, study_id: int) -> tuple[fv.SetView | None, bool]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        may = me is not None and fv.may_set_film_view(session, me, study_id)
        return fv.film_view(session, study_id), may


def _save(user: SignedInUser, study_id: int, key: str) -> None:
    """The selectbox's callback: store the chosen view, or say why not (nothing else changes)."""
    wanted = str(st.session_state.get(key) or FROM_HEADER)
    try:
        with unit_of_work(workspace().sessions) as session:
            me = session.get(m.User, user.id)
            if me is None:
                raise PermissionDenied("your account no longer exists; sign in again")
            fv.set_film_view(session, me, study_id, wanted)
    except (InputError, PermissionDenied, NotFound) as exc:
        st.session_state[_NOTICE] = ("error", f"The view was not saved: {exc}")
        return
    st.session_state[_NOTICE] = ("success", f"View set to {wanted}" if wanted
                                 else "View: the header's again")


def film_view_panel(view: StudyView, user: SignedInUser, *, key: str) -> None:
    """The film's description line; for those who may, a "View" choice beside it."""
    study_id = view.info.study_id
    set_view, may = _state(user, study_id)
    header = str(view.image.meta.get("view", "unknown"))
    line = describe(view.image.meta, set_view.view if set_view else "",
                    set_view.set_by if set_view else "")
    if not may:
        st.caption(line)
        return
    text, choice = st.columns([5, 1.4], vertical_alignment="center")
    text.caption(line)
    widget = f"{key}_{study_id}"
    options = [FROM_HEADER, *fv.FILM_VIEWS]
    current = set_view.view if set_view else FROM_HEADER
    if widget not in st.session_state:
        st.session_state[widget] = current
    choice.selectbox("View", options, key=widget, on_change=_save, args=(user, study_id, widget),
                     format_func=lambda v: v or f"header's ({header})",
                     help="Lateral, AP or PA, when the header says none or says wrong; every "
                          "change is in the audit log")
    notice = st.session_state.pop(_NOTICE, None)
    if notice is not None:
        (st.error if notice[0] == "error" else st.toast)(notice[1])
