"""The committee's view of a Genant grade dispute: each reader's grade (and the dataset's), the
grade votes and decisions in words, and the grade vote form.

Thin: the rules and the audit trail are :mod:`db.grade_disputes`; this module only shows what
:class:`db.dispute_queries.DisputeDetail` carries and sends the committee's grade vote there.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from db import dispute_queries as views
from db import grade_disputes as gd
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, workspace
from spine_core import adjudication as adj
from spine_core import words
from spine_core.errors import InputError

GRADE_WORDS = words.GRADE_WORDS
MORPHOLOGIES = ("wedge", "biconcave", "crush")
#: The committee's choices: a grade, or cannot tell.
VOTE_CHOICES: tuple[int | None, ...] = (0, 1, 2, 3, None)


def is_grade_dispute(detail: views.DisputeDetail) -> bool:
    """True for disputes on Genant grades (kind ``grades_*``)."""
    return detail.kind in adj.GRADE_KINDS


def grade_in_words(grade: int | None, morphology: str | None = None) -> str:
    """"grade 2 moderate, wedge"; "cannot tell" for None."""
    if grade is None:
        return "cannot tell"
    text = f"grade {GRADE_WORDS.get(int(grade), grade)}"
    return f"{text}, {morphology}" if morphology else text


def choice_in_words(choice: str) -> str:
    """A stored grade vote (``grade_2_wedge``, ``cannot_tell``) in words."""
    try:
        parsed = adj.parse_grade_choice(choice)
    except InputError:
        return choice.replace("_", " ")
    return grade_in_words(*parsed) if parsed else "cannot tell"


def in_words(detail: views.DisputeDetail) -> str:
    """The dispute as one sentence: the readers' grades and the dataset's."""
    grades = {str(r): int(g) for r, g in (detail.details.get("grades") or {}).items()}
    dataset = detail.details.get("dataset")
    return adj.describe_grade_dispute(detail.level, grades,
                                      int(dataset) if dataset is not None else None)


def sides(detail: views.DisputeDetail) -> None:
    """Each reader's grade and morphology beside the dataset's, and the final grade if any."""
    grades = detail.details.get("grades") or {}
    morphs = detail.details.get("morphologies") or {}
    left, right = st.columns(2)
    with left:
        st.markdown("**Readers' grades**")
        rows = []
        for reader, grade in grades.items():
            row = {"reader": reader, "grade": grade_in_words(int(grade), morphs.get(reader))}
            if detail.reader_names:
                row["calls this vertebra"] = detail.reader_names.get(reader, detail.level)
            rows.append(row)
        if rows:
            st.table(rows)
        else:
            st.caption("No submitted reader graded this level.")
    with right:
        st.markdown("**Dataset**")
        dataset = detail.details.get("dataset")
        st.write(f"{detail.level}: " + ("no grade in the dataset" if dataset is None else
                                        grade_in_words(int(dataset),
                                                       detail.details.get("dataset_morphology"))))
        if detail.final_grade is not None:
            grade, morph, source = detail.final_grade
            st.caption(f"Final grade of {detail.level}: {grade_in_words(grade, morph)} "
                       f"(from the {source})")
        else:
            st.caption(f"{detail.level} has no final grade while its dispute is open.")


def history(detail: views.DisputeDetail) -> None:
    """The grade votes of every round and the decisions, in words."""
    st.markdown(f"**Votes** (round {detail.round}; grade disputes are decided by the committee: "
                "quorum, majority, the chair on a tie)")
    if detail.votes:
        st.table([{"round": v.round, "voter": v.voter, "vote": choice_in_words(v.choice),
                   "rationale": v.rationale, "at": f"{v.at:%Y-%m-%d %H:%M} UTC"}
                  for v in detail.votes])
    else:
        st.caption("No votes yet.")
    if detail.grade_tally is not None:
        st.caption(f"Tally now: {detail.grade_tally.reason}")
    for d in detail.decisions:
        state = "superseded" if d.superseded else "in force"
        st.markdown(f"**Decision** round {d.round}: **{grade_in_words(d.grade, d.morphology)}** "
                    f"({state}), by {d.decided_by} on {d.decided_at:%Y-%m-%d %H:%M} UTC. {d.reason}")
    for r in detail.details.get("reopened", []):
        st.caption(f"Reopened by {r.get('by')} for round {r.get('round')}: {r.get('reason')}")


def vote_form(user: SignedInUser, detail: views.DisputeDetail,
              flash: Callable[..., None]) -> None:
    """The grade vote (grade 0-3 with a morphology, or cannot tell) and "Decide now"."""
    ws = workspace()
    if detail.vote_refusal is None:
        with st.form("grade_vote"):
            grade = st.radio("Your grade", VOTE_CHOICES, key="grade_vote_grade", horizontal=True,
                             format_func=lambda g: "Cannot tell" if g is None else GRADE_WORDS[g])
            morph = st.radio("Morphology (grades 1–3)", (None, *MORPHOLOGIES), horizontal=True,
                             key="grade_vote_morphology",
                             format_func=lambda v: "—" if v is None else v)
            rationale = st.text_area("Rationale (required)", key="grade_vote_rationale")
            if st.form_submit_button("Cast grade vote", type="primary"):
                with error_boundary("Your vote"):
                    if grade is not None and grade > 0 and morph is None:
                        st.error("Choose the morphology of a grade 1–3 fracture (wedge, "
                                 "biconcave or crush), then cast the vote again.")
                        return
                    with unit_of_work(ws.sessions) as session:
                        result = gd.cast_grade_vote(session, user, detail.dispute_id, grade,
                                                    None if not grade else morph, rationale,
                                                    settings=ws.settings)
                    flash(f"Vote recorded. {result.outcome.reason}",
                          keep_in_view=result.decision_id is not None, where="actions")
    else:
        st.caption(f"You cannot vote: {detail.vote_refusal}")
    if st.button("Decide now", key="decide_grade",
                 help="Apply the committee's rule (quorum, majority, the chair on a tie) to the "
                      "votes so far"):
        with error_boundary("Deciding"):
            with unit_of_work(ws.sessions) as session:
                outcome = gd.try_decide_grade(session, user, detail.dispute_id, ws.settings)
            flash(("Decided: " if outcome.decided else "Not decided yet: ") + outcome.reason,
                  "success" if outcome.decided else "info", keep_in_view=outcome.decided,
                  where="actions")
