"""A box on a film outlines a vertebra, it does not mark its level fractured (SQLite and
PostgreSQL): drawing, moving, relabelling and labelling film boxes makes no fracture call, and two
readers' film boxes open no per-level fracture dispute. On a CT a box still marks its level."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events as be
from db import disputes
from db import film_reading as fr
from db import models as m
from db.session import unit_of_work
from spine_core.config import Settings
from tests.annotation_helpers import add_study, setup_people, user

SETTINGS = Settings(quorum=2, adjudication_policy="committee")
FILM = (1, 600, 400)


def _calls(session: Session, study_id: int) -> list[tuple[int, str, str]]:
    return [tuple(r) for r in session.execute(  # type: ignore[misc]
        select(m.LevelLabel.reader_id, m.LevelLabel.level, m.LevelLabel.call)
        .where(m.LevelLabel.study_id == study_id))]


def test_film_boxes_make_no_fracture_call(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        sid = add_study(s, "1.2.14.90", FILM).id
        ann.assign(s, user(s, ids["admin"]), sid, [ids["reader1"], ids["reader2"]])
    for reader, labels in (("reader1", ["C3", "C4"]), ("reader2", ["C5", "C6"])):
        with unit_of_work(db_sessions) as s:
            me = user(s, ids[reader])
            first = be.create_box(s, me, sid, ann.BoxInput(0, 150, 100, 80, 50, level=labels[0]))
            assert first.box is not None and first.ask_levels == ()
            second = be.create_box(s, me, sid, ann.BoxInput(0, 150, 160, 80, 50))
            assert second.box is not None
            moved = be.change_box(s, me, first.box.id, first.box.version,
                                  ann.BoxInput(0, 152, 102, 80, 50, level=labels[0]))
            assert moved.box is not None
            be.save_box(s, me, sid, ann.BoxInput(0, 150, 230, 80, 50, level="C7"))
        with unit_of_work(db_sessions) as s:
            me = user(s, ids[reader])
            box = next(b for b in fr.film_boxes(s, me, sid) if b.id == second.box.id)
            fr.save_film_label(s, me, box.id, box.version, labels[1], 2, False)
        with unit_of_work(db_sessions) as s:
            assert _calls(s, sid) == []
            ann.submit(s, user(s, ids[reader]), sid)
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        kinds = s.scalars(select(m.Dispute.kind).where(m.Dispute.study_id == sid)).all()
        assert all(k == "labelling" for k in kinds), kinds
        assert not any(result.final_labels.values())  # no level of the film is called fractured
        assert _calls(s, sid) == []


def test_a_ct_box_still_marks_its_level_fractured(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        sid = add_study(s, "1.2.14.91").id
        ann.assign(s, user(s, ids["admin"]), sid, [ids["reader1"]])
        be.create_box(s, user(s, ids["reader1"]), sid, ann.BoxInput(2, 5, 5, 10, 10, level="C3"))
        assert _calls(s, sid) == [(ids["reader1"], "C3", "fractured")]
