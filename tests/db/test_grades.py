"""Genant grades on SQLite and PostgreSQL: a VerSe demo folder imports its genant_grades.csv as
the dataset's grades (and again changes nothing); readers grade levels of a Genant study (refused
outside 0-3, with a morphology at grade 0, on a fracture-call study, from a stale tab); agreement
between readers by weighted kappa."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from db import annotations as ann
from db import grades
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.errors import ConflictError, InputError, PermissionDenied
from spine_core.phantom.demo import write_demo_dataset
from tests.annotation_helpers import add_study, setup_people, user


@pytest.fixture(scope="module")
def verse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verse-grades")
    write_demo_dataset(root, region="thoracolumbar", layout="verse", n_studies=2, seed=11,
                       shape=(96, 48, 48), workers=1)
    return root


def test_the_grades_file_imports_as_the_datasets_grades(verse: Path, migrated_db_url: str,
                                                        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1)
    report = import_path(verse, settings, actor="test", progress=False)
    assert report.studies_added == 2 and not report.problems, report.problems
    with (verse / "genant_grades.csv").open(newline="") as fh:
        expected = sum(1 for _ in csv.DictReader(fh))
    assert report.csv_rows_imported == expected
    ws = Workspace(settings)
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert {(st.call_scheme, st.region) for st in s.scalars(select(m.Study))} == {
            ("genant", "thoracolumbar")}
        owner = s.scalars(select(m.User).where(m.User.username == "dataset")).one()
        stored = s.scalars(select(m.LevelGrade).where(m.LevelGrade.reader_id == owner.id)).all()
        assert len(stored) == expected and all(0 <= g.grade <= 3 for g in stored)
        assert all((g.grade == 0) == (g.morphology is None) for g in stored)
    again = import_path(verse, settings, actor="test", progress=False)
    assert again.csv_rows_imported == 0 and not again.problems
    ws.sessions.kw["bind"].dispose()


def test_readers_grade_levels_and_their_agreement_is_a_weighted_kappa(db_sessions) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.9.1")
        study.call_scheme = "genant"
        fracture_study = add_study(s, "1.2.9.2")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        ann.assign(s, user(s, ids["admin"]), fracture_study.id, [ids["reader1"]])
        sid, fid = study.id, fracture_study.id
    r1, r2 = ids["reader1"], ids["reader2"]
    calls = {r1: {"T12": (2, "wedge"), "L1": (3, "crush"), "L2": (0, None), "L3": (1, "biconcave")},
             r2: {"T12": (2, "wedge"), "L1": (1, "wedge"), "L2": (0, None), "L3": (1, "biconcave")}}
    for reader, levels in calls.items():
        for level, (grade, morph) in levels.items():
            with unit_of_work(db_sessions) as s:
                grades.set_grade(s, user(s, reader), sid, level, grade, morph)
    with unit_of_work(db_sessions) as s:
        mine = grades.grades_of(s, user(s, r1), sid)
        assert {k: (g.grade, g.morphology) for k, g in mine.items()} == calls[r1]
        for bad, morph, said in ((4, None, "is not one of 0, 1, 2, 3"),
                                 (0, "wedge", "grade-0 (normal) vertebra has no morphology")):
            with pytest.raises(InputError, match=re.escape(said)):
                grades.set_grade(s, user(s, r1), sid, "L4", bad, morph)
        with pytest.raises(InputError, match="read with fracture calls"):
            grades.set_grade(s, user(s, r1), fid, "C5", 1, "wedge")
        with pytest.raises(PermissionDenied):
            grades.set_grade(s, user(s, ids["reader3"]), sid, "L1", 1, "wedge")
        with pytest.raises(ConflictError, match="changed to 3 elsewhere"):
            grades.set_grade(s, user(s, r1), sid, "L1", 2, "wedge",
                             expected_version=mine["L1"].version + 1)  # a version never shown
    with unit_of_work(db_sessions, readonly=True) as s:
        (pair,) = grades.grade_agreement(s, user(s, ids["adjudicator"]))
        assert (pair.reader_a, pair.reader_b, pair.n) == ("reader1", "reader2", 4)
        # pairs (2,2) (3,1) (0,0) (1,1): observed sum (i-j)^2 = 4; expected (1/n) sum (i-j)^2 r_i c_j
        # with r = A's counts of grades 0..3 = (1,1,1,1) and c = B's = (1,2,1,0)
        r, c = [1, 1, 1, 1], [1, 2, 1, 0]
        exp = sum((i - j) ** 2 * r[i] * c[j] for i in range(4) for j in range(4)) / 4
        assert pair.kappa_quadratic == pytest.approx(1 - 4 / exp)
        assert pair.confusion[3][1] == 1 and pair.per_level["L1"][0] == 1
        with pytest.raises(PermissionDenied):
            grades.grade_agreement(s, user(s, r1))
        gathered = grades.study_set_grades(s, user(s, ids["adjudicator"]), [sid])
        assert gathered["reader2"][(sid, "L1")] == (1, "wedge") and len(gathered["reader1"]) == 4
        assert grades.study_set_grades(s, user(s, ids["adjudicator"]), [fid]) == {}
        with pytest.raises(PermissionDenied):
            grades.study_set_grades(s, user(s, r1))


def test_admins_set_the_reading_scheme_before_anyone_reads(db_sessions) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.9.3")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"]])
        sid = study.id
    with unit_of_work(db_sessions) as s:
        admin = user(s, ids["admin"])
        assert grades.scheme_of(s, sid) == "fracture"
        with pytest.raises(PermissionDenied):
            grades.set_scheme(s, user(s, ids["adjudicator"]), sid, "genant")
        with pytest.raises(InputError, match="not one of fracture, genant"):
            grades.set_scheme(s, admin, sid, "vas")
        assert grades.set_scheme(s, admin, sid, "Genant") == "genant"
        grades.set_grade(s, user(s, ids["reader1"]), sid, "L1", 1, "wedge")
    with unit_of_work(db_sessions) as s:
        with pytest.raises(InputError, match="already made genant calls"):
            grades.set_scheme(s, user(s, ids["admin"]), sid, "fracture")
        assert s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "study.scheme")).one()


def test_per_level_kappa_linear_and_quadratic_over_a_study_set(db_sessions) -> None:
    ids = setup_people(db_sessions)
    sids = []
    with unit_of_work(db_sessions) as s:
        for k in range(3):
            study = add_study(s, f"1.2.9.{10 + k}")
            study.call_scheme = "genant"
            ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
            sids.append(study.id)
    # L1 over three studies: reader1 0, 1, 2; reader2 0, 2, 2
    for sid, (g1, g2) in zip(sids, ((0, 0), (1, 2), (2, 2)), strict=True):
        with unit_of_work(db_sessions) as s:
            grades.set_grade(s, user(s, ids["reader1"]), sid, "L1", g1, None if g1 == 0 else "wedge")
            grades.set_grade(s, user(s, ids["reader2"]), sid, "L1", g2, None if g2 == 0 else "wedge")
    with unit_of_work(db_sessions, readonly=True) as s:
        (pair,) = grades.grade_agreement(s, user(s, ids["admin"]), sids)
        # observed sum |i-j| = 1; expected (1/3) sum |i-j| r_i c_j, r = (1,1,1,0), c = (1,0,2,0) = 3
        assert pair.per_level_linear["L1"] == pytest.approx(1 - 1 / 3)
        # quadratic: observed 1; expected (1/3)(0*1 + 4*2 + 1*1 + 1*2 + 4*1 + 0*2) = 5
        assert pair.per_level["L1"] == (3, pytest.approx(1 - 1 / 5))
        assert pair.kappa_linear == pytest.approx(pair.per_level_linear["L1"])
