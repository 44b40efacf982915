"""The box events' mapping (db.box_event_requests): one viewer event -> one db.box_events call,
with its version."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_event_requests as ab
from db import box_events as be
from db.session import unit_of_work
from spine_core.errors import ConflictError
from spine_core.viewer_boxes import BoxEvent
from tests.annotation_helpers import add_study, setup_people, user

SHAPE = (30, 64, 48)


@pytest.fixture
def world(db_sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], dict[str, int]]:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "1.2.9.1", shape=SHAPE)
        ann.assign(s, user(s, ids["admin"]), study.id, [ids["reader1"]])
        ids["S"] = study.id
    return db_sessions, ids


def labels() -> np.ndarray:
    out = np.zeros(SHAPE[1:], dtype=np.uint8)
    out[10:40, 10:30] = 5  # C5
    return out


def apply(world: tuple[sessionmaker[Session], dict[str, int]], ev: BoxEvent, **kw: object
          ) -> ab.Outcome:
    sessions, ids = world
    with unit_of_work(sessions) as s:
        return ab.apply_event(s, user(s, ids["reader1"]), ids["S"], ev, **{
            "labels": labels(), "fracture": None, "base_study_version": None, **kw})


def state(world: tuple[sessionmaker[Session], dict[str, int]]) -> list[be.BoxState]:
    sessions, ids = world
    with unit_of_work(sessions, readonly=True) as s:
        return be.boxes_state(s, user(s, ids["reader1"]), ids["S"]).boxes


def test_create_change_delete_with_levels_from_the_mask(world: tuple[sessionmaker[Session], dict[str, int]]) -> None:
    out = apply(world, BoxEvent("created", "new-1", None, 4, 12, 12, 24, 30))
    assert out.event.box is not None and out.event.box.level == "C5" and not out.off_vertebra
    box = out.event.box
    moved = apply(world, BoxEvent("changed", str(box.id), box.version, 4, 30, 45, 40, 60))
    assert moved.off_vertebra and moved.event.box is not None and moved.event.box.level is None
    with pytest.raises(ConflictError):  # a stale tab: version 1 is gone
        apply(world, BoxEvent("deleted", str(box.id), box.version, 4, 12, 12, 24, 30))
    assert [b.id for b in state(world)] == [box.id]
    gone = apply(world, BoxEvent("deleted", str(box.id), box.version + 1, 4, 30, 45, 40, 60))
    assert gone.event.box is None and state(world) == []


def test_key_boxes_of_one_fracture_interpolate_and_show_distinctly(
    world: tuple[sessionmaker[Session], dict[str, int]],
) -> None:
    apply(world, BoxEvent("created", "new-1", None, 5, 12, 12, 24, 30), fracture="F1")
    apply(world, BoxEvent("created", "new-2", None, 15, 14, 14, 26, 32), fracture="F1")
    boxes = state(world)
    assert sum(b.is_key for b in boxes) == 2 and sum(not b.is_key for b in boxes) == 9
    shown = ab.viewer_boxes(boxes, [])
    assert {v.kind for v in shown} == {"key", "interpolated"}
    assert all(v.is_editable for v in shown)
    # adjusting an interpolated box (slice 10) makes it a key box: 3 keys, 4 + 4 interpolated
    middle = next(b for b in boxes if not b.is_key and b.slice_index == 10)
    adjusted = apply(world, BoxEvent("changed", str(middle.id), middle.version, 10, 16, 16, 28, 34))
    assert adjusted.event.box is not None and adjusted.event.box.is_key
    after = state(world)
    assert sorted(b.slice_index for b in after if b.is_key) == [5, 10, 15]
    assert sum(not b.is_key for b in after) == 8


def test_a_change_to_a_box_deleted_elsewhere_is_a_conflict(
    world: tuple[sessionmaker[Session], dict[str, int]],
) -> None:
    box = apply(world, BoxEvent("created", "new-1", None, 4, 12, 12, 24, 30)).event.box
    assert box is not None
    apply(world, BoxEvent("deleted", str(box.id), box.version, 4, 12, 12, 24, 30))
    with pytest.raises(ConflictError):
        apply(world, BoxEvent("changed", str(box.id), box.version, 4, 13, 13, 25, 31))
