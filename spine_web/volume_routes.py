"""``GET /spine-volume/{grant}/{a}-{b}``: one compressed chunk of a volume, for the session's viewer.

The reading workstation fetches its volume here, several chunks at a time, instead of through
Streamlit reruns. The grants come from outside (:func:`volume_routes`): ``server.py`` hands in
:func:`spine_viewer.grants.default_registry`, where the page registers one when it mounts the
viewer. The answer is the ``SPV1`` frame of slices ``[a, b)`` (header ``{"chunk": ...}``, the same
parts and codecs the viewer gets through component data), compressed once per process and shared
with every reader.

* no live session cookie → 401; a grant of another session → 403; an unknown or expired grant
  → 404; a range not in the grant's chunk plan → 400. Every refusal is one line of text.
* ``Cache-Control: private, max-age=…, immutable``: the grant id changes whenever the voxels do
  (it hashes the volume id), so a reload or a reconnect to another replica reads the browser's
  cache. The volume is patient data: it never goes to a public folder or a shared cache.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spine_core.signin_sessions import TokenStore
from spine_web.session_routes import COOKIE, session_user

log = logging.getLogger(__name__)

#: The route's path prefix (the viewer gets ``spine-volume/{grant}/`` from the page).
ROUTE = "/spine-volume"
#: How long the browser may keep a chunk (seconds): a working day.
MAX_AGE_S = 12 * 3600


class VolumeGrant(Protocol):
    """One session's right to one volume's chunks (:class:`spine_viewer.grants.Grant`)."""

    volume_id: str
    ranges: set[tuple[int, int]]

    def belongs_to(self, token: str) -> bool: ...

    def frame(self, rng: tuple[int, int]) -> bytes: ...


class GrantLookup(Protocol):
    """Where grants are found (:class:`spine_viewer.grants.GrantRegistry`)."""

    def lookup(self, gid: str) -> VolumeGrant | None: ...


def _refusal(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def _range(text: str) -> tuple[int, int] | None:
    a, sep, b = text.partition("-")
    if not sep or not a.isdigit() or not b.isdigit():
        return None
    return int(a), int(b)


def volume_routes(tokens: TokenStore, grants: GrantLookup) -> list[Route]:
    """The route, on these session tokens and grants."""

    async def volume_chunk(request: Request) -> Response:
        """Answer one chunk of a granted volume."""
        user_id = await session_user(tokens, request)
        if user_id is None:
            return _refusal(401, "your session has ended; reload the page and sign in again")
        grant = grants.lookup(request.path_params["grant"])
        if grant is None:
            return _refusal(404, "this volume link is unknown or expired; reload the page")
        if not grant.belongs_to(request.cookies.get(COOKIE) or ""):
            return _refusal(403, "this volume was opened by another session")
        rng = _range(request.path_params["range"])
        if rng is None or rng not in grant.ranges:
            return _refusal(400, f"slices {request.path_params['range']!r} are not a chunk of "
                                 "this volume's plan")
        try:
            frame = await run_in_threadpool(grant.frame, rng)
        except Exception:  # never a traceback in the browser
            log.exception("chunk %s of volume %s failed", rng, grant.volume_id)
            return _refusal(500, "the server could not read this part of the volume; reload")
        return Response(frame, media_type="application/octet-stream", headers={
            "Cache-Control": f"private, max-age={MAX_AGE_S}, immutable"})

    return [Route(ROUTE + "/{grant}/{range}", volume_chunk, methods=["GET"])]
