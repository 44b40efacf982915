"""Box events of the reading workstation on SQLite and PostgreSQL (db.box_events): versions checked
per event (two tabs, two threads), the fracture's interpolated boxes recomputed in the same
transaction and visible as real boxes (visible_boxes, the union, exports, agreement), clipping,
levels that follow the boxes, the submit checks and reading time."""

from __future__ import annotations

import csv
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events as ev
from db import models as m
from db import reading_time as rt
from db.csv_import import import_csv
from db.exporter import export_readers
from db.session import make_engine, make_sessionmaker, unit_of_work
from db.workspace import Workspace
from spine_core.boxes import Box
from spine_core.config import Settings
from spine_core.consensus import union_boxes
from spine_core.errors import ConflictError, InputError, PermissionDenied
from spine_core.interpolation import interpolate
from tests.annotation_helpers import FIRST_INSTANCE, add_study, setup_people, user

SHAPE = (30, 64, 48)  # slices, rows, columns
T = TypeVar("T")


@pytest.fixture
def world(db_sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], dict[str, int]]:
    """People; study S1 (30 slices) assigned to reader1 and reader2."""
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.5.1", shape=SHAPE)
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        ids["S1"] = study.id
    return db_sessions, ids


def act(sessions: sessionmaker[Session], uid: int, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run ``fn(session, user, *args)`` in its own transaction (one tab's request)."""
    with unit_of_work(sessions) as s:
        return fn(s, user(s, uid), *args, **kw)


def state(sessions: sessionmaker[Session], uid: int, study: int) -> ev.StudyBoxes:
    with unit_of_work(sessions, readonly=True) as s:
        return ev.boxes_state(s, user(s, uid), study)


def key(slice_index: int, x: float, y: float, w: float, h: float, *, fracture: str | None = "F1",
        level: str | None = "C5") -> ann.BoxInput:
    return ann.BoxInput(slice_index, x, y, w, h, level=level, fracture=fracture)


def audit(sessions: sessionmaker[Session], **where: str) -> list[m.AuditEntry]:
    with unit_of_work(sessions, readonly=True) as s:
        stmt = select(m.AuditEntry).order_by(m.AuditEntry.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(m.AuditEntry, column) == value)
        return list(s.scalars(stmt))


@pytest.fixture
def workspace(migrated_db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    yield ws
    ws.sessions.kw["bind"].dispose()


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- interpolation through the database ---------------------------------------------------------


def test_two_keys_ten_slices_apart_make_nine_real_boxes_in_every_view(
    world, workspace: Workspace, tmp_path: Path,
) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    first = act(sessions, r1, ev.create_box, s1, key(5, 10, 10, 10, 10))
    assert first.interpolated == () and first.box is not None and first.box.is_key
    second = act(sessions, r1, ev.create_box, s1, key(15, 20, 14, 20, 10))
    assert [b.slice_index for b in second.interpolated] == list(range(6, 15))
    for b in second.interpolated:
        k = b.slice_index - 5
        assert (b.x, b.y, b.x1, b.y1) == (10 + k, 10 + 0.4 * k, 20 + 2 * k, 20 + 0.4 * k) or \
            (b.x, b.y, b.x1, b.y1) == pytest.approx((10 + k, 10 + 0.4 * k, 20 + 2 * k, 20 + 0.4 * k))
        assert (b.is_key, b.interpolated, b.source, b.fracture, b.level) == (
            False, True, "interpolated", "F1", "C5")
        assert b.slice_number == FIRST_INSTANCE + b.slice_index
    # the same values as the pure rule
    pure = interpolate([Box(5, 10, 10, 10, 10), Box(15, 20, 14, 20, 10)])
    assert [(b.x, b.y, b.width, b.height) for b in second.interpolated] == [
        (b.x, b.y, b.width, b.height) for b in pure.boxes]

    boxes, version = state(sessions, r1, s1)
    assert len(boxes) == 11 and sum(b.is_key for b in boxes) == 2
    assert version == second.study_version > first.study_version
    with unit_of_work(sessions, readonly=True) as s:
        adjudicator = user(s, ids["adjudicator"])
        assert len(ann.visible_boxes(s, adjudicator, s1)) == 11
        core = ann.visible_core_boxes(s, adjudicator, s1)
        assert len(core) == 11 and {b.reader for b in core} == {"reader1"}
        assert len(union_boxes(core)) == 11  # one union box per slice 5..15
        assert ann.visible_boxes(s, user(s, ids["reader2"]), s1) == []  # blinded
        assert ev.boxes_state(s, user(s, ids["reader2"]), s1) == ([], 0)
        assert ev.study_version(s, user(s, ids["viewer"]), s1) == 0

    act(sessions, r1, ann.submit, s1)
    with unit_of_work(sessions, readonly=True) as s:
        inputs = ann.agreement_inputs(s, user(s, ids["admin"]))
        assert len(inputs.boxes["1.2.5.1"]) == 11

    export_readers(workspace, tmp_path / "out")
    rows = csv_rows(tmp_path / "out" / "readers_boxes.csv")
    assert len(rows) == 11
    assert {r["fracture"] for r in rows} == {"F1"}
    assert sorted(int(r["slice_number"]) for r in rows if r["key"] == "1") == [
        FIRST_INSTANCE + 5, FIRST_INSTANCE + 15]
    assert sum(r["key"] == "0" for r in rows) == 9
    middle = next(r for r in rows if int(r["slice_number"]) == FIRST_INSTANCE + 10)
    assert (float(middle["x"]), float(middle["y"]), float(middle["width"]), float(middle["height"])) == (
        15.0, 12.0, 15.0, 10.0)
    studies = csv_rows(tmp_path / "out" / "readers_studies.csv")
    assert [(r["reader"], r["status"]) for r in studies] == [("reader1", "submitted"),
                                                              ("reader2", "assigned")]
    assert studies[0]["submitted_at"] and studies[1]["submitted_at"] == ""


def test_moving_adjusting_and_deleting_keys_keep_the_fracture_in_line(world) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    act(sessions, r1, ev.create_box, s1, key(5, 10, 10, 10, 10))
    top = act(sessions, r1, ev.create_box, s1, key(15, 20, 10, 10, 10))
    assert top.box is not None
    before = {b.slice_index: b for b in top.interpolated}

    # move the upper key to slice 11: interpolated 6..10 are updated in place, 11..14 removed
    moved = act(sessions, r1, ev.change_box, top.box.id, top.box.version,
                replace(top.box.as_input(), slice_index=11))
    assert moved.box is not None and moved.box.slice_index == 11 and moved.box.version == 2
    now = {b.slice_index: b for b in moved.interpolated}
    assert sorted(now) == [6, 7, 8, 9, 10]
    assert all(now[s].id == before[s].id and now[s].version == 2 for s in now)
    assert set(moved.removed) == {before[s].id for s in range(11, 15)}
    assert now[8].x == pytest.approx(10 + 10 * 3 / 6)

    # adjusting an interpolated box makes it a key box and splits the fracture
    middle = now[8]
    adjusted = act(sessions, r1, ev.change_box, middle.id, middle.version,
                   replace(middle.as_input(), x=30.0))
    assert adjusted.box is not None and adjusted.box.id == middle.id
    assert (adjusted.box.is_key, adjusted.box.source, adjusted.box.x) == (True, "drawn", 30.0)
    assert sorted(b.slice_index for b in adjusted.interpolated) == [6, 7, 9, 10]
    boxes, _ = state(sessions, r1, s1)
    assert sorted(b.slice_index for b in boxes if b.is_key) == [5, 8, 11]
    assert next(b for b in boxes if b.slice_index == 7).x == pytest.approx(10 + 20 * 2 / 3)

    # an interpolated box cannot be deleted; a key can, and its interpolated boxes follow
    seven = next(b for b in boxes if b.slice_index == 7)
    with pytest.raises(InputError, match="interpolated between the key boxes of fracture F1"):
        act(sessions, r1, ev.delete_box, seven.id, seven.version)
    upper = next(b for b in boxes if b.slice_index == 11)
    gone = act(sessions, r1, ev.delete_box, upper.id, upper.version)
    assert gone.box is None and upper.id in gone.removed
    assert sorted(b.slice_index for b in gone.interpolated) == [6, 7]
    boxes, _ = state(sessions, r1, s1)
    assert sorted(b.slice_index for b in boxes) == [5, 6, 7, 8]

    # moving a key to another fracture recomputes both
    five = next(b for b in boxes if b.slice_index == 5)
    split = act(sessions, r1, ev.change_box, five.id, five.version,
                replace(five.as_input(), fracture="F2"))
    assert split.interpolated == ()
    boxes, _ = state(sessions, r1, s1)
    assert sorted((b.slice_index, b.fracture) for b in boxes) == [(5, "F2"), (8, "F1")]
    entries = audit(sessions, action="fracture.interpolate")
    assert entries and all(e.entity == "fracture" for e in entries)


def test_a_new_key_on_the_slice_of_another_key_supersedes_it(world) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    old = act(sessions, r1, ev.create_box, s1, key(5, 10, 10, 10, 10))
    act(sessions, r1, ev.create_box, s1, key(9, 10, 10, 10, 10))
    loaded = state(sessions, r1, s1).study_version
    act(sessions, r1, ev.create_box, s1, key(20, 1, 1, 5, 5, fracture="F9"))  # another tab
    with pytest.raises(ConflictError, match="would be replaced.*another tab or device"):
        act(sessions, r1, ev.create_box, s1, key(5, 12, 12, 10, 10), base_study_version=loaded)
    fresh = state(sessions, r1, s1).study_version
    new = act(sessions, r1, ev.create_box, s1, key(5, 12, 12, 10, 10), base_study_version=fresh)
    assert old.box is not None and [b.id for b in new.superseded] == [old.box.id]
    assert old.box.id in new.removed
    assert [b.x for b in new.interpolated] == pytest.approx([12 - 0.5 * k for k in (1, 2, 3)])
    (entry,) = audit(sessions, action="box.supersede")
    assert entry.entity_id == str(old.box.id) and new.box is not None
    assert entry.after == {"superseded_by": new.box.id, "fracture": "F1"}
    boxes, _ = state(sessions, r1, s1)
    assert [b.x for b in boxes if b.slice_index == 5] == [12]


def test_next_fracture_id_and_clipping_and_zero_size(world) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    assert act(sessions, r1, ev.next_fracture_id, s1) == "F1"
    clipped = act(sessions, r1, ev.create_box, s1, key(3, -4, 60, 10, 10))
    assert clipped.box is not None
    assert (clipped.box.x, clipped.box.y, clipped.box.width, clipped.box.height) == (0, 60, 6, 4)
    assert act(sessions, r1, ev.next_fracture_id, s1) == "F2"
    for bad, message in [(key(3, 10, 10, 0, 5), "zero size"), (key(3, 10, 10, 5, -1), "zero size"),
                         (key(3, 50, 10, 5, 5), "wholly outside the 48×64 image"),
                         (key(40, 10, 10, 5, 5), "slice 40 does not exist"),
                         (replace(key(3, 1, 1, 5, 5), is_key=False), "interpolated boxes are made")]:
        with pytest.raises(InputError, match=message):
            act(sessions, r1, ev.create_box, s1, bad)
    assert len(state(sessions, r1, s1).boxes) == 1


# --- versions: two tabs ------------------------------------------------------------------------


def test_two_tabs_with_one_base_version_the_second_is_refused_and_nothing_is_lost(world) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    act(sessions, r1, ev.create_box, s1, key(5, 10, 10, 10, 10))
    act(sessions, r1, ev.create_box, s1, key(15, 20, 10, 10, 10))
    tab_a, version_a = state(sessions, r1, s1)
    tab_b, version_b = state(sessions, r1, s1)
    assert version_a == version_b
    box_a = next(b for b in tab_a if b.slice_index == 5)
    box_b = next(b for b in tab_b if b.slice_index == 5)

    done = act(sessions, r1, ev.change_box, box_a.id, box_a.version, replace(box_a.as_input(), x=14.0))
    assert done.study_version > version_b
    with pytest.raises(ConflictError, match="changed elsewhere.*another tab or device and was refreshed"):
        act(sessions, r1, ev.change_box, box_b.id, box_b.version, replace(box_b.as_input(), x=2.0))
    with pytest.raises(ConflictError, match="another tab or device"):
        act(sessions, r1, ev.delete_box, box_b.id, box_b.version)
    # tab B's view of an interpolated box is stale too (tab A's move changed it)
    mid_b = next(b for b in tab_b if b.slice_index == 10)
    with pytest.raises(ConflictError):
        act(sessions, r1, ev.change_box, mid_b.id, mid_b.version, replace(mid_b.as_input(), y=1.0))

    with unit_of_work(sessions, readonly=True) as s:
        row = s.get(m.Box, box_a.id)
        assert row is not None and (row.x, row.deleted_at, row.version) == (14.0, None, 2)
        mid = s.get(m.Box, mid_b.id)
        assert mid is not None and mid.is_key is False and mid.x == pytest.approx(17.0)
    deletes = [e for e in audit(sessions, entity="box") if e.action in ("box.delete", "box.supersede")]
    assert deletes == []
    assert [e.action for e in audit(sessions, entity="box")] == ["box.create", "box.create", "box.update"]

    # the refreshed tab B works on
    tab_b, _ = state(sessions, r1, s1)
    box_b = next(b for b in tab_b if b.slice_index == 5)
    act(sessions, r1, ev.change_box, box_b.id, box_b.version, replace(box_b.as_input(), x=2.0))


N_TABS = 8


def test_tabs_racing_on_one_fracture_in_threads_lose_nothing(migrated_db_url: str) -> None:
    """Eight tabs of one reader add keys to one fracture at the same moment while two others move
    one box from the same version: every key is kept, one interpolated box per slice between
    keys, and exactly one of the two moves wins."""
    engine = (make_engine(migrated_db_url, pool_size=N_TABS + 2, max_overflow=0)
              if not migrated_db_url.startswith("sqlite") else make_engine(migrated_db_url))
    sessions = make_sessionmaker(engine)
    try:
        ids = setup_people(sessions, n_readers=1)
        r1 = ids["reader1"]
        with unit_of_work(sessions) as s:
            study = add_study(s, "1.2.5.9", shape=SHAPE).id
            ann.assign(s, user(s, ids["admin"]), study, [r1])
        act(sessions, r1, ev.create_box, study, key(2, 10, 10, 10, 10))
        last = act(sessions, r1, ev.create_box, study, key(28, 20, 20, 10, 10))
        assert last.box is not None
        lone = act(sessions, r1, ev.create_box, study, key(1, 30, 30, 5, 5, fracture=None))
        assert lone.box is not None
        barrier = threading.Barrier(N_TABS + 2)

        def add_key(i: int) -> str:
            barrier.wait(timeout=60)
            act(sessions, r1, ev.create_box, study, key(10 + i, 15.0, 15.0, 10.0, 10.0 + i))
            return "saved"

        def move(x: float) -> str:
            barrier.wait(timeout=60)
            assert lone.box is not None
            try:
                act(sessions, r1, ev.change_box, lone.box.id, lone.box.version,
                    replace(lone.box.as_input(), x=x))
            except ConflictError:
                return "conflict"
            return "saved"

        with ThreadPoolExecutor(max_workers=N_TABS + 2) as pool:
            futures = [pool.submit(add_key, i) for i in range(N_TABS)]
            futures += [pool.submit(move, x) for x in (31.0, 32.0)]
            outcomes = [f.result() for f in futures]
        assert outcomes[:N_TABS] == ["saved"] * N_TABS
        assert sorted(outcomes[N_TABS:]) == ["conflict", "saved"]

        with unit_of_work(sessions, readonly=True) as s:
            rows = list(s.scalars(select(m.Box).where(m.Box.fracture == "F1", m.Box.deleted_at.is_(None))))
            keys = sorted(b.slice_index for b in rows if b.is_key)
            assert keys == [2, *range(10, 10 + N_TABS), 28]
            per_slice = [b.slice_index for b in rows]
            assert len(per_slice) == len(set(per_slice)) == 27  # slices 2..28, one box each
            expected = interpolate(Box(b.slice_index, b.x, b.y, b.width, b.height) for b in rows if b.is_key)
            got = sorted((b.slice_index, b.x, b.y, b.width, b.height) for b in rows if not b.is_key)
            assert got == pytest.approx(sorted((b.slice_index, b.x, b.y, b.width, b.height)
                                               for b in expected.boxes))
            moved = s.get(m.Box, lone.box.id)
            assert moved is not None and moved.x in (31.0, 32.0) and moved.version == 2
            created = s.scalar(select(func.count()).select_from(m.AuditEntry)
                               .where(m.AuditEntry.action == "box.create"))
            assert created == N_TABS + 3
    finally:
        engine.dispose()


# --- levels follow the boxes --------------------------------------------------------------------


def test_deleting_the_last_box_of_a_level_asks_about_it_and_never_unmarks_it(world) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    a = act(sessions, r1, ev.create_box, s1, key(3, 1, 1, 5, 5, fracture=None, level="C5"))
    b = act(sessions, r1, ev.create_box, s1, key(4, 1, 1, 5, 5, fracture=None, level="c5"))
    c = act(sessions, r1, ev.create_box, s1, key(6, 1, 1, 5, 5, fracture=None, level="C6"))
    assert a.box and b.box and c.box and b.box.level == "C5"
    with unit_of_work(sessions, readonly=True) as s:
        calls = {lvl: row.call for lvl, row in ann.own_level_calls(s, user(s, r1), s1).items()}
        assert calls == {"C5": "fractured", "C6": "fractured"}

    first = act(sessions, r1, ev.delete_box, a.box.id, a.box.version)
    assert first.ask_levels == () and first.ask_level is None
    last = act(sessions, r1, ev.delete_box, b.box.id, b.box.version)
    assert last.ask_level == "C5" and last.ask_levels == ("C5",)
    relabelled = act(sessions, r1, ev.change_box, c.box.id, c.box.version,
                     replace(c.box.as_input(), level="C7"))
    assert relabelled.ask_levels == ("C6",)
    with unit_of_work(sessions, readonly=True) as s:
        calls = {lvl: row.call for lvl, row in ann.own_level_calls(s, user(s, r1), s1).items()}
        assert calls == {"C5": "fractured", "C6": "fractured", "C7": "fractured"}  # nothing unmarked
    # the reader answers: C5 is not fractured after all
    act(sessions, r1, ann.set_level_call, s1, "C5", "not_fractured")

    # a fracture whose key is deleted takes its interpolated boxes of another level with it
    k1 = act(sessions, r1, ev.create_box, s1, key(10, 1, 1, 5, 5, level="C3"))
    k2 = act(sessions, r1, ev.create_box, s1, key(14, 1, 1, 5, 5, level="C3"))
    assert k1.box and k2.box and len(k2.interpolated) == 3
    one = act(sessions, r1, ev.delete_box, k2.box.id, k2.box.version)
    assert one.ask_levels == () and len(one.removed) == 4  # C3 still has the key on slice 10


def test_submit_lists_boxes_without_level_and_contradicting_calls_unless_confirmed(
    world, tmp_path: Path,
) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    act(sessions, r1, ev.create_box, s1, key(3, 1, 1, 5, 5, fracture=None, level=None))
    act(sessions, r1, ev.create_box, s1, key(7, 1, 1, 5, 5, fracture=None, level=None))
    act(sessions, r1, ev.create_box, s1, key(8, 1, 1, 5, 5, fracture=None, level="C5"))
    calls = tmp_path / "readers_levels.csv"  # an imported call that contradicts the box
    calls.write_text("StudyInstanceUID,reader,level,call\n1.2.5.1,reader1,C5,0\n")
    with unit_of_work(sessions) as s:
        assert import_csv(s, calls, "admin").imported == 1

    with pytest.raises(ann.SubmitNeedsConfirmation) as refused:
        act(sessions, r1, ann.submit, s1)
    message = str(refused.value)
    assert message == (
        "Not submitted: 2 boxes have no level (slice numbers 104, 108); C5 is called not fractured "
        "although you have 1 box on it. Give every box a level and make the calls match the boxes, "
        "or confirm to submit the study as it is."
    )
    assert refused.value.check == ann.SubmitCheck((104, 108), (("C5", 1),))
    assert isinstance(refused.value, InputError)
    with unit_of_work(sessions, readonly=True) as s:
        assignment = ann.assignment_for(s, s1, r1)
        assert assignment is not None and assignment.status == "in_progress"
        assert ann.submit_check(s, user(s, r1), s1) == refused.value.check

    check = act(sessions, r1, ann.submit, s1, confirm=True)
    assert not check.ok
    (entry,) = audit(sessions, action="submit")
    assert entry.after == {"confirmed": {"unlevelled": [104, 108], "contradicted": {"C5": 1}}}
    # a study without problems submits without confirmation, as before
    assert act(sessions, ids["reader2"], ann.submit, s1).ok


# --- reading time -------------------------------------------------------------------------------


def test_reading_time_is_capped_per_heartbeat_counted_once_across_tabs_and_admin_only(
    world, workspace: Workspace, tmp_path: Path,
) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    t0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)

    def beat(seconds: float, at: float, uid: int = r1) -> float:
        return act(sessions, uid, rt.record_reading, s1, seconds, now=t0 + dt.timedelta(seconds=at)).active_s

    opened = act(sessions, r1, rt.open_study, s1, now=t0)
    assert opened.opened_at == t0 and opened.active_s == 0
    assert act(sessions, r1, rt.open_study, s1, now=t0 + dt.timedelta(hours=1)).opened_at == t0
    assert beat(30, 30) == 30
    assert beat(0, 45) == 30  # an idle tab sends 0
    assert beat(3600, 1000) == 30 + rt.HEARTBEAT_CAP_S  # a tab left open claims an hour: capped
    assert beat(30, 1030) == 120  # tab A
    assert beat(31, 1031) == 121  # tab B, same minutes: only the new second counts
    with pytest.raises(InputError, match="≥ 0"):
        beat(-1, 1040)
    with pytest.raises(InputError):
        beat(float("nan"), 1040)
    with pytest.raises(PermissionDenied, match="not assigned"):
        beat(10, 1040, uid=ids["reader3"])
    with pytest.raises(PermissionDenied, match="only annotators"):
        beat(10, 1040, uid=ids["viewer"])

    act(sessions, r1, ann.submit, s1)
    assert beat(30, 2000) == 121  # after submission nothing counts
    with unit_of_work(sessions, readonly=True) as s:
        (row, other) = rt.reading_times(s, user(s, ids["admin"]), study_id=s1)
        assert (row.reader, row.status, row.opened_at, row.active_s) == ("reader1", "submitted", t0, 121)
        assert row.submitted_at is not None and row.heartbeats == 5
        assert (other.reader, other.opened_at, other.active_s) == ("reader2", None, 0.0)
        for role in ("reader1", "adjudicator", "viewer"):
            with pytest.raises(PermissionDenied, match="only admins"):
                rt.reading_times(s, user(s, ids[role]))
    export_readers(workspace, tmp_path / "out")
    (first, second) = csv_rows(tmp_path / "out" / "readers_studies.csv")
    assert (first["reader"], first["opened_at"], float(first["active_s"])) == (
        "reader1", t0.isoformat(), 121.0)
    assert first["submitted_at"] == row.submitted_at.isoformat()
    act(sessions, r1, ann.reopen, s1)
    with unit_of_work(sessions, readonly=True) as s:
        assert rt.reading_times(s, user(s, ids["admin"]), study_id=s1)[0].submitted_at is None
    assert beat(20, 2100) == 141  # reading again after reopening counts


# --- readers' CSV with fracture and key columns -------------------------------------------------


def test_reader_csv_with_fracture_and_key_columns_is_interpolated_checked_and_round_trips(
    world, workspace: Workspace, tmp_path: Path,
) -> None:
    sessions, ids = world
    with unit_of_work(sessions) as s:  # a series whose instance numbers run backwards: 130..101
        series = ann.primary_series(s, ids["S1"])
        series.instance_numbers = list(range(FIRST_INSTANCE + 29, FIRST_INSTANCE - 1, -1))
    number = {i: FIRST_INSTANCE + 29 - i for i in range(30)}  # slice_index -> slice_number
    header = "StudyInstanceUID,slice_number,x,y,width,height,reader,level,note,fracture,key\n"
    lines = [
        f"1.2.5.1,{number[5]},10,10,10,10,reader1,C5,,F1,1",  # 2: key
        f"1.2.5.1,{number[15]},20,14,20,10,reader1,C5,,F1,1",  # 3: key
        f"1.2.5.1,{number[10]},15,12,15,10,reader1,C5,,F1,0",  # 4: interpolated, agrees
        f"1.2.5.1,{number[11]},25,12,15,10,reader1,C5,,F1,0",  # 5: interpolated, disagrees
        f"1.2.5.1,{number[20]},15,12,15,10,reader1,C5,,F1,0",  # 6: beyond the keys
        f"1.2.5.1,{number[12]},15,12,15,10,reader1,C5,,,0",  # 7: key=0 without a fracture
        f"1.2.5.1,{number[3]},1,1,4,4,reader2,C3,,F1,1",  # 8: reader2's own F1, superseded by 9
        f"1.2.5.1,{number[3]},2,2,4,4,reader2,C3,,F1,1",  # 9: wins
        f"1.2.5.1,{number[7]},2,2,4,4,reader2,C3,,F1,",  # 10: key column empty = key
        f"1.2.5.1,{number[25]},3,3,4,4,reader2,C4,lone,,1",  # 11: a box on its own
        f"1.2.5.1,{number[26]},3,3,4,4,reader2,C4,,F2,2",  # 12: bad key value
    ]
    path = tmp_path / "readers_boxes.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    with unit_of_work(sessions) as s:
        outcome = import_csv(s, path, "admin")
    problems = {int(p.split(" line ")[1].split(":")[0]): p for p in outcome.problems}
    assert sorted(problems) == [5, 6, 7, 8, 12], outcome.problems
    assert "differs from the box interpolated between the key rows of fracture 'F1'" in problems[5]
    assert "x=16" in problems[5] and "the interpolated box was kept" in problems[5]
    assert "is not between two key rows of fracture 'F1'; ignored" in problems[6]
    assert "needs a fracture id" in problems[7]
    assert "line 9 is a later key row of fracture 'F1'" in problems[8]
    assert "column key must be 0 or 1" in problems[12]
    assert outcome.imported == 5  # lines 2, 3, 9, 10, 11

    with unit_of_work(sessions, readonly=True) as s:
        boxes = ann.visible_core_boxes(s, user(s, ids["admin"]), ids["S1"])
        r1 = sorted((b.slice_index, b.x, b.y, b.x2, b.y2) for b in boxes if b.reader == "reader1")
        assert [k for k, *_ in r1] == list(range(5, 16))  # slice_index, whatever the numbering
        assert r1[5] == (10, 15.0, 12.0, 30.0, 22.0)
        rows = s.scalars(select(m.Box).where(m.Box.source == "interpolated")).all()
        assert len(rows) == 9 + 3  # reader1: 6..14; reader2: 4..6
        assert all(r.instance_number == number[r.slice_index] for r in rows)
        r2 = ev.boxes_state(s, user(s, ids["reader2"]), ids["S1"]).boxes
        assert [(b.slice_index, b.fracture, b.is_key) for b in r2] == [
            (3, "F1", True), (4, "F1", False), (5, "F1", False), (6, "F1", False),
            (7, "F1", True), (25, None, True)]
        assert r2[0].x == 2.0  # line 9's box

    n_audit = len(audit(sessions))
    with unit_of_work(sessions) as s:  # re-importing adds nothing and interpolates nothing again
        again = import_csv(s, path, "admin")
    assert again.imported == 0 and sorted(again.problems) == sorted(outcome.problems)
    assert len(audit(sessions)) == n_audit

    export_readers(workspace, tmp_path / "out")
    exported = tmp_path / "out" / "readers_boxes.csv"
    rows_out = csv_rows(exported)
    assert list(rows_out[0]) == ["StudyInstanceUID", "slice_number", "x", "y", "width", "height",
                                 "reader", "level", "note", "fracture", "key"]
    assert len(rows_out) == 11 + 6
    assert sum(r["key"] == "0" for r in rows_out) == 12
    with unit_of_work(sessions) as s:  # the export reads back without a change or a problem
        back = import_csv(s, exported, "admin")
    assert (back.imported, back.problems, back.unchanged) == (0, [], 17)
    assert len(audit(sessions)) == n_audit


def test_formula_like_notes_are_neutralised_in_the_export_and_read_back_as_written(
    world, workspace: Workspace, tmp_path: Path,
) -> None:
    sessions, ids = world
    s1, r1 = ids["S1"], ids["reader1"]
    notes = ["=HYPERLINK(\"http://x\",\"click\")", "\t=1+1", "+cmd|' /C calc'!A0", "@SUM(A1)",
             "-2+3", "plain text"]
    for n, note in enumerate(notes):
        act(sessions, r1, ev.create_box, s1,
            replace(key(2 * n + 1, 10, 10, 8, 8, fracture=None), note=note))
    export_readers(workspace, tmp_path / "out")
    path = tmp_path / "out" / "readers_boxes.csv"
    raw = [row[8] for row in csv.reader(path.open(newline=""))][1:]  # the note column, as written
    assert sorted(raw) == sorted("'" + t if t != "plain text" else t for t in notes)
    with unit_of_work(sessions) as s:  # the export reads back as the same boxes, notes unchanged
        back = import_csv(s, path, "admin")
    assert (back.imported, back.problems, back.unchanged) == (0, [], len(notes))
    with unit_of_work(sessions, readonly=True) as s:
        stored = {b.note for b in ann.visible_boxes(s, user(s, ids["admin"]), s1)}
    assert stored == set(notes)
