"""Server-side sign-in sessions that survive a page reload.

A browser reload starts a new Streamlit session, which would sign the user out in the middle of
their reading. On sign-in the app issues an opaque random token, which the browser keeps as an
HttpOnly, SameSite=Strict cookie (never in the URL: a copied address signs nobody in; see
:class:`HandoffTickets`); on a reload the cookie's token is looked up here. Tokens live in this
process's memory only (a server restart signs everybody out), expire after a period of
inactivity, and are revoked on sign-out.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

#: Idle time after which a token no longer signs anybody in.
IDLE_TIMEOUT_S = 8 * 3600.0
#: Tokens remembered at most (the oldest are dropped first).
MAX_TOKENS = 10_000


@dataclass
class _Entry:
    user_id: int
    last_seen: float


class SessionTokens:
    """Opaque tokens -> user id, with idle expiry (thread-safe)."""

    def __init__(self, idle_timeout_s: float = IDLE_TIMEOUT_S, max_tokens: int = MAX_TOKENS) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_tokens = max_tokens
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: int) -> str:
        """A new token for ``user_id`` (32 random bytes, URL-safe)."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if len(self._entries) >= self.max_tokens:
                oldest = min(self._entries, key=lambda t: self._entries[t].last_seen)
                del self._entries[oldest]
            self._entries[token] = _Entry(user_id, now)
        return token

    def resolve(self, token: str | None) -> int | None:
        """The user id of a live token (and mark it used), else None."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now - entry.last_seen > self.idle_timeout_s:
                del self._entries[token]
                return None
            entry.last_seen = now
            return entry.user_id

    def revoke(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._entries.pop(token, None)

    def revoke_user(self, user_id: int) -> None:
        """Sign a user out everywhere (e.g. when deactivated)."""
        with self._lock:
            for token in [t for t, e in self._entries.items() if e.user_id == user_id]:
                del self._entries[token]

    def _expire(self, now: float) -> None:
        dead = [t for t, e in self._entries.items() if now - e.last_seen > self.idle_timeout_s]
        for token in dead:
            del self._entries[token]


#: The one store of this server process.
TOKENS = SessionTokens()


class HandoffTickets:
    """One-time tickets that hand a session token to the browser's cookie.

    The sign-in form runs inside Streamlit, which cannot set an HttpOnly cookie. So, once the
    password is checked, the app issues a ticket for the new session token; the browser posts the
    ticket (in a request body, never a URL) to the server's session route, which redeems it once
    and answers with the token as an HttpOnly, SameSite=Strict cookie.
    """

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, token: str) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for t in [t for t, (_, at) in self._entries.items() if now - at > self.ttl_s]:
                del self._entries[t]
            self._entries[ticket] = (token, now)
        return ticket

    def redeem(self, ticket: str | None) -> str | None:
        """The session token of a live ticket, once; None for an unknown, used or old ticket."""
        if not ticket:
            return None
        with self._lock:
            entry = self._entries.pop(ticket, None)
        if entry is None or time.monotonic() - entry[1] > self.ttl_s:
            return None
        return entry[0]


#: The tickets of this server process.
TICKETS = HandoffTickets()
