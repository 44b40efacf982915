"""Admin: assign studies to readers — balanced (e.g. 3 readers per study, least-loaded first) or
by hand — and see every reader's queue and progress.

Thin: ``db.annotations`` checks roles, assigns, and writes the audit trail.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db import annotations as ann
from db import catalogue
from db import models as m
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from spine_core import words
from spine_core.roles import Permission

FLASH = "assign_flash"


def _studies() -> list[tuple[int, str, str, int]]:
    """(id, uid, status, number of readers) of every study, fewest readers first."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        return catalogue.studies_by_readers(session)


def _readers() -> dict[int, str]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        return {u.id: u.username for u in ann.active_annotators(session)}


def _balanced(user: SignedInUser, studies: list[tuple[int, str, str, int]],
              readers: dict[int, str]) -> None:
    st.subheader("Balanced assignment")
    st.caption("Each chosen study gets readers until it has the number asked; the readers with "
               "the fewest assignments are chosen first. Readers already on a study stay.")
    labels = {i: f"{uid} · {status} · {n} reader(s)" for i, uid, status, n in studies}
    with st.form("assign_balanced_form"):
        per_study = st.number_input("Readers per study", min_value=1,
                                    max_value=max(1, len(readers)),
                                    value=min(3, max(1, len(readers))), step=1)
        chosen = st.multiselect("Studies", list(labels), format_func=labels.__getitem__,
                                default=[i for i, _, _, n in studies if n == 0],
                                help="Studies without readers are chosen to start with")
        pool = st.multiselect("Readers", list(readers), format_func=readers.__getitem__,
                              default=list(readers))
        go = st.form_submit_button("Assign balanced", type="primary")
    if not go:
        return
    if not chosen or not pool:
        st.warning("Choose at least one study and one reader.")
        return
    with unit_of_work(workspace().sessions) as session:
        admin = session.get(m.User, user.id)
        result = ann.assign_balanced(session, admin, chosen, pool, per_study=int(per_study))
    added = sum(len(v) for v in result.values())
    st.session_state[FLASH] = f"{added} assignment(s) made on {len(result)} study(ies)."
    st.rerun()


def _by_hand(user: SignedInUser, studies: list[tuple[int, str, str, int]],
             readers: dict[int, str]) -> None:
    st.subheader("Assign by hand")
    labels = {i: f"{uid} · {status}" for i, uid, status, _ in studies}
    with st.form("assign_manual_form", clear_on_submit=True):
        study = st.selectbox("Study", list(labels), format_func=labels.__getitem__)
        chosen = st.multiselect("Readers", list(readers), format_func=readers.__getitem__)
        go = st.form_submit_button("Assign readers")
    if not go:
        return
    if study is None or not chosen:
        st.warning("Choose a study and at least one reader.")
        return
    with unit_of_work(workspace().sessions) as session:
        admin = session.get(m.User, user.id)
        added = ann.assign(session, admin, int(study), chosen)
    names = ", ".join(readers[r] for r in added) or "nobody new (already assigned)"
    st.session_state[FLASH] = f"Assigned {names}."
    st.rerun()


def _overview(user: SignedInUser) -> None:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        admin = session.get(m.User, user.id)
        rows = ann.assignment_overview(session, admin)
    st.subheader("Readers' queues")
    if not rows:
        st.info("No study is assigned yet.")
        return
    df = pd.DataFrame([{"study": r.study_uid,
                        "study status": words.in_words(words.STUDY_STATUSES, r.study_status),
                        "reader": r.reader,
                        "status": words.in_words(words.ASSIGNMENT_STATUSES, r.status),
                        "boxes": r.n_boxes, "assigned by": r.assigned_by,
                        "assigned at": r.assigned_at} for r in rows])
    load = (df.pivot_table(index="reader", columns="status", values="study", aggfunc="count",
                           fill_value=0))
    load["total"] = load.sum(axis=1)
    st.dataframe(load, width="stretch")
    reader = st.selectbox("Show the queue of", ["everyone", *sorted(df["reader"].unique())],
                          key="assign_queue_reader")
    shown = df if reader == "everyone" else df[df["reader"] == reader]
    st.dataframe(shown, hide_index=True, width="stretch")


def main() -> None:
    user = require_permission(Permission.assign_readers)
    st.title("Assignments")
    message = st.session_state.pop(FLASH, None)
    if message:
        st.success(message)
    readers = _readers()
    studies = _studies()
    if not readers:
        st.warning("There are no active annotator accounts; add readers on the Administration page.")
        return
    if not studies:
        st.info("No study is imported yet.")
        return
    left, right = st.columns(2, gap="large")
    with left:
        _balanced(user, studies, readers)
    with right:
        _by_hand(user, studies, readers)
    st.divider()
    _overview(user)


with error_boundary("The assignment page"):
    main()
