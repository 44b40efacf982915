"""The reader's numbering of the study: "the vertebra labelled L5 is L6", "T13 present".

Thin: :mod:`db.relabel` checks and stores the renumbering (versioned, audited); the mask itself is
never changed, and the reader's work carries the reader's names in exports and for the committee.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from db import models as m
from db import relabel as rl
from db.session import unit_of_work
from pages.parts.common import SignedInUser, workspace
from spine_core.relabel import FIXED

#: Names a reader can give a vertebra, head to feet (T13 and L6 are the transitional ones).
READER_NAMES: tuple[str, ...] = (*(f"C{i}" for i in range(1, 8)), *(f"T{i}" for i in range(1, 14)),
                                 *(f"L{i}" for i in range(1, 7)))

Write = Callable[[SignedInUser, int, Callable[[Any, m.User], object], str | None], bool]


def own_relabel(user: SignedInUser, study_id: int) -> rl.Relabelling:
    """The signed-in reader's renumbering of the study (empty when they count as the mask does)."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        return rl.relabel_of(session, me, study_id) if me is not None else rl.Relabelling()


def describe(relabel: rl.Relabelling) -> str:
    """"labelled L1 is T13 (L1 → T13, L2 → L1, …)", or that the mask's numbering stands."""
    if not relabel.mapping:
        return "You count the vertebrae as the mask labels them."
    pairs = ", ".join(f"{a} → {b}" for a, b in relabel.mapping.items())
    rule = relabel.rule
    said = f"the vertebra labelled {rule['at']} is {rule['says']}: " if rule.get("at") else ""
    return f"Your numbering: {said}{pairs}."


def relabel_panel(user: SignedInUser, study_id: int, mask_levels: Sequence[str], editable: bool,
                  write: Write) -> rl.Relabelling:
    """The renumbering control; returns the reader's renumbering as stored."""
    relabel = own_relabel(user, study_id)
    levels = [lvl for lvl in READER_NAMES if lvl in set(mask_levels) and lvl not in FIXED]
    title = "Numbering: a mislabelled or transitional vertebra (T13, L6)"
    with st.expander(title, expanded=bool(relabel.mapping)):
        st.caption(describe(relabel))
        if not levels:
            st.caption("This study has no vertebra mask, so there is no numbering to correct.")
            return relabel
        if not editable:
            return relabel
        at_col, says_col, save_col = st.columns([3, 3, 2], vertical_alignment="bottom")
        at = at_col.selectbox("The vertebra labelled", levels, key=f"relabel_at_{study_id}",
                              index=levels.index(relabel.rule["at"])
                              if relabel.rule.get("at") in levels else len(levels) - 1)
        says = says_col.selectbox("is", READER_NAMES, key=f"relabel_says_{study_id}",
                                  index=READER_NAMES.index(relabel.rule["says"])
                                  if relabel.rule.get("says") in READER_NAMES
                                  else READER_NAMES.index(at))
        version = relabel.version or None
        if save_col.button("Renumber", key=f"relabel_save_{study_id}",
                           help="The vertebrae below it follow, so the count stays consecutive"):
            if write(user, study_id, lambda s, me: rl.set_relabel(
                    s, me, study_id, at=at, says=says, expected_version=version),
                    f"Renumbered: the vertebra labelled {at} is {says}"):
                st.rerun()
        if relabel.mapping and st.button("Count as the mask does", key=f"relabel_clear_{study_id}"):
            if write(user, study_id, lambda s, me: rl.set_relabel(
                    s, me, study_id, mapping={}, expected_version=version),
                    "Your renumbering was cleared"):
                st.rerun()
    return relabel
