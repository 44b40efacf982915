"""Grade disputes on SQLite and PostgreSQL: a Genant study whose readers differ by a grade or
more, or differ from the dataset, goes to the committee through the same disputes, votes and
decisions as fracture calls; the final grade is recorded with its provenance; reopening clears
it; fracture disputes are untouched."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import disputes, grades
from db import grade_disputes as gd
from db import models as m
from db.dispute_list import dispute_rows
from db.dispute_queries import dispute_detail, dispute_queue
from db.exporter import export_decisions
from db.relabel import set_relabel
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.errors import InputError, PermissionDenied, VoteRejected
from tests.annotation_helpers import add_user, setup_people, user
from tests.db.test_relabel import masked_study

SETTINGS = Settings(quorum=2, adjudication_policy="report")  # grade disputes: always committee


def _graded_study(db_sessions: sessionmaker[Session]) -> tuple[dict[str, int], int]:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        ids["adjudicator2"] = add_user(s, "adjudicator2", "adjudicator").id
        study = masked_study(s, "1.2.8.1")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        sid = study.id
        grades.store_dataset_grades(s, sid, {"T12": (2, "wedge"), "L1": (2, "wedge"),
                                             "L2": (2, "biconcave"), "L3": (0, None)}, "test")
    calls = {"reader1": {"T12": (2, "wedge"), "L1": (3, "crush"), "L2": (0, None)},
             "reader2": {"T12": (2, "biconcave"), "L1": (1, "wedge"), "L2": (0, None)}}
    for reader, levels in calls.items():
        with unit_of_work(db_sessions) as s:
            for level, (grade, morph) in levels.items():
                grades.set_grade(s, user(s, ids[reader]), sid, level, grade, morph)
            if reader == "reader1":
                set_relabel(s, user(s, ids[reader]), sid, at="L1", says="T13")
            ann.submit(s, user(s, ids[reader]), sid)
    return ids, sid


def test_grade_disputes_go_through_the_committee(db_sessions: sessionmaker[Session],
                                                migrated_db_url: str, tmp_path: Path) -> None:
    ids, sid = _graded_study(db_sessions)
    with unit_of_work(db_sessions) as s:
        result = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert len(result.opened) == 2 and result.status == m.StudyStatus.in_adjudication.value
    with unit_of_work(db_sessions, readonly=True) as s:
        queue = dispute_queue(s, user(s, ids["adjudicator"]), study_id=sid)
        assert [(q.level, q.kind) for q in queue] == [("L1", "grades_vs_dataset"),
                                                      ("L2", "grades_vs_dataset")]
        l1 = s.get(m.Dispute, queue[0].dispute_id)
        assert l1 is not None and l1.details["kinds"] == ["grades_vs_dataset", "grades_disagree"]
        assert l1.details["grades"] == {"reader1": 3, "reader2": 1} and l1.details["dataset"] == 2
        final = gd.final_grades_of(s, sid)
        assert {k: (v.grade, v.morphology, v.source) for k, v in final.items()} == {
            "T12": (2, "wedge", "readers"), "L3": (0, None, "dataset")}
        provisional, pending = gd.provisional_grades_of(s, sid)
        assert pending == ["L1", "L2"] and provisional["L1"].source == "provisional"
        l1_id = l1.id
    with unit_of_work(db_sessions) as s:  # nothing changed: a second refresh writes nothing
        again = disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        assert not (again.opened or again.updated or again.withdrawn)
    with unit_of_work(db_sessions) as s:
        adjudicator = user(s, ids["adjudicator"])
        with pytest.raises(PermissionDenied):
            gd.cast_grade_vote(s, user(s, ids["reader1"]), l1_id, 3, "crush", "mine")
        with pytest.raises(VoteRejected, match="about a Genant grade"):
            disputes.cast_vote(s, adjudicator, l1_id, "fractured", "x", settings=SETTINGS)
        with pytest.raises(VoteRejected, match="grade votes"):
            disputes.try_decide(s, adjudicator, l1_id, settings=SETTINGS)
        with pytest.raises(InputError, match="is not one of 0, 1, 2, 3"):
            gd.cast_grade_vote(s, adjudicator, l1_id, 4, None, "x", settings=SETTINGS)
        with pytest.raises(InputError, match="grade-0"):
            gd.cast_grade_vote(s, adjudicator, l1_id, 0, "wedge", "x", settings=SETTINGS)
        first = gd.cast_grade_vote(s, adjudicator, l1_id, 3, "crush", "endplates flat",
                                   settings=SETTINGS)
        assert not first.outcome.decided and "1 of 2 votes" in first.outcome.reason
        detail = dispute_detail(s, adjudicator, l1_id, SETTINGS)
        assert detail.is_grade_dispute and detail.tally is None and detail.grade_tally is not None
        assert detail.grade_tally.counts == {"grade_3_crush": 1} and detail.votes[0].choice == (
            "grade_3_crush")
        assert "already voted" in (detail.vote_refusal or "")
        assert detail.reader_names == {"reader1": "T13"}  # reader1 counts a thirteenth thoracic
    with unit_of_work(db_sessions) as s:
        second = gd.cast_grade_vote(s, user(s, ids["adjudicator2"]), l1_id, 3, "crush",
                                    "anterior and posterior height lost", settings=SETTINGS)
        assert second.outcome.decided and second.decision_id is not None
    with unit_of_work(db_sessions, readonly=True) as s:
        row = s.scalars(select(m.FinalGrade).where(m.FinalGrade.study_id == sid,
                                                   m.FinalGrade.level == "L1")).one()
        assert (row.grade, row.morphology, row.source, row.decision_id) == (
            3, "crush", "decision", second.decision_id)
        decision = s.get(m.Decision, second.decision_id)
        assert decision is not None and (decision.grade, decision.fractured) == (3, None)
        assert gd.final_grades_of(s, sid)["L1"].source == "decision"
        shown = dispute_detail(s, user(s, ids["adjudicator"]), l1_id, SETTINGS)
        assert shown.final_grade == (3, "crush", "decision")
        assert shown.decisions[0].verdict == "grade 3 crush"
        stored = {r.level: r.source for r in s.scalars(
            select(m.FinalGrade).where(m.FinalGrade.study_id == sid))}
        assert stored == {"T12": "readers", "L1": "decision", "L3": "dataset"}
        actions = set(s.scalars(select(m.AuditEntry.action)))
        assert {"vote.cast", "decision.record", "final_grade.set"} <= actions
        assert not s.scalars(select(m.FinalLabel).where(m.FinalLabel.level == "L1",
                                                        m.FinalLabel.source == "decision")).all()
        listed = {r["level"]: r for r in dispute_rows(s, "decided")}
        assert listed["L1"]["decision"] == "grade_3_crush"  # what `spine disputes list` prints
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url))
    (path,) = export_decisions(ws, tmp_path / "out")
    with path.open(newline="") as fh:
        decided = [r for r in csv.DictReader(fh) if r["level"] == "L1"]
    assert decided[0]["decision"] == "grade_3_crush" and "grade_3_crush" in decided[0]["votes"]
    ws.sessions.kw["bind"].dispose()
    with unit_of_work(db_sessions) as s:
        disputes.reopen(s, user(s, ids["adjudicator"]), l1_id, "a new scan", settings=SETTINGS)
    with unit_of_work(db_sessions, readonly=True) as s:
        assert "L1" not in gd.final_grades_of(s, sid)
        assert s.get(m.Dispute, l1_id).round == 2  # type: ignore[union-attr]
        assert not s.scalars(select(m.FinalGrade).where(m.FinalGrade.level == "L1")).all()


def test_a_fracture_study_opens_no_grade_dispute(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = masked_study(s, "1.2.8.2", ["C5", "C6"])
        study.call_scheme = "fracture"
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        sid = study.id
    for reader, call in (("reader1", "fractured"), ("reader2", "not_fractured")):
        with unit_of_work(db_sessions) as s:
            ann.set_level_call(s, user(s, ids[reader]), sid, "C5", call)
            ann.submit(s, user(s, ids[reader]), sid)
    with unit_of_work(db_sessions) as s:
        disputes.refresh_disputes(s, sid, SETTINGS, actor="test")
        kinds = {d.kind for d in s.scalars(select(m.Dispute).where(m.Dispute.study_id == sid))}
        assert kinds == {"readers_disagree"}
        assert not s.scalars(select(m.FinalGrade)).all()
