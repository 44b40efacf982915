"""Film grades reach the committee (SQLite and PostgreSQL): two readers who grade the same
vertebra of a film differently (Genant 0-3) get a grade dispute on it, voted and decided like a
CT grade dispute, with a final grade; matched by position, so a reader whose labels are shifted
is compared on the same vertebra once the committee has chosen the labelling, never before."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events as be
from db import disputes
from db import film_disputes as fd
from db import film_reading as fr
from db import grade_disputes as gd
from db import models as m
from db.session import unit_of_work
from spine_core.config import Settings
from tests.annotation_helpers import add_study, setup_people, user

SETTINGS = Settings(quorum=1, adjudication_policy="committee")
POSITIONS = [(150.0, 100.0 + 60 * i, 80.0, 50.0) for i in range(4)]


def _read(db_sessions: sessionmaker[Session], labels: dict[str, list[str]],
          grades: dict[str, list[int | None]]) -> tuple[dict[str, int], int]:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        sid = add_study(s, "1.2.14.80", (1, 600, 400)).id
        ann.assign(s, user(s, ids["admin"]), sid, [ids[r] for r in labels])
    for reader, names in labels.items():
        with unit_of_work(db_sessions) as s:
            me = user(s, ids[reader])
            for x, y, w, h in POSITIONS:
                be.create_box(s, me, sid, ann.BoxInput(0, x, y + 2.0, w, h))
        with unit_of_work(db_sessions) as s:
            me = user(s, ids[reader])
            for box, name, grade in zip(fr.film_boxes(s, me, sid), names, grades[reader],
                                        strict=True):
                fr.save_film_label(s, me, box.id, box.version, name, grade, False)
            ann.submit(s, me, sid, confirm=True)
    return ids, sid


def _grade_disputes(session: Session, sid: int) -> list[m.Dispute]:
    return list(session.scalars(select(m.Dispute).where(
        m.Dispute.study_id == sid, m.Dispute.kind.like("grades%"))))


def test_two_grades_of_one_vertebra_open_a_grade_dispute(db_sessions: sessionmaker[Session]) -> None:
    labels = ["C3", "C4", "C5", "C6"]
    ids, sid = _read(db_sessions, {"reader1": labels, "reader2": labels},
                     {"reader1": [None, 2, 1, 0], "reader2": [None, 0, 1, None]})
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        (dispute,) = _grade_disputes(s, sid)
        assert result.opened == [dispute.id]
        assert (dispute.level, dispute.kind) == ("C4", "grades_disagree")
        assert dispute.details["grades"] == {"reader1": 2, "reader2": 0}
        assert {d.kind for d in s.scalars(select(m.Dispute))} == {"grades_disagree"}
        again = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert not (again.opened or again.withdrawn)
        dispute_id = dispute.id
    with unit_of_work(db_sessions) as s:
        vote = gd.cast_grade_vote(s, user(s, ids["adjudicator"]), dispute_id, 2, "wedge",
                                  "anterior height loss about 30 %", settings=SETTINGS)
        assert vote.decision_id is not None
    with unit_of_work(db_sessions, readonly=True) as s:
        final = gd.final_grades_of(s, sid)
        assert (final["C4"].grade, final["C4"].source) == (2, "decision")
        assert (final["C5"].grade, final["C5"].source) == (1, "readers")
        study = s.get(m.Study, sid)
        assert study is not None and study.status == m.StudyStatus.final.value


def test_a_shifted_reader_is_compared_on_the_same_vertebra_after_the_labelling_decision(
        db_sessions: sessionmaker[Session]) -> None:
    ids, sid = _read(db_sessions,
                     {"reader1": ["C3", "C4", "C5", "C6"], "reader2": ["C4", "C5", "C6", "C7"]},
                     {"reader1": [None, 2, None, None], "reader2": [None, 0, None, None]})
    with unit_of_work(db_sessions) as s:  # the labels are disputed: no grade compared yet
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert len(result.opened) == 1 and _grade_disputes(s, sid) == []
        (labelling,) = s.scalars(select(m.Dispute.id).where(m.Dispute.kind == "labelling"))
    with unit_of_work(db_sessions) as s:
        fd.decide_labelling(s, user(s, ids["adjudicator"]), labelling, "reader1", "from the dens")
    with unit_of_work(db_sessions) as s:
        (dispute,) = _grade_disputes(s, sid)  # reader2's "C5" is reader1's C4
        assert dispute.level == "C4" and dispute.details["grades"] == {"reader1": 2, "reader2": 0}
        study = s.get(m.Study, sid)
        assert study is not None and study.status == m.StudyStatus.in_adjudication.value
        again = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert not (again.opened or again.withdrawn) and again.open_disputes == 1


def test_equal_grades_open_nothing(db_sessions: sessionmaker[Session]) -> None:
    labels = ["L2", "L3", "L4", "L5"]
    _, sid = _read(db_sessions, {"reader1": labels, "reader2": labels},
                   {"reader1": [0, 1, 2, 3], "reader2": [0, 1, 2, 3]})
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert result.opened == [] and result.status == m.StudyStatus.final.value
        assert {v.level: v.grade for v in gd.final_grades_of(s, sid).values()} == {
            "L2": 0, "L3": 1, "L4": 2, "L5": 3}
