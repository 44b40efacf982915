"""The session-cookie routes on a real Starlette app (in-process HTTP): a ticket is redeemed
once into an HttpOnly, SameSite=Strict cookie; bad, reused, expired and cross-site requests are
refused with a reason; clearing revokes the token and deletes the cookie. The routes run here on
the in-memory stores; tests/db/test_signin_state.py runs the database's stores, and
tests/db/test_shared_state_processes.py the routes of two server processes on one database."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from spine_core import signin_sessions
from spine_web import COOKIE, session_routes

ROUTES = session_routes(signin_sessions.TOKENS, signin_sessions.TICKETS)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(Starlette(routes=ROUTES), base_url="http://testserver") as c:
        yield c


def _ticket(user_id: int = 7) -> tuple[str, str]:
    token = signin_sessions.TOKENS.issue(user_id)
    return token, signin_sessions.TICKETS.issue(token)


def test_a_ticket_becomes_an_httponly_strict_cookie_once(client: TestClient) -> None:
    token, ticket = _ticket()
    r = client.post("/spine-session", json={"ticket": ticket})
    assert r.status_code == 204
    header = r.headers["set-cookie"]
    assert f"{COOKIE}={token}" in header and "HttpOnly" in header
    assert "SameSite=strict" in header and "Path=/" in header and "Secure" not in header
    assert f"Max-Age={int(signin_sessions.TOKENS.idle_timeout_s)}" in header
    again = client.post("/spine-session", json={"ticket": ticket})
    assert again.status_code == 403 and "unknown, used or expired" in again.text


def test_bad_requests_are_refused_with_a_reason(client: TestClient) -> None:
    _, ticket = _ticket()
    r = client.post("/spine-session", content=f"ticket={ticket}",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "application/json" in r.text
    assert client.post("/spine-session", content=b"{not json",
                       headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/spine-session", json={"ticket": "x" * 5000}).status_code == 400
    cross = client.post("/spine-session", json={"ticket": ticket},
                        headers={"origin": "https://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.text
    assert client.get("/spine-session").status_code == 405
    # the refused cross-site post did not use the ticket up
    assert client.post("/spine-session", json={"ticket": ticket},
                       headers={"origin": "http://testserver"}).status_code == 204


def test_an_expired_ticket_is_refused() -> None:
    tickets = signin_sessions.HandoffTickets(ttl_s=0.05)
    ticket = tickets.issue("token")
    time.sleep(0.1)
    assert tickets.redeem(ticket) is None
    assert tickets.redeem(None) is None and tickets.redeem("") is None


def test_clear_revokes_the_token_and_deletes_the_cookie(client: TestClient) -> None:
    token, ticket = _ticket(11)
    assert client.post("/spine-session", json={"ticket": ticket}).status_code == 204
    assert signin_sessions.TOKENS.resolve(token) == 11
    client.cookies.set(COOKIE, token)
    r = client.post("/spine-session/clear")
    assert r.status_code == 204 and f'{COOKIE}=""' in r.headers["set-cookie"]
    assert signin_sessions.TOKENS.resolve(token) is None
