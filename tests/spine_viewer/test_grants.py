"""The grant registry of the volume route: deterministic ids per (session, volume) under one
secret, other ids under another secret; idle expiry; a bound on entries (least recently used go)."""

from __future__ import annotations

from spine_viewer import grants, transport

PLAN = [(5, 6), (6, 10), (1, 5)]


def _encode(rng: tuple[int, int]) -> transport.EncodedChunk:
    raise AssertionError("not called")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_same_session_and_volume_same_id_on_every_replica_with_the_secret() -> None:
    a = grants.GrantRegistry(secret=b"deploy")
    b = grants.GrantRegistry(secret=b"deploy")
    g1 = a.register("tok", "vol", True, 1, PLAN, _encode)
    g2 = b.register("tok", "vol", True, 1, PLAN, _encode)
    assert g1.id == g2.id and len(g1.id) == 40
    assert a.register("tok", "vol2", True, 1, PLAN, _encode).id != g1.id  # new voxels, new id
    assert a.register("tok2", "vol", True, 1, PLAN, _encode).id != g1.id
    assert a.register("tok", "vol", False, 1, PLAN, _encode).id != g1.id
    assert grants.GrantRegistry(secret=b"other").grant_id("tok", "vol", True, 1) != g1.id
    assert g1.session == grants.token_hash("tok") and "tok" not in g1.session


def test_idle_grants_expire() -> None:
    clock = Clock()
    reg = grants.GrantRegistry(secret=b"s", idle_s=60, clock=clock)
    g = reg.register("tok", "vol", True, 1, PLAN, _encode)
    clock.now = 50
    assert reg.lookup(g.id) is g  # use keeps it alive
    clock.now = 100
    assert reg.lookup(g.id) is g
    clock.now = 161
    assert reg.lookup(g.id) is None
    assert len(reg) == 0


def test_the_registry_is_bounded_least_recently_used_first() -> None:
    reg = grants.GrantRegistry(secret=b"s", max_grants=3)
    ids = [reg.register(f"tok{i}", "vol", True, 1, PLAN, _encode).id for i in range(3)]
    assert reg.lookup(ids[0]) is not None  # now the most recently used
    reg.register("tok3", "vol", True, 1, PLAN, _encode)
    assert len(reg) == 3
    assert reg.lookup(ids[1]) is None
    assert reg.lookup(ids[0]) is not None and reg.lookup(ids[2]) is not None


def test_plans_of_several_tabs_are_allowed_and_bounded() -> None:
    reg = grants.GrantRegistry(secret=b"s")
    g = reg.register("tok", "vol", True, 1, PLAN, _encode)
    for start in range(grants.MAX_PLANS + 2):
        reg.register("tok", "vol", True, 1, transport.chunk_plan(40, start, 4), _encode)
    assert (start, start + 1) in g.ranges
    assert len(g.plans) == grants.MAX_PLANS
    assert (5, 6) not in g.ranges or (5, 6) in {r for p in g.plans for r in p}
