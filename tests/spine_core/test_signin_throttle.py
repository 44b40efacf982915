"""The sign-in guessing brake (``spine_core.signin_throttle``): penalties that start after the free
failures, double and are capped, the worst of a user's and a session's keys, forgetting, bounded
memory. How app.py applies it is tested in tests/test_app.py."""

from __future__ import annotations

from spine_core.signin_throttle import FailureThrottle, throttle_keys


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_penalty_starts_after_the_free_failures_doubles_and_is_capped() -> None:
    throttle = FailureThrottle(free_failures=3, first_penalty_s=1.0, max_penalty_s=8.0,
                               clock=FakeClock())
    seen = []
    for _ in range(8):
        seen.append(throttle.penalty("user:alice"))
        throttle.failed("user:alice")
    assert seen == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert throttle.penalty("user:alice") == 8.0  # capped
    assert throttle.penalty("user:bob") == 0.0


def test_the_worst_key_counts_and_success_or_time_forgets() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(free_failures=1, first_penalty_s=1.0, forget_after_s=60.0,
                               clock=clock)
    user, session = throttle_keys(" Alice ", "s1")
    assert (user, session) == ("user:alice", "session:s1")
    for _ in range(3):
        throttle.failed(user, session)
    # a new session on the same account is slowed down all the same
    assert throttle.penalty(*throttle_keys("ALICE", "s2")) == 2.0
    # one session guessing many names is slowed down too
    assert throttle.penalty(*throttle_keys("bob", "s1")) == 2.0
    throttle.succeeded(user, session)
    assert throttle.penalty(user, session) == 0.0
    throttle.failed(user)
    throttle.failed(user)
    clock.now += 61.0
    assert throttle.failures(user) == 0 and throttle.penalty(user) == 0.0


def test_memory_is_bounded() -> None:
    throttle = FailureThrottle(max_keys=3, clock=FakeClock())
    for i in range(5):
        throttle.failed(f"user:u{i}")
    assert [throttle.failures(f"user:u{i}") for i in range(5)] == [0, 0, 1, 1, 1]
