"""The pure rules under the shared state: a dead worker's reason, the client address behind
nginx, a token sealed into a ticket."""

from __future__ import annotations

from spine_core.job_liveness import dead_reason
from spine_core.signin_sessions import new_secret, seal, secret_hash, unseal
from spine_core.signin_throttle import client_address, throttle_keys

ME = "host-a:100:aaaa"


def test_dead_reason_names_a_gone_process_a_restart_and_a_silent_worker() -> None:
    alive = {100, 200}.__contains__
    assert dead_reason("host-a:200:bbbb", 3.0, me=ME, alive=alive) is None
    assert dead_reason("host-a:300:bbbb", 3.0, me=ME, alive=alive) == \
        "the worker process 300 on host-a is gone"
    assert "was restarted" in (dead_reason("host-a:100:old0", 3.0, me=ME, alive=alive) or "")
    assert dead_reason("host-a:100:aaaa", 3.0, me=ME, alive=alive) is None
    assert dead_reason("host-b:300:cccc", 29.0, me=ME, alive=alive) is None  # not ours to check
    assert dead_reason("host-b:300:cccc", 31.0, me=ME, alive=alive) == \
        "the worker host-b:300 stopped answering (no heartbeat for 31 s)"


def test_client_address_trusts_x_real_ip_only_from_a_local_proxy() -> None:
    assert client_address(None, {"X-Real-IP": "10.0.0.7"}) == "10.0.0.7"
    assert client_address("127.0.0.1", {"x-real-ip": " 10.0.0.7 "}) == "10.0.0.7"
    assert client_address("192.168.1.5", {"X-Real-IP": "10.0.0.7"}) == "192.168.1.5"
    assert client_address(None, {"X-Real-IP": "../etc"}) is None
    assert client_address("::1", {}) == "::1"
    assert throttle_keys("Bob", "s1", "10.0.0.7") == ("user:bob", "session:s1", "client:10.0.0.7")


def test_a_sealed_token_opens_only_with_its_ticket() -> None:
    token, ticket = new_secret(), new_secret()
    sealed = seal(token, ticket)
    assert token not in sealed and unseal(sealed, ticket) == token
    assert unseal(sealed, new_secret()) != token
    assert unseal("not hex", ticket) is None
    assert len(secret_hash(token)) == 64 and secret_hash(token) != secret_hash(ticket)
