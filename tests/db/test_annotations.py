"""The readers' annotation store on SQLite and PostgreSQL: assignments, boxes and level calls,
blinding (tests that try to see or change another reader's work), version conflicts, submit and
reopen, bad input, and reader CSV rows refused one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events
from db import models as m
from db.csv_import import import_csv
from db.session import unit_of_work
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied
from tests.annotation_helpers import FIRST_INSTANCE, add_study, setup_people, user


@pytest.fixture
def world(db_sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], dict[str, int], int]:
    """People, and study S1 assigned to reader1 and reader2."""
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.3.1")
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        ids["S1"] = study.id
    return db_sessions, ids, ids["S1"]


def box(slice_index: int = 3, x: float = 10, y: float = 12, w: float = 8, h: float = 6,
        level: str | None = "C5", note: str = "") -> ann.BoxInput:
    return ann.BoxInput(slice_index, x, y, w, h, level=level, note=note)


def save(sessions: sessionmaker[Session], uid: int, study: int, b: ann.BoxInput, **kw: object) -> m.Box:
    with unit_of_work(sessions) as s:
        return box_events.save_box(s, user(s, uid), study, b, **kw)  # type: ignore[arg-type]


# --- assignments ---------------------------------------------------------------------------------


def test_only_admins_assign_and_only_active_annotators(world) -> None:
    sessions, ids, s1 = world
    with unit_of_work(sessions) as s:
        with pytest.raises(PermissionDenied, match="only admins"):
            ann.assign(s, user(s, ids["adjudicator"]), s1, [ids["reader3"]])
        with pytest.raises(InputError, match="not an active annotator"):
            ann.assign(s, user(s, ids["admin"]), s1, [ids["viewer"]])
        # assigning again adds nothing
        assert ann.assign(s, user(s, ids["admin"]), s1, [ids["reader1"], ids["reader3"]]) == [ids["reader3"]]


def test_balanced_assignment_gives_each_study_three_readers_and_evens_the_load(
    db_sessions: sessionmaker[Session],
) -> None:
    ids = setup_people(db_sessions, n_readers=4)
    readers = [ids[f"reader{i}"] for i in range(1, 5)]
    with unit_of_work(db_sessions) as s:
        studies = [add_study(s, f"1.2.9.{i}").id for i in range(4)]
        got = ann.assign_balanced(s, user(s, ids["admin"]), studies, readers, per_study=3)
    assert all(len(v) == 3 for v in got.values())
    with unit_of_work(db_sessions, readonly=True) as s:
        load = dict(s.execute(select(m.Assignment.reader_id, func.count())
                              .group_by(m.Assignment.reader_id)).all())
        assert sorted(load.values()) == [3, 3, 3, 3]  # 12 assignments over 4 readers
        with pytest.raises(InputError, match="5 readers per study"):
            ann.assign_balanced(s, user(s, ids["admin"]), studies, readers, per_study=5)


def test_reader_queue_lists_only_own_studies_unfinished_first(world) -> None:
    sessions, ids, s1 = world
    with unit_of_work(sessions) as s:
        s2 = add_study(s, "1.2.3.2").id
        add_study(s, "1.2.3.3")  # not assigned to reader1
        ann.assign(s, user(s, ids["admin"]), s2, [ids["reader1"]])
    with unit_of_work(sessions) as s:
        ann.submit(s, user(s, ids["reader1"]), s1)
    with unit_of_work(sessions, readonly=True) as s:
        queue = ann.reader_queue(s, user(s, ids["reader1"]))
        assert [(st.study_uid, a.status) for st, a in queue] == [
            ("1.2.3.2", "assigned"), ("1.2.3.1", "submitted")]
        assert [st.study_uid for st, _ in ann.reader_queue(s, user(s, ids["reader3"]))] == []


# --- boxes ---------------------------------------------------------------------------------------


def test_box_lifecycle_is_saved_audited_and_marks_its_level(world) -> None:
    sessions, ids, s1 = world
    row = save(sessions, ids["reader1"], s1, box(note="cortical break"))
    assert row.instance_number == FIRST_INSTANCE + 3 and row.version == 1
    moved = save(sessions, ids["reader1"], s1, box(x=11, level="C6"), box_id=row.id,
                 expected_version=1)
    assert (moved.x, moved.level, moved.version) == (11, "C6", 2)
    with unit_of_work(sessions) as s:
        box_events.delete_saved_box(s, user(s, ids["reader1"]), row.id, expected_version=2)
    with unit_of_work(sessions, readonly=True) as s:
        reader1 = user(s, ids["reader1"])
        assert ann.visible_boxes(s, reader1, s1) == []
        kept = s.get(m.Box, row.id)
        assert kept is not None and kept.deleted_at is not None  # soft delete: history stays
        actions = s.scalars(select(m.AuditEntry.action).where(m.AuditEntry.entity == "box")
                            .order_by(m.AuditEntry.id)).all()
        assert actions == ["box.create", "box.update", "box.delete"]
        calls = {lvl: c.call for lvl, c in ann.own_level_calls(s, reader1, s1).items()}
        assert calls == {"C5": "fractured", "C6": "fractured"}
        study = s.get(m.Study, s1)
        assignment = ann.assignment_for(s, s1, ids["reader1"])
        assert study is not None and study.status == "in_reading"
        assert assignment is not None and assignment.status == "in_progress"


def test_stale_version_is_a_conflict_with_a_clear_message(world) -> None:
    sessions, ids, s1 = world
    row = save(sessions, ids["reader1"], s1, box())
    save(sessions, ids["reader1"], s1, box(x=20), box_id=row.id, expected_version=1)  # tab A
    with pytest.raises(ConflictError, match="changed elsewhere .*another tab.*reload"):
        save(sessions, ids["reader1"], s1, box(x=30), box_id=row.id, expected_version=1)  # tab B
    with pytest.raises(ConflictError):
        with unit_of_work(sessions) as s:
            box_events.delete_saved_box(s, user(s, ids["reader1"]), row.id, expected_version=1)
    with unit_of_work(sessions, readonly=True) as s:
        current = s.get(m.Box, row.id)
        assert current is not None and (current.x, current.version, current.deleted_at) == (20, 2, None)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (box(x=44, w=8), "lies outside the 48×64 image"),
        (box(y=-1), "lies outside"),
        (box(w=0), "width and height must be positive"),
        (box(h=-3), "width and height must be positive"),
        (box(slice_index=10), "slice 10 does not exist, the series has 10 slices"),
        (box(x=float("nan")), "finite numbers"),
        (box(level="C9"), "not a vertebra level"),
    ],
)
def test_bad_boxes_are_refused_and_nothing_is_saved(world, bad: ann.BoxInput, message: str) -> None:
    sessions, ids, s1 = world
    with pytest.raises(InputError, match=message):
        save(sessions, ids["reader1"], s1, bad)
    with unit_of_work(sessions, readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(m.Box)) == 0
        assert s.scalar(select(func.count()).select_from(m.LevelLabel)) == 0


def test_unassigned_and_non_annotators_cannot_write(world) -> None:
    sessions, ids, s1 = world
    with pytest.raises(PermissionDenied, match="not assigned to you"):
        save(sessions, ids["reader3"], s1, box())
    for role in ("adjudicator", "admin", "viewer"):
        with pytest.raises(PermissionDenied, match="only annotators"):
            save(sessions, ids[role], s1, box())


# --- blinding ------------------------------------------------------------------------------------


def test_a_reader_never_sees_or_touches_another_readers_work(world) -> None:
    sessions, ids, s1 = world
    mine = save(sessions, ids["reader1"], s1, box(note="reader1's finding"))
    save(sessions, ids["reader2"], s1, box(x=30, level="C3"))
    with unit_of_work(sessions) as s:
        ann.set_level_call(s, user(s, ids["reader1"]), s1, "C2", "unsure")

    with unit_of_work(sessions, readonly=True) as s:
        reader2 = user(s, ids["reader2"])
        assert [b.reader_id for b in ann.visible_boxes(s, reader2, s1)] == [ids["reader2"]]
        assert [b.reader_id for b in ann.visible_boxes(s, reader2, s1, slice_index=3)] == [ids["reader2"]]
        assert {b.reader for b in ann.visible_core_boxes(s, reader2, s1)} == {"reader2"}
        assert ann.visible_level_calls(s, reader2, s1) == {"reader2": {"C3": "fractured"}}
        assert ann.visible_calls_by_study(s, reader2) == {"1.2.3.1": {"reader2": {"C3": "fractured"}}}
        assert list(ann.own_level_calls(s, reader2, s1)) == ["C3"]
        with pytest.raises(PermissionDenied):
            ann.assignment_overview(s, reader2)
        viewer = user(s, ids["viewer"])
        assert ann.visible_boxes(s, viewer, s1) == [] and ann.visible_level_calls(s, viewer, s1) == {}
        assert ann.visible_calls_by_study(s, viewer) == {}
        adjudicator = user(s, ids["adjudicator"])
        assert {b.reader for b in ann.visible_core_boxes(s, adjudicator, s1)} == {"reader1", "reader2"}
        assert set(ann.visible_level_calls(s, adjudicator, s1)) == {"reader1", "reader2"}

    # changing or deleting it by id is refused exactly as for a box that does not exist
    with pytest.raises(NotFound, match=f"box {mine.id} does not exist or is not yours"):
        save(sessions, ids["reader2"], s1, box(x=1), box_id=mine.id)
    with pytest.raises(NotFound, match="does not exist or is not yours"):
        with unit_of_work(sessions) as s:
            box_events.delete_saved_box(s, user(s, ids["reader2"]), mine.id)
    with unit_of_work(sessions, readonly=True) as s:
        still = s.get(m.Box, mine.id)
        assert still is not None and (still.x, still.deleted_at) == (10, None)


# --- level calls ---------------------------------------------------------------------------------


def test_level_calls_rules_and_version_check(world) -> None:
    sessions, ids, s1 = world
    save(sessions, ids["reader1"], s1, box(level="C5"))
    with unit_of_work(sessions) as s:
        r1 = user(s, ids["reader1"])
        with pytest.raises(InputError, match="'maybe' is not a level call"):
            ann.set_level_call(s, r1, s1, "C2", "maybe")
        with pytest.raises(InputError, match="you drew 1 box on C5.*delete those boxes"):
            ann.set_level_call(s, r1, s1, "C5", "not_fractured")
        row = ann.set_level_call(s, r1, s1, "t1", "not_fractured")
        assert (row.level, row.call, row.version) == ("T1", "not_fractured", 1)
    with unit_of_work(sessions) as s:
        row = ann.set_level_call(s, user(s, ids["reader1"]), s1, "T1", "unsure", expected_version=1)
        assert row.version == 2
    with pytest.raises(ConflictError, match="T1 was changed to 'unsure' elsewhere"):
        with unit_of_work(sessions) as s:
            ann.set_level_call(s, user(s, ids["reader1"]), s1, "T1", "fractured", expected_version=1)


# --- submit and reopen ---------------------------------------------------------------------------


def test_submit_locks_work_reopen_until_adjudication(world) -> None:
    sessions, ids, s1 = world
    save(sessions, ids["reader1"], s1, box())
    with unit_of_work(sessions) as s:
        ann.submit(s, user(s, ids["reader1"]), s1)
    with pytest.raises(PermissionDenied, match="you submitted this study; reopen it"):
        save(sessions, ids["reader1"], s1, box(x=30))
    with unit_of_work(sessions) as s:
        ann.reopen(s, user(s, ids["reader1"]), s1)
    save(sessions, ids["reader1"], s1, box(x=30))
    with unit_of_work(sessions) as s:
        ann.submit(s, user(s, ids["reader1"]), s1)
        ann.submit(s, user(s, ids["reader2"]), s1)
    with unit_of_work(sessions) as s:
        study = s.get(m.Study, s1)
        assert study is not None and study.status == "read"  # every reader submitted
        study.status = m.StudyStatus.in_adjudication.value
    with pytest.raises(PermissionDenied, match="adjudication of this study has started"):
        with unit_of_work(sessions) as s:
            ann.reopen(s, user(s, ids["reader1"]), s1)
    with pytest.raises(InputError, match="nothing to reopen"):
        with unit_of_work(sessions) as s:
            ann.reopen(s, user(s, ids["reader3"]), s1)


# --- CSV import of readers' work -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "header"), [
    ("boxes.csv", "StudyInstanceUID,slice_number,x,y,width,height,level,note"),
    ("readers_boxes.csv", "StudyInstanceUID,slice_number,x,y,width,height"),
])
def test_a_readers_csv_without_its_reader_column_is_refused_whole(world, tmp_path: Path, name: str,
                                                                 header: str) -> None:
    sessions, ids, s1 = world
    path = tmp_path / name
    path.write_text(header + "\n1.2.3.1,104,10,12,8,6" + (",C5,x" if "level" in header else "") + "\n")
    with unit_of_work(sessions) as s:
        n_boxes = len(s.scalars(select(m.Box)).all())
        with pytest.raises(InputError, match=rf"^{name}: a readers' boxes CSV needs a reader column"):
            import_csv(s, path, "admin")
    with unit_of_work(sessions, readonly=True) as s:
        assert len(s.scalars(select(m.Box)).all()) == n_boxes  # nothing stored as dataset boxes


def test_reader_csv_rows_with_unknown_study_or_reader_are_refused_by_line(world, tmp_path: Path) -> None:
    sessions, ids, s1 = world
    path = tmp_path / "readers_boxes.csv"
    path.write_text(
        "StudyInstanceUID,slice_number,x,y,width,height,reader,level,note\n"
        "1.2.3.1,104,10,12,8,6,reader1,C5,ok\n"  # line 2: imported
        "9.9.9,104,10,12,8,6,reader1,C5,\n"  # line 3: unknown study
        "1.2.3.1,104,10,12,8,6,nobody,C5,\n"  # line 4: unknown reader
        "1.2.3.1,104,10,12,8,6,viewer,C5,\n"  # line 5: not an annotator
        "1.2.3.1,999,10,12,8,6,reader2,C5,\n"  # line 6: slice that does not exist
        "1.2.3.1,104,45,12,8,6,reader2,C5,\n"  # line 7: outside the image
        "1.2.3.1,104,10,12,0,6,reader2,C5,\n"  # line 8: zero size
        "1.2.3.1,105,20,22,5,5,reader2,C6,ok too\n"  # line 9: imported
        "1.2.3.1,1e400,10,12,8,6,reader2,C5,\n"  # line 10: slice number out of any range
        "1.2.3.1,104,nan,12,8,6,reader2,C5,\n"  # line 11: not a finite number
        "1.2.3.1,104.5,10,12,8,6,reader2,C5,\n"  # line 12: not an integer
    )
    with unit_of_work(sessions) as s:
        outcome = import_csv(s, path, "admin")
    assert outcome.imported == 2
    by_line = {int(p.split(" line ")[1].split(":")[0]): p for p in outcome.problems}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 10, 11, 12] and len(outcome.problems) == 9
    assert all(p.startswith("readers_boxes.csv line ") for p in outcome.problems)
    for line, text in [(3, "study '9.9.9' is not imported"), (4, "reader 'nobody' is not a user"),
                       (5, "user 'viewer' is viewer, not an annotator"),
                       (6, "slice_number 999 does not exist"), (7, "lies outside"),
                       (8, "width and height must be positive"),
                       (10, "slice_number must be a finite number, got '1e400'"),
                       (11, "column x must be a finite number, got 'nan'"),
                       (12, "slice_number must be an integer, got '104.5'")]:
        assert text in by_line[line]
    with unit_of_work(sessions, readonly=True) as s:
        adjudicator = user(s, ids["adjudicator"])
        got = sorted((b.reader, b.slice_index, b.x) for b in ann.visible_core_boxes(s, adjudicator, s1))
        assert got == [("reader1", 3, 10.0), ("reader2", 4, 20.0)]
