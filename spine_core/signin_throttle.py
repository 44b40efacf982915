"""Slowing down password guessing: a growing wait after repeated failed sign-ins.

A refused sign-in always waits :data:`REFUSAL_DELAY_S`. On top of that, every attempt on a user
name, or from a browser session, that failed more than :data:`FREE_FAILURES` times recently waits
an extra penalty that doubles with each further failure, up to :data:`MAX_PENALTY_S`. The penalty
is waited *before* the password is checked, so a right guess is no faster to recognise than a
wrong one, and it is counted per user name as well as per session, so opening new sessions does
not reset it for the account under attack. Failures are forgotten :data:`FORGET_AFTER_S` after
the last one, or when the sign-in succeeds.

Counts live in process memory (one Streamlit server process), bounded to :data:`MAX_KEYS` keys:
a restart forgets them, which is fine for a brake (it is not an account lock-out).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
        over = worst - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_penalty_s, self.first_penalty_s * 2.0 ** min(over - 1, 32))

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

    def _current(self, key: str) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and self._clock() - entry.last > self.forget_after_s:
            del self._failures[key]
            return None
        return entry


def throttle_keys(username: str, session_id: str) -> tuple[str, str]:
    """The keys one attempt counts against: the user name as typed (case-insensitive, cut to
    64 characters; unknown names count too, so a refusal tells nothing) and the browser session."""
    return f"user:{username.strip().lower()[:64]}", f"session:{session_id}"


#: The server process's throttle (the app's sign-in form uses this one).
SIGN_IN = FailureThrottle()
