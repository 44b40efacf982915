"""The Models page's training panel: the database's last training job (``spine train --queue``,
run by a ``spine worker``), its progress read from its row (:mod:`db.training_jobs`), and for those
who may run the models a stop button, and a resume button once it was stopped or failed."""

from __future__ import annotations

import streamlit as st

from db import training_jobs
from db.training_jobs import TrainingSnapshot
from pages.parts.common import current_user, workspace
from spine_core.errors import ConflictError, NotFound
from spine_core.roles import Permission, can

#: Lines of the training's output shown under the panel.
SHOW_LINES = 12


def _show(snap: TrainingSnapshot) -> None:
    who = (f"queued by {snap.owner} {snap.started_at:%Y-%m-%d %H:%M} UTC · "
           f"`spine train {' '.join(snap.params)}`")
    if snap.status == "running":
        st.progress(snap.fraction, text=snap.summary())
    elif snap.error:
        st.error(snap.summary())
    elif snap.stopped:
        st.warning(snap.summary())
    elif snap.queued:
        st.info(snap.summary())
    else:
        st.success(snap.summary())
    st.caption(who)
    if snap.lines:
        with st.expander("The training's last lines", expanded=False):
            st.code("\n".join(snap.lines[-SHOW_LINES:]), language=None)


def _panel() -> None:
    ws = workspace()
    snap = training_jobs.current(ws.sessions)
    if snap is None:
        return
    _show(snap)
    user = current_user()
    allowed = user is not None and can(user.role, Permission.run_predictions)
    if snap.running and allowed:
        if st.button("Stop the training", key="models_train_stop"):
            training_jobs.stop(ws.sessions, snap.job_id)
            st.rerun()
    if allowed and not snap.running and (snap.error or snap.stopped):
        if st.button("Resume the training", key="models_train_resume",
                     help="Queues it again with the same options: it goes on from its last "
                          "checkpoint (saved every minute), not from the beginning."):
            assert user is not None
            try:
                training_jobs.queue_again(ws.sessions, snap.job_id, actor=user.username)
            except (ConflictError, NotFound) as exc:
                st.warning(f"Not resumed: {exc}")
            else:
                st.rerun()
    if snap.running:
        st.session_state["models_training_seen_running"] = True
    elif st.session_state.pop("models_training_seen_running", False):
        st.rerun()  # it just ended: the whole page again (the panel stops its timer)


_live = st.fragment(run_every=2.0)(_panel)
_still = st.fragment(_panel)


def training_section() -> None:
    """The last training, if any, live while it runs."""
    snap = training_jobs.current(workspace().sessions)
    if snap is None:
        return
    st.subheader("Training")
    (_live if snap.running else _still)()
