"""Server-side sign-in sessions that survive a page reload, a restart and a second replica.

A browser reload starts a new Streamlit session, which would sign the user out in the middle of
their reading. On sign-in the app issues an opaque random token, which the browser keeps as an
HttpOnly, SameSite=Strict cookie (never in the URL: a copied address signs nobody in; see
:class:`TicketStore`); on a reload the cookie's token is looked up in a :class:`TokenStore`.
Tokens expire after a period of inactivity and are revoked on sign-out.

This module holds the rules (hashing, idle expiry, sealing a token into a ticket) and the two
store interfaces. The app's stores are rows in the database (``db.signin_state``), shared by
every app replica and kept over a restart; :class:`SessionTokens` and :class:`HandoffTickets`
are the in-memory stores of one process (tests, tools).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol

#: Idle time after which a token no longer signs anybody in.
IDLE_TIMEOUT_S = 8 * 3600.0
#: A token's last-seen time is written again only when it is this old (seconds): one write a
#: minute per reader instead of one per request (every box save, every chunk), so an idle session
#: expires between IDLE_TIMEOUT_S - TOUCH_EVERY_S and IDLE_TIMEOUT_S after its last use.
TOUCH_EVERY_S = 60.0
#: Tokens remembered at most (the oldest are dropped first).
MAX_TOKENS = 10_000


#: Seconds a hand-off ticket may wait to be redeemed.
TICKET_TTL_S = 60.0


class TokenStore(Protocol):
    """Where session tokens live: issue, resolve (marks use), revoke."""

    idle_timeout_s: float

    def issue(self, user_id: int) -> str: ...

    def resolve(self, token: str | None) -> int | None: ...

    def revoke(self, token: str | None) -> None: ...

    def revoke_user(self, user_id: int) -> None: ...


class TicketStore(Protocol):
    """Where one-time hand-off tickets live: issue for a token, redeem once."""

    def issue(self, token: str) -> str: ...

    def redeem(self, ticket: str | None) -> str | None: ...


def new_secret() -> str:
    """A new token or ticket: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What a store keeps of a token or ticket: its SHA-256, hex (64 characters)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def is_idle(last_seen_s: float, now_s: float, idle_timeout_s: float) -> bool:
    """Whether a token last used at ``last_seen_s`` has expired at ``now_s``."""
    return now_s - last_seen_s > idle_timeout_s


def needs_touch(last_seen_s: float, now_s: float, every_s: float = TOUCH_EVERY_S) -> bool:
    """Whether a live token's last-seen time is old enough to be written again."""
    return now_s - last_seen_s >= every_s


def _ticket_key(ticket: str, length: int) -> bytes:
    return hashlib.blake2b(ticket.encode("utf-8"), digest_size=64,
                           person=b"spine-ticket-key").digest()[:length]


def seal(token: str, ticket: str) -> str:
    """``token`` encrypted with a one-time key derived from ``ticket`` (hex): a stored ticket row
    gives nobody the token without the ticket itself, which only the browser's session holds."""
    raw = token.encode("ascii")
    if len(raw) > 64:
        raise ValueError("a session token is at most 64 characters")
    return bytes(a ^ b for a, b in zip(raw, _ticket_key(ticket, len(raw)), strict=True)).hex()


def unseal(sealed: str, ticket: str) -> str | None:
    """The token :func:`seal` hid, or None when ``sealed`` is not a sealed token."""
    try:
        raw = bytes.fromhex(sealed)
        token = bytes(a ^ b for a, b in zip(raw, _ticket_key(ticket, len(raw)), strict=True))
        return token.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two hashes."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class _Entry:
    user_id: int
    last_seen: float


class SessionTokens:
    """Opaque tokens -> user id, with idle expiry, in this process's memory (thread-safe).

    A :class:`TokenStore`; the app uses the database's (``db.signin_state``)."""

    def __init__(self, idle_timeout_s: float = IDLE_TIMEOUT_S, max_tokens: int = MAX_TOKENS) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_tokens = max_tokens
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: int) -> str:
        """A new token for ``user_id`` (32 random bytes, URL-safe)."""
        token = new_secret()
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
            if is_idle(entry.last_seen, now, self.idle_timeout_s):
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
        dead = [t for t, e in self._entries.items() if is_idle(e.last_seen, now, self.idle_timeout_s)]
        for token in dead:
            del self._entries[token]


#: An in-memory store of this process (tests and tools; the app uses the database's).
TOKENS = SessionTokens()


class HandoffTickets:
    """One-time tickets that hand a session token to the browser's cookie.

    The sign-in form runs inside Streamlit, which cannot set an HttpOnly cookie. So, once the
    password is checked, the app issues a ticket for the new session token; the browser posts the
    ticket (in a request body, never a URL) to the server's session route, which redeems it once
    and answers with the token as an HttpOnly, SameSite=Strict cookie. A :class:`TicketStore` in
    this process's memory; the app uses the database's (``db.signin_state``).
    """

    def __init__(self, ttl_s: float = TICKET_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, token: str) -> str:
        ticket = new_secret()
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


#: In-memory tickets of this process (tests and tools; the app uses the database's).
TICKETS = HandoffTickets()
