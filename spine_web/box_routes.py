"""``POST /spine-box-events``: one box event of the reading workstation, saved without a page rerun.

The viewer on the Annotate page posts each box it draws, moves, resizes or deletes here (JSON:
``study``, ``type`` created|changed|deleted, ``id``, ``base_version``, ``slice``, ``x0``, ``y0``,
``width``, ``height`` in the viewer's display pixels, ``fracture``, ``base_study_version``, and
for ``created`` the tab's ``client_key`` of the new box). The route

* takes the user from the session cookie (``spine_session``, the token store of
  :mod:`spine_web.session_routes`): no live token → 401;
* refuses another site (``Origin`` not this host → 403), a body over :data:`MAX_BODY` bytes
  (413), and any bad field (400, one line naming it);
* applies exactly one ``db.box_events`` call in one transaction (``db.box_event_requests``), in a
  worker thread, with the level from the vertebra mask of the slice as the page takes it;
* answers the reader's boxes of the study, the study version, the levels to ask about and a line
  to show ("Box saved on C5"); a stale version is a 409 and nothing is written. Every refusal is
  ``{"message": "..."}``;
* answers a create sent again with the same ``client_key`` (the saver retries when the network
  dropped the reply) with the box the first one made, writing nothing: one box, one audit entry;
* says in a ``Server-Timing`` header how long the sign-in check (``auth``) and the transaction
  (``save``, the worker thread's own time from its start) took, in ms: the browser's network panel
  shows them, and nginx logs them (``deploy/nginx-team.conf``) beside its own request time.

The db layer checks the rest as for the page: an annotator's own assignment, not submitted.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.box_event_requests import BoxReply, BoxRequest, handle_request, parse_request, writer
from db.session import unit_of_work
from db.study_grid import study_grid
from db.workspace import Workspace
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied, SpineError
from spine_core.signin_sessions import TokenStore
from spine_web.session_routes import _same_origin, session_user

log = logging.getLogger(__name__)

#: The route's path (the page passes it to the viewer).
ROUTE = "/spine-box-events"
#: Largest body accepted, in bytes (an event is about 250).
MAX_BODY = 2048

_mounted = False


def mounted() -> bool:
    """Whether this process serves the route (``server.py``; not under Streamlit's AppTest)."""
    return _mounted


def _refusal(status: int, message: str) -> Response:
    return JSONResponse({"message": message}, status_code=status)


async def _body(request: Request) -> Any:
    """The parsed JSON body; raises InputError (400) or OverflowError (413) in one line."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InputError("send the box event as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise OverflowError(f"a box event is at most {MAX_BODY} bytes")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise OverflowError(f"a box event is at most {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise InputError("the body is not JSON") from None


def _apply(ws: Workspace, user_id: int, req: BoxRequest) -> tuple[BoxReply, float]:
    """One transaction: the writer, the study's grid, one db.box_events call; and its ms."""
    t0 = time.perf_counter()
    with unit_of_work(ws.sessions) as session:
        me = writer(session, user_id, req.study)
        reply = handle_request(session, me, req, study_grid(ws, session, req.study))
    return reply, (time.perf_counter() - t0) * 1000


def box_routes(ws: Workspace, tokens: TokenStore) -> list[Route]:
    """The route, on this workspace's database and these session tokens."""
    global _mounted
    _mounted = True

    async def box_event(request: Request) -> Response:
        """Save one box event of the viewer."""
        if not _same_origin(request):
            return _refusal(403, "box events from another site are refused")
        try:
            raw = await _body(request)
        except OverflowError as exc:
            return _refusal(413, str(exc))
        except InputError as exc:
            return _refusal(400, str(exc))
        t0 = time.perf_counter()
        user_id = await session_user(tokens, request)
        auth_ms = (time.perf_counter() - t0) * 1000
        if user_id is None:
            return _refusal(401, "your session has ended; reload the page and sign in again")
        try:
            req = parse_request(raw)
            reply, save_ms = await run_in_threadpool(_apply, ws, user_id, req)
        except ConflictError as exc:
            return _refusal(409, f"The study changed in another tab or device; refreshed. Your "
                                 f"last change was not saved: {exc}")
        except InputError as exc:
            return _refusal(400, f"Not saved: {exc}")
        except PermissionDenied as exc:
            return _refusal(403, f"Not saved: {exc}")
        except NotFound as exc:
            return _refusal(404, f"Not saved: {exc}")
        except SpineError as exc:  # e.g. the study's files changed since import
            return _refusal(409, f"Not saved: {exc}")
        except Exception:  # never a traceback in the browser
            log.exception("box event of user %s failed", user_id)
            return _refusal(500, "Not saved: the server failed to store the box; reload the page")
        timing = f"auth;dur={auth_ms:.1f}, save;dur={save_ms:.1f}"
        return JSONResponse(reply.as_json(), headers={"Server-Timing": timing})

    return [Route(ROUTE, box_event, methods=["POST"])]
