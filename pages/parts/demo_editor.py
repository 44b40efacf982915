"""The administrators' editor of the demonstration's case list: add a case (study, title, note,
level that matters), edit it, move it up or down, take it off. Every change goes to
:mod:`db.demo_cases`, which checks the role and writes the audit trail."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from db import demo_cases as store
from db.demo_cases import DemoCaseRow
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, workspace
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_NAMES

MAX_STUDIES = 500
LEVELS: tuple[str | None, ...] = (None, *(LEVEL_NAMES[i] for i in CRANIOCAUDAL_ORDER))


def _studies() -> dict[int, str]:
    """Studies with images, named without their 64-character UIDs."""
    from db.catalogue import list_cases

    with workspace().sessions() as session:
        page = list_cases(session, sort="study_uid", descending=False, page_size=MAX_STUDIES)
    return {r.study_id: " · ".join(p for p in (
        r.dataset, f"…{r.study_uid[-8:]}", r.description[:40], r.report_summary,
        "predicted" if r.has_prediction else "") if p) for r in page.rows if r.n_slices > 0}


def _apply(what: str, change: Callable[..., object], *args: object, **kwargs: object) -> None:
    with error_boundary(what):
        with unit_of_work(workspace().sessions) as session:
            change(session, *args, **kwargs)
        st.session_state["demo_flash"] = f"{what}: done."
        st.rerun()


def _add(user: SignedInUser) -> None:
    studies = _studies()
    if not studies:
        st.info("No study with images yet: import a dataset first.")
        return
    with st.form("demo_add", clear_on_submit=True):
        st.markdown("**Add a case**")
        c1, c2 = st.columns([3, 1])
        study = c1.selectbox("Study", list(studies), format_func=studies.get, key="demo_add_study")
        level = c2.selectbox("Level that matters", LEVELS, key="demo_add_level",
                             format_func=lambda v: "the whole spine" if v is None else v)
        title = st.text_input("Title", placeholder="C2 fracture the report missed",
                              key="demo_add_title")
        note = st.text_area("Note", key="demo_add_note", height=80,
                            placeholder="What to look at, in a sentence or two")
        if st.form_submit_button("Add the case", type="primary"):
            _apply("Adding the case", store.add_case, user, study, title, note, level)


def _row(user: SignedInUser, n: int, case: DemoCaseRow, count: int) -> None:
    assert case.id is not None
    with st.container(border=True):
        top = st.container(horizontal=True, vertical_alignment="center")
        top.markdown(f"**{n + 1}. {case.title}** · {case.short_name}"
                     + (f" · {case.level}" if case.level else ""))
        if top.button("Up", key=f"demo_up_{case.id}", disabled=n == 0):
            _apply("Moving the case", store.move_case, user, case.id, -1)
        if top.button("Down", key=f"demo_down_{case.id}", disabled=n == count - 1):
            _apply("Moving the case", store.move_case, user, case.id, 1)
        if top.button("Remove", key=f"demo_remove_{case.id}"):
            _apply("Removing the case", store.remove_case, user, case.id)
        with st.expander("Edit"), st.form(f"demo_edit_{case.id}"):
            title = st.text_input("Title", case.title, key=f"demo_title_{case.id}")
            level = st.selectbox("Level that matters", LEVELS, index=LEVELS.index(case.level),
                                 key=f"demo_level_{case.id}",
                                 format_func=lambda v: "the whole spine" if v is None else v)
            note = st.text_area("Note", case.note, key=f"demo_note_{case.id}", height=80)
            if st.form_submit_button("Save the case"):
                _apply("Saving the case", store.edit_case, user, case.id, title=title, note=note,
                       level=level, version=case.version)


def case_list_editor(user: SignedInUser, cases: list[DemoCaseRow]) -> None:
    """The curated list with its controls; ``cases`` empty when no list exists yet."""
    flash = st.session_state.pop("demo_flash", None)
    if flash:
        st.success(flash)
    if not cases:
        st.caption("No curated list yet: the page shows the studies with predictions. The first "
                   "case added here replaces that list.")
    for n, case in enumerate(cases):
        _row(user, n, case, len(cases))
    _add(user)
