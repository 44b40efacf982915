"""``python -m spine_web``, the box-event route in a process of its own (what nginx sends
``POST /spine-box-events`` to in a team deployment), as a real process on a loopback port, on
SQLite and PostgreSQL: it answers its health check, saves a box for the session cookie the app's
replicas issue (a database row), and refuses a request without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db import models as m
from db.session import unit_of_work
from db.study_grid import forget_grids
from db.workspace import Workspace
from spine_core.config import Settings
from spine_web import COOKIE
from spine_web.box_routes import ROUTE
from spine_web.route_server import HEALTH
from tests.annotation_helpers import setup_people
from tests.backend_helpers import free_port
from tests.spine_web.test_box_routes import _study

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(migrated_db_url: str, tmp_path: Path) -> Iterator[tuple[str, Workspace, dict[str, int], int]]:
    forget_grids()
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    ids = setup_people(ws.sessions)
    study = _study(ws, tmp_path, ids["admin"], [ids["reader1"]])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({"SPINE_DB_URL": migrated_db_url, "SPINE_DATA_DIR": str(tmp_path / "var")})
    log = (tmp_path / "routes.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "spine_web", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "routes.log").read_text()
            try:
                with urllib.request.urlopen(base + HEALTH, timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, "the route server never answered"
                time.sleep(0.2)
        yield base, ws, ids, study
    finally:
        proc.terminate()
        proc.wait(10)
        forget_grids()
        ws.sessions.kw["bind"].dispose()


def _post(url: str, body: dict[str, object], cookie: str | None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Cookie": f"{COOKIE}={cookie}"} if cookie else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_route_server_saves_a_box_for_a_replicas_session(
    served: tuple[str, Workspace, dict[str, int], int],
) -> None:
    base, ws, ids, study = served
    body = {"study": study, "type": "created", "id": "new-1", "base_version": None, "slice": 4,
            "x0": 12.0, "y0": 12.0, "width": 12.0, "height": 18.0, "fracture": None,
            "base_study_version": None, "client_key": "tab1-new-1"}
    status, reply = _post(base + ROUTE, body, None)
    assert status == 401 and "sign in again" in str(reply["message"])

    token = ws.signin.tokens.issue(ids["reader1"])  # as a replica does at sign-in
    status, reply = _post(base + ROUTE, body, token)
    assert status == 200, reply
    assert reply["message"] == "Box saved on C5"
    with unit_of_work(ws.sessions, readonly=True) as s:
        rows = s.execute(select(m.Box.reader_id, m.Box.slice_index, m.Box.level)).all()
    assert [tuple(r) for r in rows] == [(ids["reader1"], 4, "C5")]
