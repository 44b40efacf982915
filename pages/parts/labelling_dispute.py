"""The committee's view of a labelling dispute on a radiograph: one reader's vertebra labels are
shifted by one level against another's. Shows the film with every reader's boxes and labels, the
labels side by side, and lets the committee decide whose labelling is right.

Thin: the rules and the audit trail are :mod:`db.film_disputes`; the boxes come from
:mod:`db.film_reading` (adjudicators see every reader's boxes).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from db import dispute_queries as views
from db import film_disputes as fd
from db import film_reading as fr
from db import models as m
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, workspace
from spine_core import adjudication as adj
from spine_core.film_labels import shown_level

Flash = Callable[..., None]


def is_labelling_dispute(detail: views.DisputeDetail) -> bool:
    """True for a dispute on a film's vertebra labels (kind ``labelling``)."""
    return detail.kind == adj.DisputeKind.labelling.value


def on_a_film(detail: views.DisputeDetail) -> bool:
    """True when the dispute's study is a radiograph (a labelling dispute, or a film's grades)."""
    if is_labelling_dispute(detail):
        return True
    with unit_of_work(workspace().sessions, readonly=True) as session:
        return fr.is_film_study(session, detail.study_id)


def in_words(detail: views.DisputeDetail) -> str:
    """The dispute as one sentence: "reader2's labels are one level below reader1's on 4 ..."."""
    text = str(detail.details.get("sentence") or "The readers' vertebra labels are shifted")
    more = len(detail.details.get("pairs") or []) - 1
    return text + (f"; and {more} more pair(s) of readers" if more > 0 else "") + "."


def _hex(rgb: tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def film_view(user: SignedInUser, detail: views.DisputeDetail) -> None:
    """The film in the workstation with every reader's boxes, each labelled with its vertebra."""
    from pages.parts.viewer_parts import load_study
    from pages.parts.viewer_workstation import browser_limit
    from spine_core.io.radiograph import viewer_options
    from spine_viewer import ViewerBox, ViewerSource, workstation

    ws = workspace()
    with unit_of_work(ws.sessions, readonly=True) as session:
        viewer = session.get(m.User, user.id)
        boxes = fr.film_boxes(session, viewer, detail.study_id) if viewer is not None else []
    colours = {r: _hex(tuple(c)) for r, c in detail.reader_colours.items()}
    shown = [ViewerBox(f"reader-{b.id}", 0, 0, b.x, b.y, b.x + b.width, b.y + b.height,
                       kind="other reader", level=b.level or "",
                       label=f"{b.reader}: {shown_level(b.level) if b.level else 'no label'}",
                       reader=b.reader, colour=colours.get(b.reader, "#ffcc00"), editable=False)
             for b in boxes]
    st.markdown(" ".join(f"<span style='border:3px solid {c};padding:0 6px'>{r}</span>"
                         for r, c in colours.items()), unsafe_allow_html=True)
    study = load_study(detail.study_id)
    workstation(f"{study.info.series_uid}:{study.fingerprint}:{study.mask_id}",
                lambda: ViewerSource(study.image, study.mask), key="adjudicate_film_viewer",
                layout="single", plane="axial", slice=0,
                boxes=shown, large_labels=True,
                editable=False, height=560, max_browser_bytes=browser_limit(),
                **viewer_options(study.image))


def sides(detail: views.DisputeDetail) -> None:
    """Each shifted pair of readers: their labels of the same vertebrae side by side."""
    for pair in detail.details.get("pairs") or []:
        a, b = str(pair.get("reader_a")), str(pair.get("reader_b"))
        st.markdown(f"**{a} and {b}** — {pair.get('shifted')} of {pair.get('matched')} matched "
                    f"vertebrae shifted; mean box overlap (IoU) {pair.get('mean_iou')}")
        st.table([{"vertebra (head to feet)": n, a: la, b: lb}
                  for n, (la, lb) in enumerate(pair.get("labels") or [], start=1)])


def history(detail: views.DisputeDetail) -> None:
    """The committee's decisions on the labelling, and any reopening."""
    for d in detail.decisions:
        state = "superseded" if d.superseded else "in force"
        st.markdown(f"**Decision** round {d.round} ({state}), by {d.decided_by} on "
                    f"{d.decided_at:%Y-%m-%d %H:%M} UTC: {d.reason}")
    for r in detail.details.get("reopened", []):
        st.caption(f"Reopened by {r.get('by')} for round {r.get('round')}: {r.get('reason')}")
    if not detail.decisions:
        st.caption("Not decided yet.")


def decide_form(user: SignedInUser, detail: views.DisputeDetail, flash: Flash) -> None:
    """Choose the reader whose labelling is right, with a reason."""
    readers = [str(r) for r in detail.details.get("readers") or []]
    if user.username in detail.study_readers:
        st.caption("You read this study, so you cannot decide its disputes.")
        return
    with st.form("labelling_decide"):
        chosen = st.radio("Whose labelling is right?", readers, key="labelling_choice",
                          horizontal=True, format_func=lambda r: f"{r}'s labels")
        reason = st.text_area("Reason (required)", key="labelling_reason",
                              placeholder="e.g. C2 counted from the dens")
        if st.form_submit_button("Decide the labelling", type="primary"):
            with error_boundary("Deciding the labelling"):
                with unit_of_work(workspace().sessions) as session:
                    fd.decide_labelling(session, user, detail.dispute_id, str(chosen), reason)
                flash(f"Decided: {chosen}'s labelling is right.", keep_in_view=True,
                      where="actions")
