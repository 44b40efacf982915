"""Agreement on radiographs: for every pair of readers of a film, how well their vertebra boxes
overlap (box IoU of the boxes matched by position) and how often they gave the same label, and
whether one labelling is shifted by one level (:func:`db.film_reading.film_agreement`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db import film_reading as fr
from db import models as m
from db.session import unit_of_work
from pages.parts.common import SignedInUser, workspace


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def film_agreement_panel(user: SignedInUser) -> None:
    """The table of reader pairs on films (nothing to show: a line saying so)."""
    st.subheader("Radiographs: vertebra boxes and labels")
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        rows = fr.film_agreement(session, me) if me is not None else []
    if not rows:
        st.info("No radiograph has two submitted readers yet.")
        return
    st.caption("Boxes of two readers are matched by position (IoU ≥ 0.3); the box overlap is the "
               "mean IoU of the matched boxes, the label agreement the share of them with the "
               "same label. A labelling shifted by one level goes to the committee as one dispute.")
    st.dataframe(pd.DataFrame([{
        "study": uid, "reader A": c.reader_a, "reader B": c.reader_b,
        "matched vertebrae": len(c.pairs), "unmatched (A / B)": f"{c.unmatched_a} / {c.unmatched_b}",
        "box overlap (IoU)": "—" if c.mean_iou is None else f"{c.mean_iou:.2f}",
        "same label": _percent(c.label_agreement),
        "labelling": c.describe() or "not shifted",
    } for uid, c in rows]), hide_index=True, key="agreement_films")
