"""Slowing down password guessing: a growing wait after repeated failed sign-ins.

A refused sign-in always waits :data:`REFUSAL_DELAY_S`. On top of that, every attempt on a user
name, or from a browser session, that failed more than :data:`FREE_FAILURES` times recently waits
an extra penalty that doubles with each further failure, up to :data:`MAX_PENALTY_S`. The penalty
is waited *before* the password is checked, so a right guess is no faster to recognise than a
wrong one, and it is counted per user name as well as per session, so opening new sessions does
not reset it for the account under attack. Failures are forgotten :data:`FORGET_AFTER_S` after
the last one, or when the sign-in succeeds.

The app counts in the database (``db.signin_state``), so every app replica sees the same
failures and a restart forgets nothing; :class:`FailureThrottle` counts in one process's memory
(bounded to :data:`MAX_KEYS` keys). Both follow one :class:`ThrottlePolicy` and the
:class:`FailureCounter` interface. Keys count per user name, per browser session and, when the
server knows it, per client address (:func:`client_address`: behind the team's nginx, the address
nginx saw).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

#: Seconds every refused sign-in waits (constant, so a refusal says nothing and guessing is slow).
REFUSAL_DELAY_S = 1.0
#: Failures of one key that cost nothing extra (typos happen).
FREE_FAILURES = 3
#: Extra seconds after the first failure beyond the free ones; doubles with each further failure.
FIRST_PENALTY_S = 1.0
#: Largest extra wait, in seconds.
MAX_PENALTY_S = 30.0
#: Seconds after the last failure when a key's failures are forgotten.
FORGET_AFTER_S = 15 * 60.0
#: Most keys remembered; the least recently failed are dropped first.
MAX_KEYS = 10_000


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures are free, how the penalty grows, when failures are forgotten."""

    free_failures: int = FREE_FAILURES
    first_penalty_s: float = FIRST_PENALTY_S
    max_penalty_s: float = MAX_PENALTY_S
    forget_after_s: float = FORGET_AFTER_S

    @classmethod
    def current(cls) -> ThrottlePolicy:
        """The policy of this module's constants as they are now."""
        return cls(FREE_FAILURES, FIRST_PENALTY_S, MAX_PENALTY_S, FORGET_AFTER_S)

    def penalty(self, failures: int) -> float:
        """Extra seconds after ``failures`` recent failures: 0 up to the free ones, then
        ``first_penalty_s * 2**(n - free - 1)``, at most ``max_penalty_s``."""
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_penalty_s, self.first_penalty_s * 2.0 ** min(over - 1, 32))

    def forgotten(self, last_failed_s: float, now_s: float) -> bool:
        """Whether failures whose last one was at ``last_failed_s`` are forgotten at ``now_s``."""
        return now_s - last_failed_s > self.forget_after_s


class FailureCounter(Protocol):
    """Failure counts per key and the penalty they earn (memory or database)."""

    def failures(self, key: str) -> int: ...

    def penalty(self, *keys: str) -> float: ...

    def failed(self, *keys: str) -> None: ...

    def succeeded(self, *keys: str) -> None: ...

    def reset(self) -> None: ...


@dataclass
class _Failures:
    count: int
    last: float


class FailureThrottle:
    """Failure counts per key (``"user:alice"``, ``"session:<id>"``) and the penalty they earn.

    Thread-safe: Streamlit runs each browser session in its own thread.
    """

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        first_penalty_s: float = FIRST_PENALTY_S,
        max_penalty_s: float = MAX_PENALTY_S,
        forget_after_s: float = FORGET_AFTER_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.first_penalty_s = first_penalty_s
        self.max_penalty_s = max_penalty_s
        self.forget_after_s = forget_after_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def failures(self, key: str) -> int:
        """Recent failures of ``key`` (0 once forgotten)."""
        with self._lock:
            entry = self._current(key)
            return entry.count if entry is not None else 0

    def penalty(self, *keys: str) -> float:
        """Extra seconds the next attempt on any of ``keys`` waits: 0 up to the free failures,
        then ``first_penalty_s * 2**(n - free - 1)`` for the worst key, at most
        ``max_penalty_s``."""
        worst = max((self.failures(k) for k in keys), default=0)
        return self._policy().penalty(worst)

    def failed(self, *keys: str) -> None:
        """Count one failed attempt against each of ``keys``."""
        now = self._clock()
        with self._lock:
            for key in keys:
                entry = self._current(key)
                self._failures[key] = _Failures((entry.count if entry else 0) + 1, now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys`` (a successful sign-in)."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self._failures.clear()

    def _policy(self) -> ThrottlePolicy:
        return ThrottlePolicy(self.free_failures, self.first_penalty_s, self.max_penalty_s,
                              self.forget_after_s)

    def _current(self, key: str) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and self._policy().forgotten(entry.last, self._clock()):
            del self._failures[key]
            return None
        return entry


def throttle_keys(username: str, session_id: str, client: str | None = None) -> tuple[str, ...]:
    """The keys one attempt counts against: the user name as typed (case-insensitive, cut to
    64 characters; unknown names count too, so a refusal tells nothing), the browser session and,
    when known, the client address (see :func:`client_address`)."""
    keys = (f"user:{username.strip().lower()[:64]}", f"session:{session_id[:64]}")
    return (*keys, f"client:{client}") if client else keys


def client_address(peer: str | None, headers: Mapping[str, str]) -> str | None:
    """The address a sign-in attempt came from, normalised, or None when unknown.

    ``peer`` is the address of the connection (None for a local one, as Streamlit gives it).
    When the connection is local, a reverse proxy on this machine (the team deployment's nginx)
    made it, and the proxy's ``X-Real-IP`` header names the client; a remote peer's header is
    ignored (anyone could send one). Anything that is not an IP address counts as unknown.
    """
    def parsed(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address((value or "").strip())
        except ValueError:
            return None

    direct = parsed(peer)
    if direct is None or direct.is_loopback:
        forwarded = parsed(next((v for k, v in headers.items() if k.lower() == "x-real-ip"), None))
        if forwarded is not None:
            return str(forwarded)
    return str(direct) if direct is not None else None


#: An in-memory throttle of this process (tests and tools; the app counts in the database).
SIGN_IN = FailureThrottle()
