"""Sign-in state as database rows, shared by every app replica and kept over a restart.

* :class:`DbSessionTokens` (a :class:`~spine_core.signin_sessions.TokenStore`): the server side
  of the ``spine_session`` cookie. A row keeps the SHA-256 of the token, never the token, with its
  user, when it was created and last seen, its idle timeout and when it was revoked.
* :class:`DbHandoffTickets` (a :class:`~spine_core.signin_sessions.TicketStore`): one-time
  tickets; a row keeps the ticket's hash and the token sealed with a key only the ticket gives,
  and is deleted when redeemed (a second redemption, in any replica, finds nothing).
* :class:`DbFailureThrottle` (a :class:`~spine_core.signin_throttle.FailureCounter`): failed
  sign-ins per key, counted with one atomic upsert, so failures in one replica slow down the
  next attempt in every other.

The rules (hashing, expiry, penalties) are :mod:`spine_core`'s; times are UTC wall-clock times,
so replicas on several machines need synchronised clocks (NTP).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.session import unit_of_work
from spine_core import signin_sessions as rules
from spine_core.signin_throttle import ThrottlePolicy

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seconds(t: dt.datetime) -> float:
    return t.timestamp()


def _usable(secret: object) -> TypeGuard[str]:
    """A token or ticket worth looking up: a short non-empty string (cookies are untrusted)."""
    return isinstance(secret, str) and 0 < len(secret) <= 128


class DbSessionTokens:
    """Session tokens as ``signin_sessions`` rows (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], *,
                 idle_timeout_s: float = rules.IDLE_TIMEOUT_S, clock: Clock = _utcnow,
                 touch_every_s: float = rules.TOUCH_EVERY_S) -> None:
        self.sessions = sessions
        self.idle_timeout_s = idle_timeout_s
        self.touch_every_s = touch_every_s
        self._clock = clock

    def issue(self, user_id: int) -> str:
        """A new token for ``user_id``; expired and revoked rows are cleared on the way."""
        token = rules.new_secret()
        now = self._clock()
        with unit_of_work(self.sessions) as session:
            session.execute(delete(m.SignInSession).where(
                m.SignInSession.last_seen_at < now - dt.timedelta(seconds=self.idle_timeout_s)))
            session.add(m.SignInSession(token_hash=rules.secret_hash(token), user_id=int(user_id),
                                        created_at=now, last_seen_at=now,
                                        idle_timeout_s=self.idle_timeout_s))
        return token

    def resolve(self, token: str | None) -> int | None:
        """The user id of a live token, else None. Its last-seen time is written when it is
        older than ``touch_every_s`` (not on every request)."""
        if not _usable(token):
            return None
        now = self._clock()
        with unit_of_work(self.sessions) as session:
            row = session.scalars(select(m.SignInSession).where(
                m.SignInSession.token_hash == rules.secret_hash(token))).one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            if rules.is_idle(_seconds(row.last_seen_at), _seconds(now), row.idle_timeout_s):
                return None
            if rules.needs_touch(_seconds(row.last_seen_at), _seconds(now), self.touch_every_s):
                row.last_seen_at = now
            return int(row.user_id)

    def revoke(self, token: str | None) -> None:
        if not _usable(token):
            return
        with unit_of_work(self.sessions) as session:
            session.execute(update(m.SignInSession)
                            .where(m.SignInSession.token_hash == rules.secret_hash(token),
                                   m.SignInSession.revoked_at.is_(None))
                            .values(revoked_at=self._clock()))

    def revoke_user(self, user_id: int) -> None:
        """Sign a user out everywhere (every tab, every replica)."""
        with unit_of_work(self.sessions) as session:
            session.execute(update(m.SignInSession)
                            .where(m.SignInSession.user_id == int(user_id),
                                   m.SignInSession.revoked_at.is_(None))
                            .values(revoked_at=self._clock()))


class DbHandoffTickets:
    """One-time hand-off tickets as ``signin_tickets`` rows (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], *, ttl_s: float = rules.TICKET_TTL_S,
                 clock: Clock = _utcnow) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, token: str) -> str:
        ticket = rules.new_secret()
        now = self._clock()
        with unit_of_work(self.sessions) as session:
            session.execute(delete(m.SignInTicket).where(m.SignInTicket.expires_at < now))
            session.add(m.SignInTicket(ticket_hash=rules.secret_hash(ticket),
                                       sealed_token=rules.seal(token, ticket), created_at=now,
                                       expires_at=now + dt.timedelta(seconds=self.ttl_s)))
        return ticket

    def redeem(self, ticket: str | None) -> str | None:
        """The session token of a live ticket, once (in all replicas together); None for an
        unknown, used or expired ticket."""
        if not _usable(ticket):
            return None
        key = rules.secret_hash(ticket)
        with unit_of_work(self.sessions) as session:
            row = session.get(m.SignInTicket, key)
            if row is None:
                return None
            sealed, expires_at = row.sealed_token, row.expires_at
            session.expunge(row)
            # Only the transaction whose DELETE removed the row redeems it (a concurrent one
            # waits for the row lock, then deletes nothing).
            gone = session.execute(delete(m.SignInTicket).where(m.SignInTicket.ticket_hash == key))
            if getattr(gone, "rowcount", 0) != 1:
                return None
        if self._clock() > expires_at:
            return None
        return rules.unseal(sealed, ticket)


class DbFailureThrottle:
    """Failed sign-ins per key as ``signin_failures`` rows (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], *, policy: ThrottlePolicy | None = None,
                 clock: Clock = _utcnow) -> None:
        self.sessions = sessions
        self.policy = policy if policy is not None else ThrottlePolicy.current()
        self._clock = clock

    def _counts(self, keys: tuple[str, ...]) -> dict[str, int]:
        now = _seconds(self._clock())
        with unit_of_work(self.sessions, readonly=True) as session:
            rows = session.execute(select(m.SignInFailure.key, m.SignInFailure.count,
                                          m.SignInFailure.last_failed_at)
                                   .where(m.SignInFailure.key.in_(keys))).all()
        return {k: c for k, c, last in rows if not self.policy.forgotten(_seconds(last), now)}

    def failures(self, key: str) -> int:
        """Recent failures of ``key`` (0 once forgotten)."""
        return self._counts((key[:200],)).get(key[:200], 0)

    def penalty(self, *keys: str) -> float:
        """Extra seconds the next attempt on any of ``keys`` waits (the worst key counts)."""
        counts = self._counts(tuple(k[:200] for k in keys))
        return self.policy.penalty(max(counts.values(), default=0))

    def failed(self, *keys: str) -> None:
        """Count one failure against each key: one atomic upsert per key, so concurrent
        failures in several replicas all count; a key whose failures were forgotten starts a
        new window at 1."""
        now = self._clock()
        cutoff = now - dt.timedelta(seconds=self.policy.forget_after_s)
        with unit_of_work(self.sessions) as session:
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" \
                else sqlite.insert
            table: Any = m.SignInFailure.__table__
            for key in sorted({k[:200] for k in keys}):  # one lock order: no deadlock
                stmt: Any = insert(table).values(key=key, count=1, window_start=now,
                                                 last_failed_at=now)
                stale = table.c.last_failed_at < cutoff
                stmt = stmt.on_conflict_do_update(index_elements=[table.c.key], set_={
                    "count": case((stale, 1), else_=table.c.count + 1),
                    "window_start": case((stale, literal(now, m.UtcDateTime())),
                                         else_=table.c.window_start),
                    "last_failed_at": now,
                })
                session.execute(stmt)
            session.execute(delete(m.SignInFailure).where(m.SignInFailure.last_failed_at < cutoff))

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys`` (a successful sign-in)."""
        with unit_of_work(self.sessions) as session:
            session.execute(delete(m.SignInFailure)
                            .where(m.SignInFailure.key.in_([k[:200] for k in keys])))

    def reset(self) -> None:
        """Forget every failure."""
        with unit_of_work(self.sessions) as session:
            session.execute(delete(m.SignInFailure))


@dataclass
class SignInState:
    """The three sign-in stores of one database."""

    sessions: sessionmaker[Session]
    tokens: DbSessionTokens = field(init=False)
    tickets: DbHandoffTickets = field(init=False)
    throttle: DbFailureThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = DbSessionTokens(self.sessions)
        self.tickets = DbHandoffTickets(self.sessions)
        self.throttle = DbFailureThrottle(self.sessions)
