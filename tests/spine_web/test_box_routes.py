"""``POST /spine-box-events`` over in-process HTTP (Starlette's TestClient), on SQLite and
PostgreSQL: a real NIfTI study with a vertebra mask, the database's session tokens and one
``db.box_events`` call per request. Create/change/delete with versions and levels from the mask;
a stale version is a 409 that writes nothing; no cookie 401; another reader's study, another
site, a bad field and an oversized body are refused in one line; a box off the image is clipped
and a zero-size box refused. The writes are audited as the page's are."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from db import annotations as ann
from db import models as m
from db.session import unit_of_work
from db.study_grid import forget_grids
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.io.nifti import save_nifti
from spine_core.volume import Volume
from spine_web import COOKIE
from spine_web.box_routes import MAX_BODY, ROUTE, box_routes
from tests.annotation_helpers import setup_people
from tests.db_fixtures import row_counts

SHAPE = (30, 64, 48)  # slices, rows, columns
AFFINE = np.array([[0, 0, 0.7, 0], [0, 0.7, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def _study(ws: Workspace, root: Path, admin: int, readers: list[int]) -> int:
    """A NIfTI study whose mask has C5 at rows 10-40, columns 10-30 of every slice."""
    image = Volume(np.zeros(SHAPE, dtype=np.int16), AFFINE)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[:, 10:40, 10:30] = 5
    image_path = save_nifti(image, root / "ct.nii.gz")
    mask_path = save_nifti(image.with_array(labels), root / "mask.nii.gz")
    with unit_of_work(ws.sessions) as s:
        study = m.Study(study_uid="1.2.9.77", dataset="nifti")
        s.add(study)
        s.flush()
        series = m.Series(study_id=study.id, series_uid="1.2.9.77.1", source_format="nifti",
                          source_dir=str(image_path), files=[], shape=list(SHAPE),
                          affine=AFFINE.tolist(), instance_numbers=list(range(1, SHAPE[0] + 1)),
                          fingerprint="")
        s.add(series)
        s.flush()
        s.add(m.Mask(series_id=series.id, path=str(mask_path), vocabulary="canonical",
                     source="dataset", levels=["C5"]))
        ann.assign(s, s.get(m.User, admin), study.id, readers)
        return study.id


@pytest.fixture
def world(migrated_db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    forget_grids()
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    ids = setup_people(ws.sessions)
    study = _study(ws, tmp_path, ids["admin"], [ids["reader1"]])
    app = Starlette(routes=box_routes(ws, ws.signin.tokens))
    with TestClient(app, base_url="http://testserver") as client:
        yield {"ws": ws, "ids": ids, "study": study, "client": client, "url": migrated_db_url}
    forget_grids()
    ws.sessions.kw["bind"].dispose()


def _signed_in(world: dict[str, Any], reader: str = "reader1") -> TestClient:
    client: TestClient = world["client"]
    client.cookies.set(COOKIE, world["ws"].signin.tokens.issue(world["ids"][reader]))
    return client


def _event(world: dict[str, Any], **kw: Any) -> dict[str, Any]:
    body = {"study": world["study"], "type": "created", "id": "new-1", "base_version": None,
            "slice": 4, "x0": 12.0, "y0": 12.0, "width": 12.0, "height": 18.0, "fracture": None,
            "base_study_version": None}
    return {**body, **kw}


def _live_boxes(world: dict[str, Any]) -> list[m.Box]:
    with unit_of_work(world["ws"].sessions, readonly=True) as s:
        rows = s.scalars(select(m.Box).where(m.Box.deleted_at.is_(None)).order_by(m.Box.id)).all()
        s.expunge_all()
        return list(rows)


def test_create_change_delete_with_versions_and_levels(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    r = client.post(ROUTE, json=_event(world))
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["message"] == "Box saved on C5" and not made["off_vertebra"]
    assert made["box_version"] == 1 and made["refresh"]  # C5 became fractured: the page reruns
    (box,) = made["boxes"]
    assert (box["id"], box["version"], box["kind"], box["level"]) == (str(made["box_id"]), 1, "key", "C5")
    assert made["study_version"] > 0
    # the display pixels the viewer sent are the stored ones for this axial series
    (row,) = _live_boxes(world)
    assert (row.slice_index, row.x, row.y, row.width, row.height, row.level) == (4, 12, 12, 12, 18, "C5")

    moved = client.post(ROUTE, json=_event(world, type="changed", id=box["id"], base_version=1,
                                           x0=14.0, y0=14.0))
    assert moved.status_code == 200, moved.text
    assert moved.json()["message"] == "Box changed on C5" and not moved.json()["refresh"]
    assert moved.json()["box_version"] == 2

    gone = client.post(ROUTE, json=_event(world, type="deleted", id=box["id"], base_version=2))
    assert gone.status_code == 200, gone.text
    assert gone.json()["boxes"] == [] and gone.json()["message"] == "Box deleted"
    assert _live_boxes(world) == []
    with unit_of_work(world["ws"].sessions, readonly=True) as s:
        actions = s.scalars(select(m.AuditEntry.action).where(m.AuditEntry.entity == "box")
                            .order_by(m.AuditEntry.id)).all()
    assert list(actions) == ["box.create", "box.update", "box.delete"]


def test_a_fracture_interpolates_and_the_reply_brings_the_interpolated_boxes(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    assert client.post(ROUTE, json=_event(world, slice=2, fracture="F1")).status_code == 200
    r = client.post(ROUTE, json=_event(world, slice=8, id="new-2", fracture="F1"))
    assert r.status_code == 200, r.text
    kinds = sorted((b["slice"], b["kind"]) for b in r.json()["boxes"])
    assert kinds == [(2, "key"), *[(k, "interpolated") for k in range(3, 8)], (8, "key")]
    assert "5 interpolated box(es)" in r.json()["message"]


def test_a_stale_version_is_a_conflict_and_writes_nothing(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    box = client.post(ROUTE, json=_event(world)).json()["boxes"][0]
    assert client.post(ROUTE, json=_event(world, type="changed", id=box["id"], base_version=1,
                                          x0=20.0)).status_code == 200
    before = row_counts(world["url"])
    for stale in (_event(world, type="changed", id=box["id"], base_version=1, x0=2.0),
                  _event(world, type="deleted", id=box["id"], base_version=1)):
        r = client.post(ROUTE, json=stale)
        assert r.status_code == 409
        assert "changed in another tab or device; refreshed" in r.json()["message"]
        assert "\n" not in r.json()["message"]
    assert row_counts(world["url"]) == before
    (row,) = _live_boxes(world)
    assert (row.x, row.version) == (20, 2)


def test_no_cookie_or_a_revoked_one_is_401(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    r = client.post(ROUTE, json=_event(world))
    assert r.status_code == 401 and "sign in again" in r.json()["message"]
    token = world["ws"].signin.tokens.issue(world["ids"]["reader1"])
    world["ws"].signin.tokens.revoke(token)
    client.cookies.set(COOKIE, token)
    assert client.post(ROUTE, json=_event(world)).status_code == 401
    assert _live_boxes(world) == []


def test_another_readers_study_and_a_submitted_one_are_refused(world: dict[str, Any]) -> None:
    client = _signed_in(world, "reader2")  # reader2 is not assigned this study
    r = client.post(ROUTE, json=_event(world))
    assert r.status_code == 403 and "not assigned to you" in r.json()["message"]
    client = _signed_in(world, "reader1")
    box = client.post(ROUTE, json=_event(world)).json()["boxes"][0]
    client = _signed_in(world, "reader2")  # nor may reader2 change reader1's box
    r = client.post(ROUTE, json=_event(world, type="deleted", id=box["id"], base_version=1))
    assert r.status_code == 403
    with unit_of_work(world["ws"].sessions) as s:
        ann.submit(s, s.get(m.User, world["ids"]["reader1"]), world["study"], confirm=True)
    client = _signed_in(world, "reader1")
    r = client.post(ROUTE, json=_event(world, id="new-9", x0=30.0))
    assert r.status_code == 403 and "submitted" in r.json()["message"]
    assert len(_live_boxes(world)) == 1


def test_another_site_is_refused(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    r = client.post(ROUTE, json=_event(world), headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["message"]
    ok = client.post(ROUTE, json=_event(world), headers={"origin": "http://testserver"})
    assert ok.status_code == 200
    assert len(_live_boxes(world)) == 1


@pytest.mark.parametrize(("change", "field"), [
    ({"type": "moved"}, "field type"),
    ({"study": "one"}, "field study"),
    ({"x0": "NaN"}, "field x0"),
    ({"width": None}, "field width"),
    ({"slice": 2.5}, "field slice"),
    ({"type": "changed", "id": "new-1", "base_version": 1}, "field id"),
    ({"type": "deleted", "id": "5", "base_version": None}, "field base_version"),
    ({"fracture": "F" * 80}, "field fracture"),
])
def test_a_bad_field_is_400_in_one_line_naming_it(world: dict[str, Any], change: dict[str, Any],
                                                  field: str) -> None:
    r = _signed_in(world).post(ROUTE, json=_event(world, **change))
    assert r.status_code == 400
    message = r.json()["message"]
    assert field in message and "\n" not in message and "Traceback" not in message


def test_bodies_that_are_not_a_json_event_are_refused(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    assert client.post(ROUTE, content=b"{nope", headers={"content-type": "application/json"}
                       ).status_code == 400
    assert client.post(ROUTE, data={"type": "created"}).status_code == 400
    big = client.post(ROUTE, json=_event(world, pad="x" * (MAX_BODY + 10)))
    assert big.status_code == 413 and str(MAX_BODY) in big.json()["message"]
    assert client.get(ROUTE).status_code == 405
    r = client.post(ROUTE, json=_event(world, slice=SHAPE[0] + 3))  # off the volume
    assert r.status_code == 400 and "slice" in r.json()["message"]
    assert _live_boxes(world) == []


def test_a_box_off_the_image_is_clipped_and_a_zero_size_box_refused(world: dict[str, Any]) -> None:
    client = _signed_in(world)
    r = client.post(ROUTE, json=_event(world, x0=40.0, y0=50.0, width=20.0, height=30.0))
    assert r.status_code == 200, r.text
    assert r.json()["off_vertebra"] and "off the vertebra" in r.json()["message"]
    assert r.json()["refresh"]  # the first box without a level: the submit check follows
    (row,) = _live_boxes(world)
    assert (row.x, row.y, row.width, row.height, row.level) == (40, 50, 8, 14, None)
    again = client.post(ROUTE, json=_event(world, id="new-4", slice=5, x0=40.0, y0=50.0))
    assert again.status_code == 200 and not again.json()["refresh"]  # a plain save
    gone = client.post(ROUTE, json=_event(world, type="deleted", id=str(again.json()["box_id"]),
                                          base_version=1))
    assert gone.status_code == 200 and not gone.json()["refresh"]
    flat = client.post(ROUTE, json=_event(world, id="new-2", width=0.0))
    assert flat.status_code == 400 and "zero size" in flat.json()["message"]
    outside = client.post(ROUTE, json=_event(world, id="new-3", x0=100.0, y0=100.0))
    assert outside.status_code == 400 and "outside" in outside.json()["message"]
    assert len(_live_boxes(world)) == 1


def test_a_saved_box_says_in_server_timing_what_its_check_and_transaction_took(
        world: dict[str, Any]) -> None:
    client = _signed_in(world)
    t0 = time.perf_counter()
    r = client.post(ROUTE, json=_event(world))
    wall_ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, r.text
    parts = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers["server-timing"]))
    assert set(parts) == {"auth", "save"}
    auth, save = float(parts["auth"]), float(parts["save"])
    assert 0 < auth and 0 < save and auth + save <= wall_ms
    refused = client.post(ROUTE, json=_event(world, study=world["study"] + 999))
    assert refused.status_code == 403 and "server-timing" not in refused.headers
