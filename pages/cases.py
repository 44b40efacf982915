"""Case browser: studies with dataset, slices, mask, report, readers' status, disputes and
predictions; filters, search by UID, sorting and paging, all done in SQL by ``db.catalogue``.
Admins also get the PACS panel (``pages/parts/pacs_panel.py``): studies on the PACS not imported yet.

Blinding: annotators see only their own reading status, never the other readers'. Selecting a row
(or "Open") opens the study in the viewer; annotators get "Next case for me".
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from db import catalogue
from db import models as m
from db.catalogue import SORT_KEYS, CasePage, CaseRow, list_cases, next_case_for
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.pacs_panel import pacs_panel
from pages.parts.viewer_parts import open_in_page
from spine_core import words
from spine_core.labels import REGIONS
from spine_core.roles import Permission, can

VIEWER_PAGE = "pages/viewer.py"
PAGE_SIZES = (25, 50, 100)
ANY = "any"
TRI_STATE: dict[str, bool | None] = {ANY: None, "yes": True, "no": False}
SORT_LABELS = {
    "imported_at": "Imported", "study_uid": "Study UID", "dataset": "Dataset",
    "status": "Status", "n_slices": "Slices", "patient_id": "Patient",
    "open_disputes": "Open disputes",
}
STATUS_LABELS = {"assigned": "assigned", "in_progress": "in progress", "submitted": "submitted"}


@st.cache_data(ttl=60, show_spinner=False)
def _datasets() -> list[str]:
    """Dataset names present in the catalogue (refreshed every minute)."""
    with workspace().sessions() as session:
        return catalogue.dataset_names(session)


@st.cache_data(ttl=60, show_spinner=False)
def _modalities() -> list[str]:
    """Modalities of the imported series (CT, CR, DX...; refreshed every minute)."""
    with workspace().sessions() as session:
        return catalogue.modality_names(session)


def readers_text(row: CaseRow, user: SignedInUser) -> str:
    """Reading status as this user may see it: annotators only their own (blinding)."""
    if can(user.role, Permission.annotate):
        mine = row.readers.get(user.username)
        return f"you: {STATUS_LABELS.get(mine, mine)}" if mine else "not assigned to you"
    if not row.readers:
        return "—"
    if can(user.role, Permission.see_all_readers):
        return ", ".join(f"{name}: {STATUS_LABELS.get(s, s)}" for name, s in row.readers.items())
    done = sum(1 for s in row.readers.values() if s == "submitted")
    return f"{done}/{len(row.readers)} submitted"


def _to_first_page() -> None:
    st.session_state["cases_page"] = 1


def _filters(user: SignedInUser) -> dict[str, Any]:
    """The filter widgets; returns list_cases keyword arguments."""
    c1, c2, c3, c4, c5, c6 = st.columns([3, 1.2, 1.2, 1, 1, 1])
    search = c1.text_input("Search", key="cases_search", on_change=_to_first_page,
                           placeholder="Study UID, patient id or description")
    dataset = c2.selectbox("Dataset", [ANY, *_datasets()], key="cases_dataset",
                           on_change=_to_first_page)
    status = c3.selectbox("Status", [ANY, *(s.value for s in m.StudyStatus)],
                          key="cases_status", on_change=_to_first_page,
                          format_func=lambda s: s.replace("_", " "))
    mask = c4.selectbox("Mask", list(TRI_STATE), key="cases_mask", on_change=_to_first_page)
    disputes = c5.selectbox("Open disputes", list(TRI_STATE), key="cases_disputes",
                            on_change=_to_first_page)
    predictions = c6.selectbox("Prediction", list(TRI_STATE), key="cases_predictions",
                               on_change=_to_first_page)
    d1, d2, d3, d4, d7, d5, d6 = st.columns([2, 1, 1, 1.2, 1, 1.3, 2])
    sort = d1.selectbox("Sort by", SORT_KEYS, key="cases_sort", format_func=SORT_LABELS.get,
                        on_change=_to_first_page)
    descending = d2.toggle("Descending", value=True, key="cases_desc", on_change=_to_first_page)
    page_size = d3.selectbox("Per page", PAGE_SIZES, index=1, key="cases_page_size",
                             on_change=_to_first_page)
    region = d4.selectbox("Region", [ANY, *REGIONS], key="cases_region", on_change=_to_first_page,
                          help="The part of the spine the study's vertebra mask covers")
    modality = d7.selectbox("Modality", [ANY, *_modalities()], key="cases_modality",
                            on_change=_to_first_page,
                            help="CT volumes, or radiographs (CR, DX; OT for PNG/JPEG images)")
    graded = False
    if can(user.role, Permission.see_all_readers):  # readers are blinded to each other's grades
        graded = d5.toggle("Has grade ≥ 2", key="cases_grade2", on_change=_to_first_page,
                           help="A reader or the dataset graded some vertebra Genant 2 or 3")
    mine_only = False
    if can(user.role, Permission.annotate):
        mine_only = d6.toggle("Only studies assigned to me", value=True, key="cases_mine",
                              on_change=_to_first_page)
    return {
        "search": search,
        "dataset": None if dataset == ANY else dataset,
        "status": None if status == ANY else status,
        "has_mask": TRI_STATE[mask],
        "has_disputes": TRI_STATE[disputes],
        "has_predictions": TRI_STATE[predictions],
        "reader_id": user.id if mine_only else None,
        "region": None if region == ANY else region,
        "min_grade": 2 if graded else None,
        "modality": None if modality == ANY else modality,
        "sort": sort,
        "descending": descending,
        "page_size": int(page_size),
    }


def _table(page: CasePage, user: SignedInUser) -> list[dict[str, Any]]:
    return [
        {
            "Study UID": r.study_uid,
            "Dataset": r.dataset,
            "Modality": r.modality,
            "Status": words.in_words(words.STUDY_STATUSES, r.status),
            "Slices": r.n_slices,
            "Mask": "yes" if r.has_mask else "no",
            "Report": r.report_summary,
            "Disputes": r.open_disputes,
            "Prediction": "yes" if r.has_prediction else "no",
            "Readers": readers_text(r, user),
            "Patient": r.patient_id,
        }
        for r in page.rows
    ]


def _refresh_choices() -> None:
    _datasets.clear()
    _modalities.clear()


def _next_case(user: SignedInUser) -> None:
    with workspace().sessions() as session:
        study = next_case_for(session, user.id)
        study_id = study.id if study is not None else None
    if study_id is None:
        st.session_state["cases_flash"] = ("Nothing left to read: every study assigned to you "
                                           "is submitted.")
        return
    open_in_page(study_id, VIEWER_PAGE)


def main(user: SignedInUser) -> None:
    st.title("Cases")
    if can(user.role, Permission.annotate):
        if st.button("Next case for me", type="primary", key="cases_next"):
            _next_case(user)
        flash = st.session_state.pop("cases_flash", None)
        if flash:
            st.info(flash)
    pacs_panel(user, on_imported=_refresh_choices)
    query = _filters(user)
    page_number = int(st.session_state.get("cases_page", 1))
    with workspace().sessions() as session:
        page = list_cases(session, page=max(page_number, 1) - 1, **query)
        if page_number > page.n_pages:  # the filters shrank the list under us
            page_number = page.n_pages
            st.session_state["cases_page"] = page_number
            page = list_cases(session, page=page_number - 1, **query)
    first = (page_number - 1) * page.page_size + 1
    if page.total == 0:
        st.info("No study matches these filters.")
        return
    last = first + len(page.rows) - 1
    st.caption(f"Studies {first}–{last} of {page.total}. Select a row to open it in the viewer.")
    event = st.dataframe(
        _table(page, user), hide_index=True, width="stretch", key="cases_table",
        on_select="rerun", selection_mode="single-row",
        column_config={
            "Study UID": st.column_config.TextColumn(width="medium"),
            "Slices": st.column_config.NumberColumn(width="small"),
            "Disputes": st.column_config.NumberColumn(width="small", help="Open disputes"),
        },
    )
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows and 0 <= rows[0] < len(page.rows):
        open_in_page(page.rows[rows[0]].study_id, VIEWER_PAGE)
    p1, p2, p3 = st.columns([1, 2, 2], vertical_alignment="bottom")
    st.session_state["cases_page"] = page_number
    p1.number_input(f"Page (of {page.n_pages})", min_value=1, max_value=page.n_pages, step=1,
                    key="cases_page")
    uids = {r.study_id: r.study_uid for r in page.rows}
    chosen = p2.selectbox("Study", list(uids), format_func=uids.get, key="cases_open_choice")
    if p3.button("Open in viewer", key="cases_open") and chosen is not None:
        open_in_page(int(chosen), VIEWER_PAGE)


signed_in = require_permission()
with error_boundary("The case list"):
    main(signed_in)
