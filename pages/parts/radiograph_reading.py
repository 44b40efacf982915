"""The reader's vertebra table below a radiograph: each of their boxes is one vertebra, with its
label, an optional Genant grade and the reference-vertebra mark (C2 on a cervical film, S1 on a
lumbar film).

Thin: :mod:`db.film_reading` checks and stores each change against the box's version (a stale
tab is told, nothing overwritten) and audits it; the reader sees only their own boxes. On a film
the table stands in for the CT's level calls, and :func:`film_submit_button` submits through
:mod:`db.film_submit` (every box labelled, no label twice; no reference: asked to confirm).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import streamlit as st

from db import film_reading as fr
from db import film_submit as fs
from db import models as m
from db.session import unit_of_work
from pages.parts.common import SignedInUser, workspace
from spine_core import words
from spine_core.film_labels import FILM_LEVELS, shown_level

Write = Callable[[SignedInUser, int, Callable[[Any, m.User], object], str | None], bool]

NO_LABEL = "—"
NO_GRADE = -1
LABELS: tuple[str, ...] = (NO_LABEL, *FILM_LEVELS)
GRADES: tuple[int, ...] = (NO_GRADE, *words.GRADE_WORDS)


def _grade_words(grade: int) -> str:
    return "not graded" if grade == NO_GRADE else f"grade {words.GRADE_WORDS[grade]}"


def _label_words(level: str) -> str:
    return "no label yet" if level == NO_LABEL else shown_level(level)


def _load(user: SignedInUser, study_id: int) -> tuple[bool, list[fr.FilmBox]]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        if not fr.is_film_study(session, study_id):
            return False, []
        me = session.get(m.User, user.id)
        return True, fr.film_boxes(session, me, study_id) if me is not None else []


def film_reading_table(user: SignedInUser, study_id: int, editable: bool, write: Write) -> bool:
    """The table of the reader's vertebra boxes on a radiograph (nothing on a CT); True on a
    film."""
    is_film, boxes = _load(user, study_id)
    if not is_film:
        return False
    text, update = st.columns([6, 1.3], vertical_alignment="center")
    text.markdown("**Vertebrae on this film** — each box is one vertebra: give its label, counted "
                  "from the reference vertebra (C2 on a cervical film, S1 on a lumbar film)")
    update.button("Update the list", key=f"film_update_{study_id}", width="stretch",
                  help="Show the boxes drawn since the list was last shown")  # a click reruns
    if not boxes:
        st.caption("Press B (box tool) and drag a box around each vertebra body; each box then "
                   "appears here to be labelled.")
        return True
    head = st.columns([2.2, 2, 2.4, 1.4], vertical_alignment="bottom")
    for col, text in zip(head, ("Box (head to feet)", "Vertebra", "Genant grade", "Reference")):
        col.caption(text)
    for n, box in enumerate(boxes, start=1):
        _row(user, study_id, n, box, editable, write)
    labels = Counter(b.level for b in boxes if b.level)
    twice = [shown_level(lvl) for lvl, k in labels.items() if k > 1]
    missing = sum(b.level is None for b in boxes)
    if twice:
        st.warning(f"More than one box is labelled {', '.join(twice)}: each vertebra has one box.")
    if missing:
        st.caption(f"{missing} box{'es have' if missing > 1 else ' has'} no label yet.")
    if not any(b.is_reference for b in boxes):
        st.caption("No reference vertebra marked yet (tick C2 or S1).")
    return True


def film_submit_button(user: SignedInUser, study_id: int, write: Write) -> None:
    """Submit a film: refused while a box has no label or a label is used twice (the reason is
    shown), 'Submit anyway' when no reference vertebra is marked."""
    with unit_of_work(workspace().sessions, readonly=True) as session:
        me = session.get(m.User, user.id)
        check = fs.film_submit_check(session, me, study_id) if me is not None else None
    if check is None:
        return
    if check.refused:
        st.warning(f"Before you submit: {check.refused}. Give each vertebra box its own label in "
                   "the table above.")
    elif check.to_confirm:
        st.warning(f"Before you submit: {check.to_confirm}. Mark it in the table above, or "
                   "submit anyway.")
    confirm = bool(check.to_confirm) and not check.refused
    if st.button("Submit anyway" if confirm else "Submit study", type="primary",
                 key=f"film_submit_{study_id}", disabled=bool(check.refused),
                 help="You can reopen it until adjudication starts"):
        if write(user, study_id, lambda s, me: fs.submit_film(s, me, study_id, confirm=confirm),
                 "Film submitted"):
            st.rerun()


def _row(user: SignedInUser, study_id: int, n: int, box: fr.FilmBox, editable: bool,
         write: Write) -> None:
    stem = f"film_{box.id}_{box.version}"
    keys = {"label": f"{stem}_label", "grade": f"{stem}_grade", "ref": f"{stem}_ref"}

    def save() -> None:
        level = st.session_state.get(keys["label"], NO_LABEL)
        grade = st.session_state.get(keys["grade"], NO_GRADE)
        reference = bool(st.session_state.get(keys["ref"], False))
        chosen = None if level == NO_LABEL else str(level)
        graded = None if grade == NO_GRADE else int(grade)
        done = f"Box {n}: {_label_words(level)}" + (f", {_grade_words(grade)}" if graded is not None
                                                       else "") + (", reference" if reference else "")
        write(user, study_id, lambda session, me: fr.save_film_label(
            session, me, box.id, box.version, chosen, graded, reference), done)

    name, label, grade, ref = st.columns([2.2, 2, 2.4, 1.4], vertical_alignment="center")
    name.markdown(f"**Box {n}** · {box.width:.0f}×{box.height:.0f} px at ({box.x:.0f}, {box.y:.0f})")
    level = box.level if box.level in LABELS else NO_LABEL
    label.selectbox(f"Vertebra of box {n}", LABELS, index=LABELS.index(level), key=keys["label"],
                    format_func=_label_words, on_change=save, disabled=not editable,
                    label_visibility="collapsed")
    given = box.grade if box.grade in GRADES else NO_GRADE
    grade.selectbox(f"Genant grade of box {n}", GRADES, index=GRADES.index(given),
                    key=keys["grade"], format_func=_grade_words, on_change=save,
                    disabled=not editable, label_visibility="collapsed")
    ref.checkbox(f"Reference (box {n})", value=box.is_reference, key=keys["ref"], on_change=save,
                 disabled=not editable, label_visibility="collapsed",
                 help="The vertebra you counted from: C2 on a cervical film, S1 on a lumbar film")
