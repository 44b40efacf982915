"""The case browser's PACS panel (admins): the studies on the configured PACS that are not imported
yet, and the import of chosen ones as a background job.

Everything PACS goes through :mod:`db.pacs` and :mod:`db.pacs_jobs`; this module only shows it.
"Import N selected" starts a PACS import job (in a thread of the app, or queued for a ``spine
worker`` with ``SPINE_WORKER=external``) and the panel shows its progress read from the job's
row, redrawn every :data:`POLL_S` while it runs; when it ends, one line per study (a failed one
named, the others imported) and the case list refreshed. One import at a time: a second admin is
told who is importing. An import whose worker died is shown failed with the reason and a Retry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import streamlit as st

from db import pacs_jobs
from db.pacs import LIST_LIMIT, PacsStudyRow, list_pacs_studies
from db.pacs_jobs import PacsSnapshot
from pages.parts.common import SignedInUser, workspace
from spine_core.errors import SpineError
from spine_core.roles import Permission, can

NOT_CONFIGURED = ("No PACS is configured: set SPINE_DICOMWEB_URL (e.g. http://pacs:8042/dicom-web) "
                  "and SPINE_DICOMWEB_USER with SPINE_DICOMWEB_PASSWORD, or SPINE_DICOMWEB_TOKEN, "
                  "in the app's environment, then restart it.")
ROWS = "pacs_rows"  # list[PacsStudyRow] | str (the listing's error) | absent (not listed yet)
RESULTS = "pacs_results"  # list[(ok, line)] of the last import, shown once
GENERATION = "pacs_generation"  # new table (selection cleared) after each listing
JOB = "pacs_job"  # the id of the import this session started (its results are shown once)
SEEN = "pacs_job_seen"  # the id of the last import whose results were shown
PROBLEM = "pacs_problem"  # why the import could not start (one line), shown once
#: Seconds between two looks at a running import's row.
POLL_S = 1.5


def study_table(rows: list[PacsStudyRow]) -> list[dict[str, Any]]:
    """The rows as the table shows them."""
    return [
        {
            "Patient": r.patient_id,
            "Study date": _date(r.study_date),
            "Description": r.description,
            "Modalities": r.modalities,
            "Series": r.n_series,
            "Instances": r.n_instances,
            "Study UID": r.study_uid,
        }
        for r in rows
    ]


def _date(value: str) -> str:
    """DICOM ``YYYYMMDD`` as ``YYYY-MM-DD`` (anything else as it came)."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _list() -> None:
    """Ask the PACS for its studies not imported yet (narrowed by the panel's patient and date);
    a failure is kept as its one line."""
    patient = str(st.session_state.get("pacs_patient") or "").strip()
    since = st.session_state.get("pacs_since")
    try:
        st.session_state[ROWS] = list_pacs_studies(workspace(), only_new=True, patient_id=patient or None,
                                                   since=since)
    except SpineError as exc:
        st.session_state[ROWS] = " ".join(str(exc).split())
    st.session_state[GENERATION] = int(st.session_state.get(GENERATION, 0)) + 1


def _start(uids: list[str], actor: str) -> None:
    """Start importing ``uids`` (a button callback); a refusal is kept as one line."""
    try:
        st.session_state[JOB] = pacs_jobs.submit(workspace(), uids, actor=actor)
    except SpineError as exc:
        st.session_state[PROBLEM] = " ".join(str(exc).split())


def _retry(actor: str) -> None:
    """Run the last import again (a button callback)."""
    try:
        st.session_state[JOB] = pacs_jobs.retry(workspace(), actor=actor)
    except SpineError as exc:
        st.session_state[PROBLEM] = " ".join(str(exc).split())


def _stop(job_id: int) -> None:
    try:
        pacs_jobs.stop(workspace(), job_id)
    except SpineError as exc:
        st.session_state[PROBLEM] = " ".join(str(exc).split())


def _progress_text(snap: PacsSnapshot) -> str:
    if snap.queued:
        return (f"Import of {snap.total} studies asked by {snap.owner}: waiting for a worker "
                "(spine worker) to start it…")
    return (f"Importing from the PACS, asked by {snap.owner}: {snap.done} of {snap.total} studies "
            f"done ({snap.message})")


@st.fragment(run_every=POLL_S)
def _live(job_id: int) -> None:
    """The running import's progress from its row; the whole page reruns when it ends."""
    snap = pacs_jobs.current(workspace().sessions)
    if snap is None or snap.job_id != job_id or not snap.running:
        st.rerun(scope="app")
    assert snap is not None
    st.progress(snap.fraction, text=_progress_text(snap))
    for line in snap.lines:
        (st.error if line.startswith("failed ") else st.success)(line)
    st.button("Stop the import", key="pacs_stop", on_click=_stop, args=(job_id,),
              help="Stops after the study under way; the studies imported so far stay")


def _ended(snap: PacsSnapshot, on_imported: Callable[[], None] | None) -> None:
    """This session's import has ended: keep its lines to show, list the PACS again, refresh."""
    st.session_state[SEEN] = snap.job_id
    lines = [(not line.startswith("failed "), line) for line in snap.lines]
    if snap.stopped:
        lines.append((False, f"the import stopped: {snap.stopped}"))
    st.session_state[RESULTS] = lines
    _list()
    if on_imported is not None:
        on_imported()
    st.rerun()


def pacs_panel(user: SignedInUser, on_imported: Callable[[], None] | None = None) -> None:
    """The panel, for users who may import studies (nothing for the others)."""
    if not can(user.role, Permission.import_studies):
        return
    url = workspace().settings.dicomweb_url
    job = pacs_jobs.current(workspace().sessions) if url else None
    mine = job is not None and job.job_id == st.session_state.get(JOB)
    if (job is not None and mine and not job.running
            and st.session_state.get(SEEN) != job.job_id):
        _ended(job, on_imported)
    results: list[tuple[bool, str]] = st.session_state.pop(RESULTS, [])
    problem = st.session_state.pop(PROBLEM, None)
    listed = ROWS in st.session_state
    busy = job is not None and job.running
    failed = job is not None and job.status == "failed" and bool(job.error)
    with st.expander("Import from the PACS",
                     expanded=listed or bool(results) or bool(problem) or busy or failed):
        if not url:
            st.caption(NOT_CONFIGURED)
            return
        if problem:
            st.error(problem)
        if job is not None and busy:
            _live(job.job_id)
        elif job is not None and failed:
            st.error(f"The PACS import asked by {job.owner} failed: {job.error}")
            st.button("Retry the import", key="pacs_retry", on_click=_retry, args=(user.username,),
                      help="Imports the same studies again; those already imported are skipped")
        for ok, line in results:
            (st.success if ok else st.error)(line)
        c1, c2, c3 = st.columns([2, 2, 2], vertical_alignment="bottom")
        c1.text_input("Patient ID", key="pacs_patient", placeholder="any")
        c2.date_input("Studies since", value=None, key="pacs_since", format="YYYY-MM-DD",
                      min_value=dt.date(1900, 1, 1), max_value=dt.date.today())
        c3.button("Refresh the list" if listed else "List studies on the PACS", key="pacs_list",
                  on_click=_list)
        st.caption(f"Studies on {url} not imported yet, newest first (the PACS is asked for "
                   f"{LIST_LIMIT} at most: narrow by patient or date).")
        rows = st.session_state.get(ROWS)
        if rows is None:
            return
        if isinstance(rows, str):
            st.error(rows)
            return
        if not rows:
            narrowed = st.session_state.get("pacs_patient") or st.session_state.get("pacs_since")
            st.info("No study on the PACS matching the patient and date is left to import."
                    if narrowed else "Every study on the PACS is imported.")
            return
        event = st.dataframe(study_table(rows), hide_index=True, width="stretch",
                             key=f"pacs_table_{st.session_state.get(GENERATION, 0)}",
                             on_select="rerun", selection_mode="multi-row")
        picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        chosen = [rows[i] for i in picked if 0 <= i < len(rows)]
        label = f"Import {len(chosen)} selected" if chosen else "Select studies to import"
        st.button(label, key="pacs_import", type="primary", disabled=not chosen or busy,
                  on_click=_start, args=([r.study_uid for r in chosen], user.username))
