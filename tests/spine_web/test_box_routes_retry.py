"""``POST /spine-box-events`` over real HTTP on loopback (uvicorn in a thread), on SQLite and
PostgreSQL: the saver's retry of a create whose reply the network dropped. The same create (same
``client_key``) posted twice, or twice at once, leaves one box and one ``box.create`` audit entry,
and both answers name that box with the same version (issue 17)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from db import models as m
from db.session import unit_of_work
from db.study_grid import forget_grids
from db.workspace import Workspace
from spine_core.config import Settings
from spine_web import COOKIE
from spine_web.box_routes import ROUTE, box_routes
from tests.annotation_helpers import setup_people
from tests.backend_helpers import running_server
from tests.spine_web.test_box_routes import _event, _study


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@pytest.fixture
def world(migrated_db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    forget_grids()
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    ids = setup_people(ws.sessions)
    study = _study(ws, tmp_path, ids["admin"], [ids["reader1"]])
    app = Starlette(routes=[*box_routes(ws, ws.signin.tokens), Route("/health", _health)])
    with running_server(app) as url:
        cookie = ws.signin.tokens.issue(ids["reader1"])
        yield {"ws": ws, "ids": ids, "study": study, "url": url, "cookie": cookie}
    forget_grids()
    ws.sessions.kw["bind"].dispose()


def _post(world: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{world['url']}{ROUTE}", json=body, cookies={COOKIE: world["cookie"]},
                      timeout=30)


def _rows(world: dict[str, Any]) -> tuple[list[tuple[int, int, str | None]], list[str]]:
    with unit_of_work(world["ws"].sessions, readonly=True) as s:
        boxes = s.execute(select(m.Box.id, m.Box.version, m.Box.client_key).order_by(m.Box.id)).all()
        actions = s.scalars(select(m.AuditEntry.action).where(m.AuditEntry.entity == "box")
                            .order_by(m.AuditEntry.id)).all()
    return [tuple(b) for b in boxes], list(actions)  # type: ignore[misc]


def test_the_same_create_posted_twice_makes_one_box_and_the_same_reply(world: dict[str, Any]) -> None:
    body = _event(world, id="new-lost-1", client_key="new-lost-1")
    first = _post(world, body)
    assert first.status_code == 200, first.text
    again = _post(world, body)  # the saver's retry: the first reply never reached the browser
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    reply = first.json()
    assert reply["message"] == "Box saved on C5" and reply["box_version"] == 1 and reply["refresh"]
    boxes, actions = _rows(world)
    assert boxes == [(reply["box_id"], 1, "new-lost-1")]
    assert actions == ["box.create"]

    # the tab goes on from the reply it got: a change of that box at that version is saved
    moved = _post(world, _event(world, type="changed", id=str(reply["box_id"]), base_version=1, x0=14.0))
    assert moved.status_code == 200, moved.text
    assert moved.json()["box_version"] == 2
    # a late copy of the create still answers with the box, as it is now, and writes nothing
    late = _post(world, body)
    assert late.status_code == 200, late.text
    assert (late.json()["box_id"], late.json()["box_version"]) == (reply["box_id"], 2)
    assert late.json()["boxes"] == moved.json()["boxes"]
    assert _rows(world) == ([(reply["box_id"], 2, "new-lost-1")], ["box.create", "box.update"])


def test_without_a_client_key_two_posts_are_two_boxes(world: dict[str, Any]) -> None:
    body = _event(world, id="new-old-tab")  # an older bundle sends no key
    assert _post(world, body).status_code == 200
    assert _post(world, body).status_code == 200
    boxes, actions = _rows(world)
    assert len(boxes) == 2 and actions == ["box.create", "box.create"]


def test_two_copies_of_a_create_at_once_make_one_box(world: dict[str, Any]) -> None:
    body = _event(world, id="new-twice", client_key="new-twice", slice=6, fracture="F1")
    start = threading.Barrier(2)
    replies: list[httpx.Response] = []

    def post() -> None:
        start.wait(timeout=10)
        replies.append(_post(world, body))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    boxes, actions = _rows(world)
    assert len(boxes) == 1 and actions == ["box.create"]
    box_id = boxes[0][0]
    assert [(r.json()["box_id"], r.json()["box_version"]) for r in replies] == [(box_id, 1)] * 2


@pytest.mark.parametrize("key", ["", "k" * 65, 17])
def test_a_bad_client_key_is_refused_in_one_line(world: dict[str, Any], key: object) -> None:
    r = _post(world, _event(world, client_key=key))
    assert r.status_code == 400 and "field client_key" in r.json()["message"]
    assert _rows(world) == ([], [])
