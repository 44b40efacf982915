"""Reload-surviving sign-in tokens: issue, resolve, idle expiry, revoke."""

from __future__ import annotations

import time

from spine_core.signin_sessions import SessionTokens


def test_token_resolves_to_its_user_until_revoked() -> None:
    tokens = SessionTokens()
    a, b = tokens.issue(1), tokens.issue(2)
    assert a != b and len(a) >= 40
    assert tokens.resolve(a) == 1 and tokens.resolve(b) == 2
    tokens.revoke(a)
    assert tokens.resolve(a) is None and tokens.resolve(b) == 2
    assert tokens.resolve("") is None and tokens.resolve("forged") is None


def test_idle_tokens_expire_and_use_keeps_them_alive() -> None:
    tokens = SessionTokens(idle_timeout_s=0.2)
    kept, idle = tokens.issue(1), tokens.issue(2)
    for _ in range(4):
        time.sleep(0.08)
        assert tokens.resolve(kept) == 1
    assert tokens.resolve(idle) is None


def test_revoke_user_signs_out_every_tab_and_size_is_bounded() -> None:
    tokens = SessionTokens(max_tokens=3)
    t1, t2, t3 = tokens.issue(7), tokens.issue(7), tokens.issue(8)
    tokens.revoke_user(7)
    assert tokens.resolve(t1) is None and tokens.resolve(t2) is None and tokens.resolve(t3) == 8
    extra = [tokens.issue(9) for _ in range(5)]
    assert sum(tokens.resolve(t) is not None for t in [t3, *extra]) == 3
