"""Idempotent box creates (issue 17) on real SQLite and PostgreSQL: a create carrying the viewer's
``client_key`` for the new box, sent again (its reply lost) or twice at once, leaves one box and
one ``box.create`` audit entry, and every copy answers with that box."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_event_requests as ab
from db import box_events as be
from db import models as m
from db.session import unit_of_work
from spine_core.errors import ConflictError, InputError
from spine_core.viewer_boxes import BoxEvent
from tests.annotation_helpers import add_study, setup_people, user

SHAPE = (30, 64, 48)
World = tuple[sessionmaker[Session], dict[str, int]]


@pytest.fixture
def world(db_sessions: sessionmaker[Session]) -> World:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.9.17", shape=SHAPE)
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"], ids["reader2"]])
        ids["S"] = study.id
    return db_sessions, ids


def labels() -> np.ndarray:
    out = np.zeros(SHAPE[1:], dtype=np.uint8)
    out[10:40, 10:30] = 5  # C5
    return out


def created(key: str | None, slice_index: int = 4, x0: float = 12.0) -> BoxEvent:
    return BoxEvent("created", key or "new-x", None, slice_index, x0, 12, x0 + 12, 30, client_key=key)


def apply(world: World, ev: BoxEvent, reader: str = "reader1", **kw: Any) -> ab.Outcome:
    sessions, ids = world
    with unit_of_work(sessions) as s:
        return ab.apply_event(s, user(s, ids[reader]), ids["S"], ev, **{
            "labels": labels(), "fracture": None, "base_study_version": None, **kw})


def boxes(world: World, *, live: bool = False) -> list[m.Box]:
    with unit_of_work(world[0], readonly=True) as s:
        stmt = select(m.Box).order_by(m.Box.id)
        if live:
            stmt = stmt.where(m.Box.deleted_at.is_(None))
        rows = list(s.scalars(stmt).all())
        s.expunge_all()
        return rows


def creates(world: World) -> int:
    with unit_of_work(world[0], readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEntry)
                            .where(m.AuditEntry.action == "box.create")) or 0)


def test_the_same_create_twice_makes_one_box_and_answers_it_twice(world: World) -> None:
    first = apply(world, created("new-k1"))
    again = apply(world, created("new-k1"))
    assert first.event.box is not None and not first.event.replayed
    assert again.event.replayed and again.event.box == first.event.box
    assert (again.message, again.off_vertebra) == (first.message, first.off_vertebra) == ("Box saved on C5", False)
    assert again.event.study_version == first.event.study_version
    (row,) = boxes(world)
    assert (row.id, row.version, row.client_key, row.level) == (first.event.box.id, 1, "new-k1", "C5")
    assert creates(world) == 1


def test_a_repeated_create_of_a_fracture_box_brings_its_interpolated_boxes(world: World) -> None:
    apply(world, created("new-a", slice_index=2), fracture="F1")
    first = apply(world, created("new-b", slice_index=8), fracture="F1")
    # the retry's base study version is the one the tab had before its lost reply
    again = apply(world, created("new-b", slice_index=8), fracture="F1",
                  base_study_version=first.event.study_version - 1)
    assert again.event.replayed and again.event.box == first.event.box
    assert again.event.interpolated == first.event.interpolated and len(first.event.interpolated) == 5
    assert again.event.study_version == first.event.study_version
    assert len(boxes(world, live=True)) == 2 + 5 and creates(world) == 2


def test_a_repeat_after_the_box_moved_answers_the_box_as_it_is_now(world: World) -> None:
    box = apply(world, created("new-m")).event.box
    assert box is not None
    moved = apply(world, BoxEvent("changed", str(box.id), 1, 4, 14, 14, 26, 32)).event.box
    assert moved is not None and moved.version == 2
    again = apply(world, created("new-m"))
    assert again.event.replayed and again.event.box == moved
    assert len(boxes(world)) == 1


def test_a_repeat_after_the_box_was_deleted_is_a_conflict_and_does_not_bring_it_back(world: World) -> None:
    box = apply(world, created("new-d")).event.box
    assert box is not None
    apply(world, BoxEvent("deleted", str(box.id), 1, 4, 12, 12, 24, 30))
    with pytest.raises(ConflictError, match="deleted"):
        apply(world, created("new-d"))
    assert boxes(world, live=True) == [] and creates(world) == 1


def test_a_key_is_one_box_per_reader_and_creates_without_a_key_all_count(world: World) -> None:
    mine = apply(world, created("new-same")).event.box
    theirs = apply(world, created("new-same"), reader="reader2").event.box
    assert mine is not None and theirs is not None and mine.id != theirs.id
    with pytest.raises(InputError, match="different box"):  # the same key for another box
        apply(world, created("new-same", slice_index=9))
    apply(world, created(None))
    apply(world, created(None))
    assert len(boxes(world)) == 4 and creates(world) == 4


def test_two_identical_creates_at_once_make_one_box(world: World) -> None:
    sessions, ids = world
    start = threading.Barrier(2)
    results: list[be.BoxEvent] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=10)
            results.append(apply(world, created("new-race")).event)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(r.replayed for r in results) == [False, True]
    assert results[0].box == results[1].box
    assert len(boxes(world)) == 1 and creates(world) == 1


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_copy_committed_between_the_look_up_and_the_insert_is_answered_not_duplicated(
    world: World,
) -> None:
    """The unique index's fallback: another transaction commits the keyed box after this one
    looked for it (forced here from the flush, with no lock between them); the insert fails on
    ``uq_boxes_client_key`` inside a savepoint and the create answers with that box."""
    sessions, ids = world
    raced: list[int] = []

    def before_flush(session: Session, *_: Any) -> None:
        mine = [o for o in session.new if isinstance(o, m.Box) and o.client_key == "new-late"]
        if mine and not raced:
            b = mine[0]
            with unit_of_work(sessions) as other:  # a separate connection, committed at once
                copy = m.Box(study_id=b.study_id, series_id=b.series_id, reader_id=b.reader_id,
                             slice_index=b.slice_index, instance_number=b.instance_number, x=b.x,
                             y=b.y, width=b.width, height=b.height, level=b.level,
                             level_from_mask=b.level_from_mask, note=b.note, source=b.source,
                             fracture=b.fracture, is_key=True, client_key=b.client_key)
                other.add(copy)
                other.flush()
                raced.append(copy.id)

    with unit_of_work(sessions) as s:
        event.listen(s, "before_flush", before_flush)
        out = ab.apply_event(s, user(s, ids["reader1"]), ids["S"], created("new-late"),
                             labels=labels(), fracture=None, base_study_version=None)
    assert raced and out.event.replayed and out.event.box is not None
    assert out.event.box.id == raced[0]
    (row,) = boxes(world)
    assert row.id == raced[0]
    assert creates(world) == 0  # the copy was written behind the app's back: nothing audited here
