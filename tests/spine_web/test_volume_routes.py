"""``GET /spine-volume/{grant}/{a}-{b}`` over in-process HTTP (Starlette's TestClient), with the
real session-token store, grant registry and chunk store: the frame decodes to the volume's exact
int16 voxels and labels; no cookie 401, another session's grant 403, an unknown grant 404, a range
outside the plan 400; the chunk is compressed once and cacheable privately."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from spine_core.signin_sessions import SessionTokens
from spine_viewer import grants, transport
from spine_viewer.chunks import ChunkStore
from spine_web import COOKIE
from spine_web.volume_routes import ROUTE, volume_routes

SHAPE = (20, 24, 16)


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(7)
    image = rng.integers(-1024, 3000, SHAPE).astype(np.int16)
    mask = rng.integers(0, 30, SHAPE).astype(np.uint8)
    tokens = SessionTokens()
    registry = grants.GrantRegistry(secret=b"test")
    store = ChunkStore(max_bytes=1 << 24, workers=1)
    app = Starlette(routes=volume_routes(tokens, registry))
    mine, theirs = tokens.issue(1), tokens.issue(2)
    plan = transport.chunk_plan(SHAPE[0], 9, 4)
    grant = registry.register(mine, "vol-1", True, 1, plan,
                              lambda r: transport.encode_chunk(image, mask, r, 1), store)
    other = registry.register(theirs, "vol-1", True, 1, plan,
                              lambda r: transport.encode_chunk(image, mask, r, 1), store)
    with TestClient(app) as client:
        yield {"client": client, "image": image, "mask": mask, "mine": mine, "grant": grant,
               "other": other, "plan": plan, "store": store}


def _get(w: dict[str, Any], gid: str, rng: str, token: str | None) -> Any:
    w["client"].cookies.clear()
    if token is not None:
        w["client"].cookies.set(COOKIE, token)
    return w["client"].get(f"{ROUTE}/{gid}/{rng}")


def test_every_chunk_of_the_plan_decodes_to_the_exact_voxels_and_labels(world: Any) -> None:
    image = np.zeros(SHAPE, np.int16)
    mask = np.zeros(SHAPE, np.uint8)
    for a, b in world["plan"]:
        r = _get(world, world["grant"].id, f"{a}-{b}", world["mine"])
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"].startswith("private, max-age=")
        assert "immutable" in r.headers["cache-control"]
        header, payload = transport.unpack_frame(r.content)
        assert header["chunk"]["range"] == [a, b]
        for part in header["chunk"]["parts"]:
            data = bytes(payload[part["offset"]:part["offset"] + part["length"]])
            values = transport.decode_part(data, part["codec"]).reshape(b - a, *SHAPE[1:])
            (image if part["kind"] == "image" else mask)[a:b] = values
    assert np.array_equal(image, world["image"])
    assert np.array_equal(mask, world["mask"])
    # compressed once, kept in the shared store: the same bytes as the rerun path would carry
    a, b = world["plan"][0]
    assert world["grant"].store_key((a, b)) in world["store"]


def test_without_a_live_session_401(world: Any) -> None:
    a, b = world["plan"][0]
    r = _get(world, world["grant"].id, f"{a}-{b}", None)
    assert r.status_code == 401 and "session has ended" in r.text
    assert _get(world, world["grant"].id, f"{a}-{b}", "not-a-token").status_code == 401


def test_another_sessions_grant_403(world: Any) -> None:
    a, b = world["plan"][0]
    r = _get(world, world["other"].id, f"{a}-{b}", world["mine"])
    assert r.status_code == 403 and "another session" in r.text
    assert "\n" not in r.text.strip()


def test_unknown_grant_404(world: Any) -> None:
    r = _get(world, "0" * 40, "9-10", world["mine"])
    assert r.status_code == 404 and "unknown or expired" in r.text


@pytest.mark.parametrize("rng", ["0-20", "9-11", "abc", "10-", "-1-3", "3-3"])
def test_range_not_in_the_plan_400(world: Any, rng: str) -> None:
    r = _get(world, world["grant"].id, rng, world["mine"])
    assert r.status_code == 400 and "not a chunk" in r.text


def test_a_second_tab_from_another_slice_keeps_the_first_tabs_ranges(world: Any) -> None:
    registry_grant = world["grant"]
    second = transport.chunk_plan(SHAPE[0], 2, 4)
    registry_grant.add_plan(second)
    for a, b in [*world["plan"], *second]:
        assert _get(world, registry_grant.id, f"{a}-{b}", world["mine"]).status_code == 200
