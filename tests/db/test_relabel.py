"""A reader's renumbering on SQLite and PostgreSQL: stored from a shift or a mapping, checked
against the study's mask levels, the reader's own only, versioned against another tab, audited."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import grades
from db import models as m
from db.exporter import export_readers
from db.relabel import relabel_of, set_relabel, study_relabels
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.errors import ConflictError, InputError, PermissionDenied
from tests.annotation_helpers import add_study, setup_people, user

LEVELS = ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S"]


def masked_study(s: Session, uid: str, levels: list[str] = LEVELS) -> m.Study:
    """A Genant study whose series has a dataset mask naming ``levels``."""
    study = add_study(s, uid)
    study.call_scheme = "genant"
    series = s.scalars(select(m.Series).where(m.Series.study_id == study.id)).one()
    s.add(m.Mask(series_id=series.id, path="/nowhere/mask.nii.gz", vocabulary="verse",
                 source="dataset", levels=list(levels)))
    study.has_mask = True
    s.flush()
    return study


def test_a_reader_stores_a_shift_and_a_mapping(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = masked_study(s, "1.2.7.1")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        sid = study.id
    r1, r2 = ids["reader1"], ids["reader2"]
    with unit_of_work(db_sessions) as s:
        assert relabel_of(s, user(s, r1), sid).version == 0
        got = set_relabel(s, user(s, r1), sid, at="L1", says="T13")
        assert got.mapping == {"L1": "T13", "L2": "L1", "L3": "L2", "L4": "L3", "L5": "L4"}
        assert got.rule == {"at": "L1", "says": "T13"}
    with unit_of_work(db_sessions) as s:
        set_relabel(s, user(s, r2), sid, mapping={"L5": "L6"})
    with unit_of_work(db_sessions) as s:
        mine = relabel_of(s, user(s, r1), sid)
        assert mine.mapping["L1"] == "T13" and mine.version == 1
        assert study_relabels(s, sid) == {"reader1": mine.mapping, "reader2": {"L5": "L6"}}
        again = set_relabel(s, user(s, r1), sid, mapping={}, expected_version=mine.version)
        assert again.mapping == {} and again.version == 2
        with pytest.raises(ConflictError, match="changed elsewhere"):
            set_relabel(s, user(s, r1), sid, at="L5", says="L6", expected_version=1)
        actions = s.scalars(select(m.AuditEntry.action).where(
            m.AuditEntry.entity == "reader_relabel")).all()
        assert actions.count("relabel.set") == 3


def test_bad_renumberings_are_refused(db_sessions: sessionmaker[Session]) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = masked_study(s, "1.2.7.2")
        bare = add_study(s, "1.2.7.3")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"]])
        ann.assign(s, user(s, ids["admin"]), bare.id, [ids["reader1"]])
        sid, bare_id = study.id, bare.id
    with unit_of_work(db_sessions) as s:
        r1 = user(s, ids["reader1"])
        with pytest.raises(InputError, match="L4 and L5 would both be named L4"):
            set_relabel(s, r1, sid, mapping={"L5": "L4"})
        with pytest.raises(InputError, match="no vertebra labelled C3"):
            set_relabel(s, r1, sid, at="C3", says="C4")
        with pytest.raises(InputError, match="not both"):
            set_relabel(s, r1, sid, at="L5", says="L6", mapping={"L5": "L6"})
        with pytest.raises(InputError, match="no vertebra mask"):
            set_relabel(s, r1, bare_id, at="L5", says="L6")
        with pytest.raises(PermissionDenied):
            set_relabel(s, user(s, ids["reader2"]), sid, at="L5", says="L6")
        assert relabel_of(s, r1, sid).version == 0


def test_the_readers_export_carries_each_readers_numbering(migrated_db_url: str,
                                                           tmp_path: Path) -> None:
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    ids = setup_people(ws.sessions)
    with unit_of_work(ws.sessions) as s:
        study = masked_study(s, "1.2.7.4")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        sid = study.id
    with unit_of_work(ws.sessions) as s:
        set_relabel(s, user(s, ids["reader1"]), sid, at="L1", says="T13")
        for reader in ("reader1", "reader2"):
            grades.set_grade(s, user(s, ids[reader]), sid, "L1", 2, "wedge")
            grades.set_grade(s, user(s, ids[reader]), sid, "L2", 0, None)
    export_readers(ws, tmp_path / "out")
    with (tmp_path / "out" / "readers_grades.csv").open(newline="") as fh:
        got = [(r["reader"], r["level"], r["reader_level"], r["grade"], r["morphology"])
               for r in csv.DictReader(fh)]
    assert got == [("reader1", "L1", "T13", "2", "wedge"), ("reader1", "L2", "L1", "0", ""),
                   ("reader2", "L1", "L1", "2", "wedge"), ("reader2", "L2", "L2", "0", "")]
    with (tmp_path / "out" / "readers_relabel.csv").open(newline="") as fh:
        relabel = [(r["reader"], r["level"], r["reader_level"], r["at"], r["says"])
                   for r in csv.DictReader(fh)]
    assert relabel[0] == ("reader1", "L1", "T13", "L1", "T13") and len(relabel) == 5
    ws.sessions.kw["bind"].dispose()
