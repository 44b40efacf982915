"""SQL statements per box save (issue 17), on SQLite and PostgreSQL: the save's transaction as the
box route runs it (``db.box_event_requests.writer``, ``db.study_grid.study_grid``,
``handle_request``) sends at most the statements counted here, reads the reader's assignment
once (locked) and takes the study's version stamp once. Real statements on a real database,
counted with a ``before_cursor_execute`` listener (BEGIN left out: SQLite's is a statement,
PostgreSQL's is not); a behaviour test, not a timing test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from db.box_event_requests import BoxReply, handle_request, parse_request, writer
from db.session import unit_of_work
from db.study_grid import forget_grids, study_grid
from db.workspace import Workspace
from spine_core.config import Settings
from tests.annotation_helpers import setup_people
from tests.spine_web.test_box_routes import _study

#: The most statements each save may send (issue 17: the plain create sent 24 before).
LIMITS = {
    "first box": 20,  # + the assignment and study move on to in progress, the level call is made
    "create": 12,
    "create again": 6,  # the same client_key: the box it made, nothing written
    "fracture key": 13,
    "change": 12,
    "delete": 10,
}


@pytest.fixture
def route(migrated_db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    forget_grids()
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    ids = setup_people(ws.sessions)
    study = _study(ws, tmp_path, ids["admin"], [ids["reader1"]])
    yield {"ws": ws, "reader": ids["reader1"], "study": study}
    forget_grids()
    ws.sessions.kw["bind"].dispose()


@contextmanager
def statements(ws: Workspace) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            seen.append(" ".join(statement.split()))

    engine = ws.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def save(route: dict[str, Any], name: str, **body: Any) -> BoxReply:
    """One box save as the route makes it, its statements checked against ``LIMITS[name]``."""
    ws: Workspace = route["ws"]
    raw = {"study": route["study"], "type": "created", "id": "new-1", "base_version": None,
           "slice": 4, "x0": 12.0, "y0": 12.0, "width": 12.0, "height": 18.0, "fracture": None,
           "base_study_version": None, **body}
    req = parse_request(raw)
    with statements(ws) as seen, unit_of_work(ws.sessions) as session:
        me = writer(session, route["reader"], req.study)
        reply = handle_request(session, me, req, study_grid(ws, session, req.study))
    listing = "\n".join(seen)
    assert len(seen) <= LIMITS[name], f"{name}: {len(seen)} statements\n{listing}"
    assert sum("sum(boxes.version)" in s for s in seen) == 1, f"{name}: study version\n{listing}"
    if name != "first box":  # there the assignment moves on to in progress and is reloaded
        assert sum("FROM assignments" in s for s in seen) == 1, f"{name}: assignment\n{listing}"
    assert sum("FROM series" in s for s in seen) == 1, f"{name}: series\n{listing}"
    return reply


def test_each_box_save_sends_at_most_its_statements(route: dict[str, Any]) -> None:
    first = save(route, "first box", slice=1, client_key="k0")
    assert first.message == "Box saved on C5" and first.refresh
    made = save(route, "create", client_key="k1", x0=14.0)
    assert made.box_version == 1 and not made.refresh
    assert made.study_version == first.study_version + 1
    again = save(route, "create again", client_key="k1", x0=14.0)
    assert (again.box_id, again.study_version, again.refresh) == (made.box_id, made.study_version, True)
    assert again.boxes == made.boxes
    key = save(route, "fracture key", slice=2, client_key="k2", fracture="F1")
    assert key.refresh  # a new fracture: the picker follows
    moved = save(route, "change", type="changed", id=str(made.box_id), base_version=1, x0=16.0)
    assert moved.box_version == 2 and moved.message == "Box changed on C5"
    gone = save(route, "delete", type="deleted", id=str(made.box_id), base_version=2)
    assert gone.message == "Box deleted" and str(made.box_id) not in {b["id"] for b in gone.boxes}
    assert len(gone.boxes) == 2 and gone.study_version == moved.study_version + 1
