"""Genant grades on films for the committee: each submitted reader's grade of each vertebra box,
compared vertebra by vertebra.

Readers' boxes are matched by position and named under ONE labelling (the labelling the committee
chose, else the first reader's by name; :func:`spine_core.film_truth.adopt_labelling`), so two
readers who labelled the same vertebra differently still compare their grades of it. While a
labelling dispute is open, no grades are compared: the vertebrae's names wait for the committee.

:func:`db.grade_disputes.submitted_grades` returns :func:`film_grades` for a film, so grade
disputes, votes, decisions and final grades of films work as for Genant CT studies.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.adjudication_inputs import OPEN
from db.film_reading import submitted_film_boxes
from spine_core.film_truth import adopt_labelling

GradeCall = tuple[int, str | None]


def film_grades(session: Session, study_id: int) -> dict[str, dict[str, GradeCall]]:
    """reader -> vertebra label -> (grade, None) of the submitted readers' graded boxes."""
    from db.film_disputes import LABELLING, labelling_in_force

    undecided = session.scalars(select(m.Dispute.id).where(
        m.Dispute.study_id == int(study_id), m.Dispute.kind == LABELLING,
        m.Dispute.status == OPEN).limit(1)).first()
    by_reader = submitted_film_boxes(session, study_id)
    if undecided is not None or not by_reader:
        return {}
    grades: dict[int, int] = {int(i): int(g) for i, g in session.execute(
        select(m.Box.id, m.Box.grade).where(m.Box.study_id == int(study_id),
                                            m.Box.deleted_at.is_(None), m.Box.grade.is_not(None)))
        if g is not None}
    chosen = labelling_in_force(session, study_id) or min(by_reader)
    out: dict[str, dict[str, GradeCall]] = {}
    for box in adopt_labelling(by_reader, chosen):
        grade = grades.get(int(box.id)) if box.id is not None else None
        if grade is not None and box.level and box.reader:
            out.setdefault(str(box.reader), {}).setdefault(box.level, (int(grade), None))
    return out
