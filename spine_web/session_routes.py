"""The session cookie: set from a one-time ticket, cleared on sign-out.

* ``POST /spine-session`` with the JSON body ``{"ticket": ...}`` redeems a ticket of the
  :class:`~spine_core.signin_sessions.TicketStore` and answers 204 with the session token as an
  ``HttpOnly; SameSite=Strict; Path=/`` cookie (``Secure`` behind HTTPS), which lives as long as a
  token may stay idle. The app reads it back from ``st.context.cookies`` in a new session.
* ``POST /spine-session/clear`` revokes the cookie's token and deletes the cookie.

Both accept only same-origin JSON posts (the ``Origin`` header, when sent, must be this host),
so another site cannot plant or clear a session.

The stores come from outside (:func:`session_routes`): ``server.py`` hands in the database's, so
every replica redeems tickets and revokes tokens in the same rows; tests may hand in memory ones.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from spine_core.signin_sessions import TicketStore, TokenStore

#: The cookie's name.
COOKIE = "spine_session"
#: Where the app keeps the signed-in session's token in ``st.session_state``: a browser that
#: signed in over its open connection has the cookie, but ``st.context.cookies`` shows it only
#: from its next connection on.
SESSION_STATE_KEY = "session_token"
MAX_BODY = 4096


def _refusal(status: int, reason: str) -> Response:
    return PlainTextResponse(reason, status_code=status)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # same-origin fetches may omit it; SameSite=Strict guards the cookie itself
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def session_user(tokens: TokenStore, request: Request) -> int | None:
    """The user of the request's session cookie while its token is live, else None."""
    return await run_in_threadpool(tokens.resolve, request.cookies.get(COOKIE))


async def _ticket(request: Request) -> str | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None
    body = await request.body()
    if len(body) > MAX_BODY:
        return None
    try:
        value = json.loads(body).get("ticket")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def session_routes(tokens: TokenStore, tickets: TicketStore) -> list[Route]:
    """The two routes, on these stores."""

    async def set_session(request: Request) -> Response:
        """Redeem a sign-in ticket into the session cookie."""
        if not _same_origin(request):
            return _refusal(403, "sign-in from another site is refused")
        ticket = await _ticket(request)
        if ticket is None:
            return _refusal(400, 'send {"ticket": "..."} as application/json')
        token = await run_in_threadpool(tickets.redeem, ticket)
        if token is None:
            return _refusal(403, "this sign-in ticket is unknown, used or expired; sign in again")
        response = Response(status_code=204)
        response.set_cookie(COOKIE, token, max_age=int(tokens.idle_timeout_s), path="/",
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def clear_session(request: Request) -> Response:
        """Sign this browser out: revoke the cookie's token and delete the cookie."""
        if not _same_origin(request):
            return _refusal(403, "sign-out from another site is refused")
        await run_in_threadpool(tokens.revoke, request.cookies.get(COOKIE))
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return [
        Route("/spine-session", set_session, methods=["POST"]),
        Route("/spine-session/clear", clear_session, methods=["POST"]),
    ]
