"""Concurrent readers lose nothing: 20 threads, each with its own session, write boxes and level
calls into one study at the same moment (several threads per reader, as several tabs), on SQLite
and on PostgreSQL; a real conflict (two tabs editing one box) is refused with a clear message."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from db import annotations as ann
from db import box_events
from db import models as m
from db.session import make_engine, make_sessionmaker, unit_of_work
from spine_core.errors import ConflictError
from tests.annotation_helpers import add_study, setup_people, user

N_WRITERS = 20
N_READERS = 4  # 5 threads ("tabs") per reader
LEVELS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7")


def test_twenty_concurrent_writers_lose_nothing(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url, pool_size=N_WRITERS, max_overflow=0) \
        if not migrated_db_url.startswith("sqlite") else make_engine(migrated_db_url)
    sessions = make_sessionmaker(engine)
    try:
        ids = setup_people(sessions, n_readers=N_READERS)
        readers = [ids[f"reader{i}"] for i in range(1, N_READERS + 1)]
        with unit_of_work(sessions) as s:
            study = add_study(s, "1.2.840.77", shape=(30, 128, 128)).id
            ann.assign(s, user(s, ids["admin"]), study, readers)

        barrier = threading.Barrier(N_WRITERS)

        def write(i: int) -> tuple[int, int]:
            reader = readers[i % N_READERS]
            level = LEVELS[i % 3]  # tabs of one reader mark the same levels at once
            barrier.wait(timeout=60)
            with unit_of_work(sessions) as s:  # one session, one transaction per write
                row = box_events.save_box(s, user(s, reader), study,
                                   ann.BoxInput(i, 2.0 + i, 3.0 + i, 10.0, 12.0, level=level,
                                                note=f"writer {i}"))
                box_id = row.id
            with unit_of_work(sessions) as s:
                ann.set_level_call(s, user(s, reader), study, f"T{1 + i % 2}", "unsure")
            return i, box_id

        with ThreadPoolExecutor(max_workers=N_WRITERS) as pool:
            results = list(pool.map(write, range(N_WRITERS)))  # re-raises any writer's error

        with unit_of_work(sessions, readonly=True) as s:
            boxes = {b.id: b for b in s.scalars(select(m.Box))}
            assert len(boxes) == N_WRITERS
            for i, box_id in results:
                b = boxes[box_id]
                assert (b.reader_id, b.slice_index, b.x, b.y, b.note, b.level) == (
                    readers[i % N_READERS], i, 2.0 + i, 3.0 + i, f"writer {i}", LEVELS[i % 3])
            calls = s.execute(select(m.LevelLabel.reader_id, m.LevelLabel.level, m.LevelLabel.call)).all()
            assert len(calls) == len(set((r, lvl) for r, lvl, _ in calls))  # one row per level
            expected = {(readers[i % N_READERS], LEVELS[i % 3], "fractured") for i in range(N_WRITERS)}
            expected |= {(readers[i % N_READERS], f"T{1 + i % 2}", "unsure") for i in range(N_WRITERS)}
            assert set(calls) == expected
            created = s.scalar(select(func.count()).select_from(m.AuditEntry)
                               .where(m.AuditEntry.action == "box.create"))
            assert created == N_WRITERS
            assignments = s.scalars(select(m.Assignment.status)).all()
            assert assignments == ["in_progress"] * N_READERS
            study_row = s.get(m.Study, study)
            assert study_row is not None and study_row.status == "in_reading"
    finally:
        engine.dispose()


def test_two_tabs_editing_one_box_at_once_is_a_conflict_not_a_silent_overwrite(
    migrated_db_url: str,
) -> None:
    engine = make_engine(migrated_db_url)
    sessions = make_sessionmaker(engine)
    try:
        ids = setup_people(sessions, n_readers=1)
        with unit_of_work(sessions) as s:
            study = add_study(s, "1.2.840.78").id
            ann.assign(s, user(s, ids["admin"]), study, [ids["reader1"]])
            row = box_events.save_box(s, user(s, ids["reader1"]), study, ann.BoxInput(1, 5, 5, 10, 10))
            box_id, version = row.id, row.version

        barrier = threading.Barrier(2)

        def move(x: float) -> str:
            barrier.wait(timeout=30)
            try:
                with unit_of_work(sessions) as s:
                    box_events.save_box(s, user(s, ids["reader1"]), study, ann.BoxInput(1, x, 5, 10, 10),
                                 box_id=box_id, expected_version=version)
            except ConflictError as exc:
                return f"conflict: {exc}"
            return "saved"

        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(move, (20.0, 30.0)))
        assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "saved"]
        message = next(o for o in outcomes if o.startswith("conflict"))
        assert "changed" in message and "reload" in message
        winner = 20.0 if outcomes[0] == "saved" else 30.0
        with unit_of_work(sessions, readonly=True) as s:
            b = s.get(m.Box, box_id)
            assert b is not None and (b.x, b.version) == (winner, version + 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("n_tabs", [2])
def test_first_writes_from_two_tabs_do_not_conflict_on_bookkeeping(
    migrated_db_url: str, n_tabs: int,
) -> None:
    """Both tabs' first write moves the assignment to in_progress and the study to in_reading;
    the second must find that done rather than fail."""
    engine = make_engine(migrated_db_url)
    sessions = make_sessionmaker(engine)
    try:
        ids = setup_people(sessions, n_readers=1)
        with unit_of_work(sessions) as s:
            study = add_study(s, "1.2.840.79").id
            ann.assign(s, user(s, ids["admin"]), study, [ids["reader1"]])
        barrier = threading.Barrier(n_tabs)

        def first_write(tab: int) -> None:
            barrier.wait(timeout=30)
            with unit_of_work(sessions) as s:
                ann.set_level_call(s, user(s, ids["reader1"]), study, "C2", "fractured")
                box_events.save_box(s, user(s, ids["reader1"]), study,
                             ann.BoxInput(tab, 5, 5, 10, 10, level="C2"))

        with ThreadPoolExecutor(max_workers=n_tabs) as pool:
            list(pool.map(first_write, range(n_tabs)))
        with unit_of_work(sessions, readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(m.Box)) == n_tabs
            assert s.scalars(select(m.LevelLabel.call)).all() == ["fractured"]
    finally:
        engine.dispose()
