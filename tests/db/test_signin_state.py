"""Sign-in state in the database (``db.signin_state``) on SQLite and PostgreSQL: only token hashes
are stored, idle expiry and revocation, single-use tickets even when redeemed concurrently, and
throttle counts that every concurrent writer adds to. Two real processes on one database:
tests/db/test_shared_state_processes.py."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db import users
from db.session import unit_of_work
from db.signin_state import DbFailureThrottle, DbHandoffTickets, DbSessionTokens
from spine_core.signin_sessions import secret_hash
from spine_core.signin_throttle import ThrottlePolicy


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _user(sessions: sessionmaker[Session], name: str = "reader1") -> int:
    with unit_of_work(sessions) as session:
        return int(users.create_user(session, name, "pass-word-1", "annotator", actor="test").id)


def test_tokens_store_only_hashes_expire_when_idle_and_revoke(
    db_sessions: sessionmaker[Session],
) -> None:
    uid, other = _user(db_sessions), _user(db_sessions, "reader2")
    clock = Clock()
    tokens = DbSessionTokens(db_sessions, idle_timeout_s=600, clock=clock)
    a, b, c = tokens.issue(uid), tokens.issue(uid), tokens.issue(other)
    with db_sessions() as session:
        stored = set(session.scalars(select(m.SignInSession.token_hash)))
    assert stored == {secret_hash(a), secret_hash(b), secret_hash(c)}
    assert not {a, b, c} & stored  # the tokens themselves are nowhere in the table
    assert tokens.resolve(a) == uid and tokens.resolve(c) == other
    for forged in ("", None, "forged", "x" * 5000):
        assert tokens.resolve(forged) is None
    clock.advance(500)
    assert tokens.resolve(a) == uid and tokens.resolve(c) == other  # use keeps them alive...
    clock.advance(500)
    assert tokens.resolve(a) == uid and tokens.resolve(c) == other
    assert tokens.resolve(b) is None  # ...idle for 1000 s > 600 s: expired
    tokens.revoke(a)
    assert tokens.resolve(a) is None and tokens.resolve(c) == other
    d = tokens.issue(uid)
    tokens.revoke_user(uid)
    assert tokens.resolve(d) is None and tokens.resolve(c) == other


def test_a_ticket_is_redeemed_once_even_by_racing_threads(
    db_sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    tickets = DbHandoffTickets(db_sessions, ttl_s=60, clock=clock)
    ticket = tickets.issue("the-session-token")
    with db_sessions() as session:
        row = session.scalars(select(m.SignInTicket)).one()
    assert row.ticket_hash == secret_hash(ticket) and "the-session-token" not in row.sealed_token
    results: list[str | None] = []
    barrier = threading.Barrier(4)

    def redeem() -> None:
        barrier.wait()
        results.append(tickets.redeem(ticket))

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("the-session-token") == 1 and results.count(None) == 3
    late = tickets.issue("another-token")
    clock.advance(61)
    assert tickets.redeem(late) is None
    assert tickets.redeem("unknown") is None and tickets.redeem(None) is None


def test_throttle_counts_every_concurrent_failure_and_forgets(
    db_sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    policy = ThrottlePolicy(free_failures=3, first_penalty_s=1.0, max_penalty_s=8.0,
                            forget_after_s=60.0)
    throttle = DbFailureThrottle(db_sessions, policy=policy, clock=clock)
    barrier = threading.Barrier(5)

    def fail() -> None:
        barrier.wait()
        for _ in range(4):
            throttle.failed("user:alice", "client:10.0.0.9")

    threads = [threading.Thread(target=fail) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert throttle.failures("user:alice") == 20 and throttle.failures("client:10.0.0.9") == 20
    assert throttle.penalty("user:bob", "client:10.0.0.9") == 8.0  # the worst key, capped
    assert throttle.penalty("user:bob") == 0.0
    throttle.succeeded("user:alice")
    assert throttle.failures("user:alice") == 0 and throttle.failures("client:10.0.0.9") == 20
    clock.advance(61)
    assert throttle.failures("client:10.0.0.9") == 0
    throttle.failed("client:10.0.0.9")  # a new window starts at 1
    assert throttle.failures("client:10.0.0.9") == 1
    for _ in range(4):
        throttle.failed("user:carol")
    assert throttle.penalty("user:carol") == 1.0
    throttle.reset()
    assert throttle.failures("user:carol") == 0


def test_a_token_is_written_again_only_once_a_minute(db_sessions: sessionmaker[Session]) -> None:
    """Resolving a token reads its row; the last-seen time is written only when it is
    ``touch_every_s`` old, so a reader's box saves and chunks cost no write each; the session
    still expires by its idle time counted from the last write."""
    from sqlalchemy import event

    uid = _user(db_sessions)
    clock = Clock()
    tokens = DbSessionTokens(db_sessions, idle_timeout_s=600, clock=clock, touch_every_s=60)
    token = tokens.issue(uid)
    writes: list[str] = []
    engine = db_sessions.kw["bind"]

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE SIGNIN_SESSIONS"):
            writes.append(statement)

    def last_seen() -> dt.datetime:
        with db_sessions() as session:
            return session.scalars(select(m.SignInSession.last_seen_at)).one()

    issued = last_seen()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            clock.advance(10)  # 50 s of requests: no write
            assert tokens.resolve(token) == uid
        assert writes == [] and last_seen() == issued
        clock.advance(10)  # 60 s after the last write: written
        assert tokens.resolve(token) == uid
        assert len(writes) == 1 and last_seen() == clock.now
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    clock.advance(590)  # 590 s after the write, under the idle timeout: alive
    assert tokens.resolve(token) == uid
    clock.advance(611)  # the one at +590 s was written (over a minute), so 611 s idle: expired
    assert tokens.resolve(token) is None
