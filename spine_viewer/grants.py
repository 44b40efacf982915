"""Grants: which session may fetch which volume's chunks over HTTP (``spine_web.volume_routes``;
``server.py`` hands that route :func:`default_registry` and calls :func:`serve_at`).

When :func:`spine_viewer.workstation` mounts a volume for a signed-in session it registers a
:class:`Grant` here, and the browser fetches the chunks of the grant's plan from
``spine-volume/{grant id}/{a}-{b}`` instead of asking for them through Streamlit reruns.

The grant id is an HMAC of (session token, volume id, level, mask flag) under a per-deployment
secret (``SPINE_VOLUME_SECRET``; a random per-process one when unset): the same reader on the same
voxels gets the same id on every replica that shares the secret, so a reload, or a reconnect after
a replica died, reads the chunks from the browser's HTTP cache. The id reveals nothing without the
secret, and the route checks it against the cookie's session anyway.

The registry is process-wide, bounded (:data:`MAX_GRANTS`, the least recently used go first) and
forgets a grant left unused for :data:`IDLE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from spine_viewer.chunks import ChunkStore, default_store
from spine_viewer.transport import EncodedChunk, SliceRange, chunk_header, pack_frame

#: Grants kept at most (the least recently used go first).
MAX_GRANTS = 512
#: A grant unused this long (seconds) is forgotten; the page's next run makes it again.
IDLE_S = 2 * 3600.0
#: Plans remembered per grant (each tab may start from another slice).
MAX_PLANS = 8
#: Environment variable holding the per-deployment secret of the grant ids.
SECRET_ENV = "SPINE_VOLUME_SECRET"


def token_hash(token: str) -> str:
    """What a grant keeps of the session token (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Grant:
    """One session's right to one volume's chunks, and how to make them."""

    id: str
    session: str  # token_hash of the session cookie
    volume_id: str
    has_mask: bool
    level: int
    encode: Callable[[SliceRange], EncodedChunk]
    store: ChunkStore
    ranges: set[SliceRange] = field(default_factory=set)
    plans: list[tuple[SliceRange, ...]] = field(default_factory=list)
    last_used: float = 0.0

    def add_plan(self, plan: list[SliceRange]) -> None:
        """Allow the ranges of ``plan`` too (the oldest plans beyond :data:`MAX_PLANS` go)."""
        key = tuple(plan)
        if key in self.plans:
            return
        self.plans = [*self.plans[-(MAX_PLANS - 1):], key]
        self.ranges = {r for p in self.plans for r in p}

    def store_key(self, rng: SliceRange) -> tuple[str, SliceRange, bool, int]:
        """The chunk's key in :class:`spine_viewer.chunks.ChunkStore` (as the component's)."""
        return self.volume_id, rng, self.has_mask, self.level

    def belongs_to(self, token: str) -> bool:
        """Whether this grant was made for the session of ``token``."""
        return hmac.compare_digest(self.session, token_hash(token))

    def frame(self, rng: SliceRange) -> bytes:
        """The ``SPV1`` frame of chunk ``rng`` (header ``{"chunk": ...}``), compressed once and
        kept in the store the component uses, so both paths share the work."""
        chunk = self.store.get(self.store_key(rng), lambda: self.encode(rng))
        entry, pieces = chunk_header(chunk)
        return pack_frame({"chunk": entry}, pieces)


class GrantRegistry:
    """Grant id -> :class:`Grant`, thread-safe, with idle expiry and a bound on entries."""

    def __init__(self, secret: bytes | None = None, max_grants: int = MAX_GRANTS,
                 idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ.get(SECRET_ENV, "")
        self._secret = secret or (env.encode("utf-8") if env else secrets.token_bytes(32))
        self.max_grants = int(max_grants)
        self.idle_s = float(idle_s)
        self._clock = clock
        self._grants: OrderedDict[str, Grant] = OrderedDict()
        self._lock = threading.Lock()

    def grant_id(self, token: str, volume_id: str, has_mask: bool, level: int) -> str:
        """The deterministic, unguessable id of (session, volume, mask flag, level)."""
        msg = "\x00".join([token, volume_id, "mask" if has_mask else "image", str(int(level))])
        return hmac.new(self._secret, msg.encode("utf-8"), hashlib.sha256).hexdigest()[:40]

    def register(self, token: str, volume_id: str, has_mask: bool, level: int,
                 plan: list[SliceRange], encode: Callable[[SliceRange], EncodedChunk],
                 store: ChunkStore | None = None) -> Grant:
        """Make (or refresh) the grant of this session on this volume; returns it. ``store``:
        where its chunks are kept (default: the process-wide one)."""
        chunks = store if store is not None else default_store()
        gid = self.grant_id(token, volume_id, has_mask, level)
        now = self._clock()
        with self._lock:
            self._expire(now)
            grant = self._grants.get(gid)
            if grant is None:
                grant = Grant(gid, token_hash(token), volume_id, bool(has_mask), int(level), encode,
                              chunks)
                self._grants[gid] = grant
            grant.encode, grant.store = encode, chunks  # the newest source (a reopened memory map)
            grant.add_plan(plan)
            grant.last_used = now
            self._grants.move_to_end(gid)
            while len(self._grants) > self.max_grants:
                self._grants.popitem(last=False)
            return grant

    def lookup(self, gid: str) -> Grant | None:
        """The live grant of ``gid`` (marked used), else None."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            grant = self._grants.get(gid)
            if grant is not None:
                grant.last_used = now
                self._grants.move_to_end(gid)
            return grant

    def _expire(self, now: float) -> None:
        # caller holds the lock; the least recently used come first
        while self._grants:
            gid, grant = next(iter(self._grants.items()))
            if now - grant.last_used <= self.idle_s:
                break
            del self._grants[gid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)


@dataclass
class RouteConfig:
    """Set by the server that serves the route: its path, the cookie holding the session, and
    the ``st.session_state`` key where the app keeps the token of a browser that signed in over
    its open connection (its cookie reaches ``st.context.cookies`` only on the next one)."""

    path: str
    cookie: str
    session_key: str = ""


_default: GrantRegistry | None = None
_route: RouteConfig | None = None
_lock = threading.Lock()


def default_registry() -> GrantRegistry:
    """The process-wide registry."""
    global _default
    with _lock:
        if _default is None:
            _default = GrantRegistry()
        return _default


def serve_at(path: str, cookie: str, session_key: str = "") -> None:
    """Say that this process serves the chunk route at ``path``, sessions in ``cookie`` (and,
    before the cookie shows, in ``st.session_state[session_key]``)."""
    global _route
    _route = RouteConfig(path.strip("/"), cookie, session_key)


def route() -> RouteConfig | None:
    """Where this process serves chunks, or None (AppTest, a bare ``streamlit run``)."""
    return _route
