"""OpenID Connect accounts on real databases (SQLite and PostgreSQL): ``db.users`` maps a hospital
identity onto a local account (created, linked to one an admin prepared, refused), the subject
winning over the email. The sign-in through app.py is tested in tests/test_app.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import audit, users
from db import models as m
from db.session import unit_of_work
from spine_core.errors import InputError, PermissionDenied
from tests.app_helpers import fast_scrypt


@pytest.fixture
def sessions(db_sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    with fast_scrypt():
        yield db_sessions


def _oidc(sessions: sessionmaker[Session], subject: str, email: str,
          **kwargs: object) -> tuple[int, str, str]:
    with unit_of_work(sessions) as session:
        u = users.user_for_oidc(session, subject=subject, email=email,
                                **kwargs)  # type: ignore[arg-type]
        return u.id, u.username, u.role


def test_new_identity_gets_a_viewer_account_without_password(
    sessions: sessionmaker[Session],
) -> None:
    uid, name, role = _oidc(sessions, "sub-1", "Alice.Smith+CT@Hospital.org",
                            display_name="Alice Smith")
    assert (name, role) == ("alice.smith-ct@hospital.org", "viewer")
    with unit_of_work(sessions, readonly=True) as session:
        row = session.get(m.User, uid)
        assert row is not None and row.oidc_subject == "sub-1" and row.password_hash == ""
        assert row.display_name == "Alice Smith" and row.active
        created = audit.history(session, entity="user", entity_id=uid)
        assert [(e.action, e.actor) for e in created] == [("user.create", name)]
        assert "password_hash" not in (created[0].after or {})
        # no password: the password form never lets this account in
        assert users.authenticate(session, name, "") is None
    # the same identity again: the same account, nothing new
    assert _oidc(sessions, "sub-1", "alice.smith+ct@hospital.org") == (uid, name, "viewer")
    with unit_of_work(sessions, readonly=True) as session:
        assert session.scalar(select(m.User.id).where(m.User.username.like("alice%"))) == uid
        assert len(audit.history(session, entity="user", entity_id=uid)) == 1


def test_admin_role_changes_apply_and_the_subject_wins_over_the_email(
    sessions: sessionmaker[Session],
) -> None:
    uid, name, _ = _oidc(sessions, "sub-2", "bob@hospital.org")
    with unit_of_work(sessions) as session:
        users.set_role(session, name, "adjudicator", actor="admin", is_chair=True)
    # the provider now sends another address: still the same, now adjudicator, account
    assert _oidc(sessions, "sub-2", "robert@hospital.org") == (uid, name, "adjudicator")


def test_an_account_an_admin_created_in_advance_is_linked(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as session:
        pre = users.create_user(session, "carol@hospital.org", "a password", "annotator",
                                actor="admin").id
    uid, name, role = _oidc(sessions, "sub-3", "Carol@Hospital.org")
    assert (uid, name, role) == (pre, "carol@hospital.org", "annotator")
    with unit_of_work(sessions, readonly=True) as session:
        row = session.get(m.User, pre)
        assert row is not None and row.oidc_subject == "sub-3"
        link = audit.history(session, entity="user", entity_id=pre, action="user.link_oidc")
        assert len(link) == 1 and link[0].before == {"oidc_subject": None}
        assert link[0].after == {"oidc_subject": "sub-3"}
        # the password keeps working beside the hospital sign-in
        assert users.authenticate(session, name, "a password") is not None


def test_refusals(sessions: sessionmaker[Session]) -> None:
    _oidc(sessions, "sub-4", "dave@hospital.org")
    with unit_of_work(sessions) as session:
        users.create_user(session, "boss", "a password", "admin", actor="admin")
    # another identity claiming an address whose account is linked already
    with pytest.raises(PermissionDenied, match="linked to another"):
        _oidc(sessions, "sub-intruder", "dave@hospital.org")
    # an unverified address is never used to find an account
    with unit_of_work(sessions) as session:
        users.create_user(session, "erin@hospital.org", "a password", "admin", actor="admin")
    uid, name, role = _oidc(sessions, "sub-5", "erin@hospital.org", email_verified=False)
    assert name.startswith("oidc-") and role == "viewer"
    with unit_of_work(sessions, readonly=True) as session:
        erin = users.get_user(session, "erin@hospital.org")
        assert erin is not None and erin.oidc_subject is None
    # a deactivated account is refused, whichever way it is found
    with unit_of_work(sessions) as session:
        users.set_active(session, "dave@hospital.org", False, actor="admin")
        users.set_active(session, "erin@hospital.org", False, actor="admin")
    with pytest.raises(PermissionDenied, match="deactivated"):
        _oidc(sessions, "sub-4", "dave@hospital.org")
    with pytest.raises(PermissionDenied, match="deactivated"):
        _oidc(sessions, "sub-6", "erin@hospital.org")
    with unit_of_work(sessions, readonly=True) as session:  # the refused link was not saved
        erin = users.get_user(session, "erin@hospital.org")
        assert erin is not None and erin.oidc_subject is None
    # a claim that is not an address never names a local account such as the admin's
    uid, name, role = _oidc(sessions, "sub-8", "boss")
    assert name.startswith("oidc-") and role == "viewer"
    for subject in ("", "   ", "x" * 300):
        with pytest.raises(InputError, match="subject"):
            _oidc(sessions, subject, "frank@hospital.org")


def test_active_user(sessions: sessionmaker[Session]) -> None:
    uid, name, _ = _oidc(sessions, "sub-7", "gina@hospital.org")
    with unit_of_work(sessions) as session:
        assert users.active_user(session, uid).username == name  # type: ignore[union-attr]
        assert users.active_user(session, uid + 1000) is None
        users.set_active(session, name, False, actor="admin")
        assert users.active_user(session, uid) is None


def test_username_from_email() -> None:
    assert users.oidc_username("Ann@Hospital.ORG", "s") == "ann@hospital.org"
    assert users.oidc_username("..ann o'neil@h.org", "s") == "ann-o-neil@h.org"
    fallback = users.oidc_username("", "subject-1")
    assert fallback.startswith("oidc-") and fallback == users.oidc_username("!!!", "subject-1")
    for not_an_address in ("admin", "Admin ", "@admin", "admin@", "reader1"):
        assert users.oidc_username(not_an_address, "subject-1") == fallback
    assert fallback != users.oidc_username("", "subject-2")
    assert users.oidc_username("a" * 50 + "@hospital.example.org", "s") == (
        "a" * 50 + "@hospital.exam")  # cut to 64 characters
    assert users.oidc_username("a" * 100 + "@h.org", "s").startswith("oidc-")  # cut before '@'
