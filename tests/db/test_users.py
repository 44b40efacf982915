"""Accounts, password hashes, sign-in and roles, on real databases."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import audit, users
from db.models import User
from db.session import unit_of_work
from spine_core.errors import InputError, NotFound, PermissionDenied
from spine_core.roles import Role


def test_hash_is_salted_self_describing_and_verifies() -> None:
    first, second = users.hash_password("s3cret!"), users.hash_password("s3cret!")
    assert first != second  # a salt per hash
    scheme, params, _salt, _key = first.split("$")
    assert (scheme, params) == ("scrypt", f"n={users.SCRYPT_N},r=8,p=1")
    assert users.verify_password("s3cret!", first)
    assert not users.verify_password("s3cret?", first)


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "bcrypt$x$y$z", "scrypt$n=3,r=8,p=1$AAAAAAAAAAA$" + "A" * 43,
     "scrypt$n=4194304,r=8,p=1$AAAAAAAAAAA$" + "A" * 43, "scrypt$n=16384$AAAA$AAAA"],
)
def test_malformed_or_absurd_hashes_never_match(stored: str) -> None:
    assert not users.verify_password("anything", stored)


def test_weak_or_missing_passwords_are_refused() -> None:
    with pytest.raises(InputError, match="characters"):
        users.hash_password("abc")


def _create(sessions: sessionmaker[Session], name: str = "alice", role: str = "annotator",
            password: str = "correct horse") -> int:
    with unit_of_work(sessions) as session:
        return users.create_user(session, name, password, role, actor="admin").id


def test_authenticate(db_sessions: sessionmaker[Session]) -> None:
    user_id = _create(db_sessions, "Alice")
    with unit_of_work(db_sessions, readonly=True) as session:
        user = users.authenticate(session, " ALICE ", "correct horse")
        assert user is not None and user.id == user_id and user.username == "alice"
        assert users.authenticate(session, "alice", "wrong horse") is None
        assert users.authenticate(session, "bob", "correct horse") is None
        assert users.authenticate(session, "not a name!", "correct horse") is None
    with unit_of_work(db_sessions) as session:
        users.set_active(session, "alice", False, actor="admin")
    with unit_of_work(db_sessions, readonly=True) as session:
        assert users.authenticate(session, "alice", "correct horse") is None


def test_every_refusal_costs_one_full_scrypt(db_sessions: sessionmaker[Session],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown user, disabled user, wrong and right password all run the same scrypt work."""
    _create(db_sessions, "alice")
    _create(db_sessions, "carol")
    with unit_of_work(db_sessions) as session:
        users.set_active(session, "carol", False, actor="admin")
    calls: list[tuple[int, int, int]] = []
    real: Callable[..., bytes] = hashlib.scrypt

    def counting_scrypt(password: bytes, **kwargs: Any) -> bytes:
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **kwargs)

    monkeypatch.setattr(users.hashlib, "scrypt", counting_scrypt)
    expected = [(users.SCRYPT_N, users.SCRYPT_R, users.SCRYPT_P)]
    with unit_of_work(db_sessions, readonly=True) as session:
        for name, password in [("alice", "correct horse"), ("alice", "wrong"),
                               ("nobody", "correct horse"), ("carol", "correct horse")]:
            calls.clear()
            users.authenticate(session, name, password)
            assert calls == expected, (name, password)


def test_create_user_validates_and_audits(db_sessions: sessionmaker[Session]) -> None:
    user_id = _create(db_sessions, "alice")
    with unit_of_work(db_sessions) as session:
        with pytest.raises(InputError, match="already exists"):
            users.create_user(session, "ALICE", "password", "viewer", actor="admin")
        with pytest.raises(InputError, match="unknown role"):
            users.create_user(session, "dave", "password", "superuser", actor="admin")
        with pytest.raises(InputError, match="not allowed"):
            users.create_user(session, "da ve", "password", "viewer", actor="admin")
    with unit_of_work(db_sessions, readonly=True) as session:
        [entry] = audit.history(session, entity="user", entity_id=user_id)
        assert (entry.actor, entry.action) == ("admin", "user.create")
        assert entry.after is not None and entry.after["role"] == "annotator"
        assert "password_hash" not in entry.after


def test_set_role_is_audited_with_before_and_after(db_sessions: sessionmaker[Session]) -> None:
    user_id = _create(db_sessions, "alice")
    with unit_of_work(db_sessions) as session:
        user = users.set_role(session, "alice", Role.adjudicator, actor="admin", is_chair=True)
        assert (user.role, user.is_chair) == ("adjudicator", True)
        with pytest.raises(NotFound, match="no user named"):
            users.set_role(session, "nobody", "viewer", actor="admin")
    with unit_of_work(db_sessions, readonly=True) as session:
        latest = audit.history(session, entity="user", entity_id=user_id)[0]
        assert latest.action == "user.set_role"
        assert latest.before == {"role": "annotator", "is_chair": False}
        assert latest.after == {"role": "adjudicator", "is_chair": True}
        assert users.get_user(session, "alice").version == 2  # type: ignore[union-attr]


def test_set_password(db_sessions: sessionmaker[Session]) -> None:
    _create(db_sessions, "alice")
    with unit_of_work(db_sessions) as session:
        users.set_password(session, "alice", "new password", actor="alice")
    with unit_of_work(db_sessions, readonly=True) as session:
        assert users.authenticate(session, "alice", "correct horse") is None
        assert users.authenticate(session, "alice", "new password") is not None
        assert audit.history(session, entity="user")[0].action == "user.set_password"


def test_demo_users_are_created_once(db_sessions: sessionmaker[Session]) -> None:
    with unit_of_work(db_sessions) as session:
        created = users.ensure_demo_users(session)
    assert created == ["admin", "reader1", "reader2", "reader3", "adjudicator1", "adjudicator2",
                       "viewer"]
    with unit_of_work(db_sessions) as session:
        assert users.ensure_demo_users(session) == []
        listed = {u.username: u for u in users.list_users(session)}
    assert {n: u.role for n, u in listed.items()} == {
        "admin": "admin", "reader1": "annotator", "reader2": "annotator", "reader3": "annotator",
        "adjudicator1": "adjudicator", "adjudicator2": "adjudicator", "viewer": "viewer"}
    assert [n for n, u in listed.items() if u.is_chair] == ["adjudicator2"]
    with unit_of_work(db_sessions, readonly=True) as session:
        assert users.authenticate(session, "admin", users.DEMO_PASSWORD_ADMIN) is not None
        assert users.authenticate(session, "adjudicator2", users.DEMO_PASSWORD_ADJUDICATOR2)
        assert len(audit.history(session, action="user.create")) == 7


def test_require_role() -> None:
    reader = User(username="r", role="annotator", active=True)
    assert users.require_role(reader, Role.annotator, "admin") is reader
    with pytest.raises(PermissionDenied, match="adjudicator or admin; 'r' is annotator"):
        users.require_role(reader, "adjudicator", Role.admin)
    with pytest.raises(PermissionDenied, match="sign in"):
        users.require_role(None, "viewer")
    with pytest.raises(PermissionDenied, match="disabled"):
        users.require_role(User(username="x", role="admin", active=False), "admin")
    with pytest.raises(InputError, match="unknown role"):
        users.require_role(reader, "reader")
    assert users.has_role(reader, "annotator") and not users.has_role(reader, "admin")
