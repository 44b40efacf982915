"""Vertebra labels on films, SQLite and PostgreSQL: a reader's label, grade and reference per box
saved against the box's version (stale: refused, nothing overwritten), audited, blinded; two
readers whose labels are shifted by one level get ONE labelling dispute, opened once, decided by
the committee choosing a labelling."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events as be
from db import disputes
from db import film_disputes as fd
from db import film_reading as fr
from db import models as m
from db.dispute_queries import dispute_detail, dispute_queue
from db.session import unit_of_work
from spine_core.config import Settings
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied, VoteRejected
from tests.annotation_helpers import add_study, setup_people, user

SETTINGS = Settings(quorum=2, adjudication_policy="committee")
FILM = (1, 600, 400)
#: Four vertebrae stacked head to feet (x, y, width, height).
POSITIONS = [(150.0, 100.0 + 60 * i, 80.0, 50.0) for i in range(4)]


def _film(db_sessions: sessionmaker[Session], readers: tuple[str, ...] = ("reader1", "reader2")
          ) -> tuple[dict[str, int], int]:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.14.1", FILM)
        ann.assign(s, user(s, ids["admin"]), study.id, [ids[r] for r in readers])
        return ids, study.id


def _boxes(db_sessions: sessionmaker[Session], reader_id: int, study_id: int, dy: float = 0.0
           ) -> list[fr.FilmBox]:
    with unit_of_work(db_sessions) as s:
        me = user(s, reader_id)
        for x, y, w, h in POSITIONS:
            be.create_box(s, me, study_id, ann.BoxInput(0, x, y + dy, w, h))
        return fr.film_boxes(s, me, study_id)


def _label(db_sessions: sessionmaker[Session], reader_id: int, study_id: int,
           labels: list[str], reference: str | None = None) -> None:
    for box, label in zip(_own(db_sessions, reader_id, study_id), labels, strict=True):
        with unit_of_work(db_sessions) as s:
            fr.save_film_label(s, user(s, reader_id), box.id, box.version, label, None,
                               label == reference)


def _own(db_sessions: sessionmaker[Session], reader_id: int, study_id: int) -> list[fr.FilmBox]:
    with unit_of_work(db_sessions, readonly=True) as s:
        return fr.film_boxes(s, user(s, reader_id), study_id)


def test_labels_grades_and_reference_are_saved_with_versions(
        db_sessions: sessionmaker[Session]) -> None:
    ids, sid = _film(db_sessions)
    boxes = _boxes(db_sessions, ids["reader1"], sid)
    assert [b.level for b in boxes] == [None] * 4 and not any(b.is_reference for b in boxes)
    first = boxes[0]
    with unit_of_work(db_sessions) as s:
        saved = fr.save_film_label(s, user(s, ids["reader1"]), first.id, first.version, "c2", 1, True)
    assert (saved.level, saved.grade, saved.is_reference) == ("C2", 1, True)
    assert saved.version == first.version + 1
    # a stale tab: refused in one line, nothing overwritten
    with unit_of_work(db_sessions) as s, pytest.raises(ConflictError, match="another tab"):
        fr.save_film_label(s, user(s, ids["reader1"]), first.id, first.version, "C3", 0, False)
    assert _own(db_sessions, ids["reader1"], sid)[0].level == "C2"
    # the reference moves: one per reader; a reference must be C2 or S1
    second = _own(db_sessions, ids["reader1"], sid)[1]
    with unit_of_work(db_sessions) as s, pytest.raises(InputError, match="C2 .* or S1"):
        fr.save_film_label(s, user(s, ids["reader1"]), second.id, second.version, "C3", None, True)
    with unit_of_work(db_sessions) as s:
        fr.save_film_label(s, user(s, ids["reader1"]), second.id, second.version, "S1", None, True)
    own = _own(db_sessions, ids["reader1"], sid)
    assert [(b.level, b.is_reference) for b in own[:2]] == [("C2", False), ("S", True)]
    for bad_label, bad_grade in (("X9", None), ("Co", None), ("C4", 4)):
        with unit_of_work(db_sessions) as s, pytest.raises(InputError):
            fr.save_film_label(s, user(s, ids["reader1"]), own[2].id, own[2].version, bad_label,
                               bad_grade, False)
    with unit_of_work(db_sessions, readonly=True) as s:
        entries = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "box.update")).all()
        assert len(entries) == 3  # C2 saved, S1 saved, C2's reference cleared
        assert entries[0].after is not None and entries[0].after["level"] == "C2"
        assert entries[0].after["grade"] == 1 and entries[0].after["is_reference"] is True
    # blinding: reader2 sees none of reader1's boxes and cannot label them
    assert _own(db_sessions, ids["reader2"], sid) == []
    with unit_of_work(db_sessions) as s, pytest.raises(NotFound):
        fr.save_film_label(s, user(s, ids["reader2"]), own[0].id, own[0].version, "C4", None, False)
    # a submitted reader cannot change labels
    with unit_of_work(db_sessions) as s:
        ann.submit(s, user(s, ids["reader1"]), sid, confirm=True)
    with unit_of_work(db_sessions) as s, pytest.raises(PermissionDenied, match="submitted"):
        fr.save_film_label(s, user(s, ids["reader1"]), own[2].id, own[2].version, "C4", None, False)


def test_a_ct_box_gets_no_film_label(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.14.2")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"]])
        event = be.create_box(s, user(s, ids["reader1"]), study.id, ann.BoxInput(2, 5, 5, 10, 10))
        assert event.box is not None
        with pytest.raises(InputError, match="radiographs"):
            fr.save_film_label(s, user(s, ids["reader1"]), event.box.id, event.box.version, "C3",
                               None, False)


def _read_shifted(db_sessions: sessionmaker[Session], second: list[str]) -> tuple[dict[str, int], int]:
    ids, sid = _film(db_sessions)
    _boxes(db_sessions, ids["reader1"], sid)
    _label(db_sessions, ids["reader1"], sid, ["C3", "C4", "C5", "C6"])
    _boxes(db_sessions, ids["reader2"], sid, dy=3.0)
    _label(db_sessions, ids["reader2"], sid, second)
    for reader in ("reader1", "reader2"):
        with unit_of_work(db_sessions) as s:
            ann.submit(s, user(s, ids[reader]), sid)
    return ids, sid


def test_a_shifted_reader_opens_one_labelling_dispute_decided_by_the_committee(
        db_sessions: sessionmaker[Session]) -> None:
    ids, sid = _read_shifted(db_sessions, ["C4", "C5", "C6", "C7"])
    with unit_of_work(db_sessions, readonly=True) as s:
        (pair,) = fr.film_comparisons(s, user(s, ids["adjudicator"]), sid)
        assert pair.shift == 1 and pair.label_agreement == 0.0 and (pair.mean_iou or 0) > 0.8
        with pytest.raises(PermissionDenied):
            fr.film_comparisons(s, user(s, ids["reader1"]), sid)
        union = fr.film_union(s, user(s, ids["adjudicator"]), sid)
        assert list(union) == ["C3", "C4", "C5", "C6", "C7"]
        # a label two readers gave to different vertebrae is not merged across them
        assert all(u.n_readers == 1 for us in union.values() for u in us)
        assert [len(union[lvl]) for lvl in union] == [1, 2, 2, 2, 1]
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert len(result.opened) == 1 and result.status == m.StudyStatus.in_adjudication.value
    with unit_of_work(db_sessions) as s:  # opened once: a second refresh writes nothing
        again = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert not (again.opened or again.updated or again.withdrawn)
    with unit_of_work(db_sessions, readonly=True) as s:
        queue = dispute_queue(s, user(s, ids["adjudicator"]), study_id=sid)
        assert [(q.level, q.kind) for q in queue] == [("film", "labelling")]
        detail = dispute_detail(s, user(s, ids["adjudicator"]), queue[0].dispute_id, SETTINGS)
        assert detail.details["sentence"] == ("reader2's labels are one level below reader1's "
                                              "on 4 vertebrae (of 4 matched)")
        assert detail.details["pairs"][0]["labels"][0] == ["C3", "C4"]
        dispute_id = queue[0].dispute_id
    with unit_of_work(db_sessions) as s:
        adjudicator = user(s, ids["adjudicator"])
        with pytest.raises(VoteRejected, match="vertebra labels"):
            disputes.cast_vote(s, adjudicator, dispute_id, "fractured", "no", settings=SETTINGS)
        with pytest.raises(PermissionDenied):
            fd.decide_labelling(s, user(s, ids["reader1"]), dispute_id, "reader1", "mine")
        with pytest.raises(VoteRejected, match="reason"):
            fd.decide_labelling(s, adjudicator, dispute_id, "reader1", " ")
        with pytest.raises(VoteRejected, match="one of the readers"):
            fd.decide_labelling(s, adjudicator, dispute_id, "reader3", "why")
    with unit_of_work(db_sessions) as s:
        decision = fd.decide_labelling(s, user(s, ids["adjudicator"]), dispute_id, "reader1",
                                       "C2 counted from the dens")
        assert decision.reason == "reader1's labelling is right: C2 counted from the dens"
    with unit_of_work(db_sessions) as s:
        assert fd.labelling_in_force(s, sid) == "reader1"
        study = s.get(m.Study, sid)
        assert study is not None and study.status == m.StudyStatus.final.value
        actions = s.scalars(select(m.AuditEntry.action).where(
            m.AuditEntry.entity.in_(["dispute", "decision"]))).all()
        assert actions == ["dispute.open", "decision.record", "dispute.decide"]
        again = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")  # decided stays decided
        assert not again.opened and again.open_disputes == 0
    with unit_of_work(db_sessions) as s:
        disputes.reopen(s, user(s, ids["adjudicator"]), dispute_id, "the film was flipped",
                        settings=SETTINGS)
        assert fd.labelling_in_force(s, sid) is None


@pytest.mark.parametrize("second", [["C3", "C4", "C5", "C6"], ["C4", "C5", "C5", "C6"]],
                         ids=["same", "half-shifted"])
def test_no_labelling_dispute_without_a_shift(db_sessions: sessionmaker[Session],
                                              second: list[str]) -> None:
    _, sid = _read_shifted(db_sessions, second)
    with unit_of_work(db_sessions) as s:
        disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        kinds = s.scalars(select(m.Dispute.kind).where(m.Dispute.study_id == sid)).all()
        assert "labelling" not in kinds


def test_three_readers_two_shifted_still_one_dispute(db_sessions: sessionmaker[Session]) -> None:
    ids, sid = _film(db_sessions, ("reader1", "reader2", "reader3"))
    for reader, labels, dy in (("reader1", ["C3", "C4", "C5", "C6"], 0.0),
                               ("reader2", ["C4", "C5", "C6", "C7"], 2.0),
                               ("reader3", ["C4", "C5", "C6", "C7"], 4.0)):
        _boxes(db_sessions, ids[reader], sid, dy=dy)
        _label(db_sessions, ids[reader], sid, labels, reference=None)
        with unit_of_work(db_sessions) as s:
            ann.submit(s, user(s, ids[reader]), sid)
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        (dispute_id,) = result.opened
        dispute = s.get(m.Dispute, dispute_id)
        assert dispute is not None and dispute.details["readers"] == ["reader1", "reader2", "reader3"]
        assert [(p["reader_a"], p["reader_b"]) for p in dispute.details["pairs"]] == [
            ("reader1", "reader2"), ("reader1", "reader3")]
    with unit_of_work(db_sessions) as s:
        fd.decide_labelling(s, user(s, ids["adjudicator"]), dispute_id, "reader2", "T1 seen")
        assert fd.labelling_in_force(s, sid) == "reader2"
