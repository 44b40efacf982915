"""Administration in the core (``db.user_admin``, ``db.report_form``), on SQLite and PostgreSQL:
admins only, checked against the database; list, add, role, chair, deactivate, password reset,
hospital identity unlink and the report form, every action audited, bad requests refused with what
to do. The page itself: tests/pages/test_admin.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import audit, user_admin, users
from db import models as m
from db.catalogue import get_or_create_study
from db.report_form import derived_overall, editor_levels, report_form
from db.session import unit_of_work
from spine_core.errors import InputError, NotFound, PermissionDenied
from tests.app_helpers import fast_scrypt

PW = "long enough"


@pytest.fixture
def sessions(db_sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    with fast_scrypt():
        with unit_of_work(db_sessions) as session:
            for name, role in [("boss", "admin"), ("reader", "annotator"),
                               ("judge", "adjudicator")]:
                users.create_user(session, name, PW, role, actor="setup")
        yield db_sessions


def _user(sessions: sessionmaker[Session], name: str) -> m.User:
    with unit_of_work(sessions, readonly=True) as session:
        user = users.get_user(session, name)
        assert user is not None
        return user


def test_non_admins_and_deactivated_admins_are_refused(sessions: sessionmaker[Session]) -> None:
    actions = [
        lambda s, a: user_admin.user_rows(s, a),
        lambda s, a: user_admin.add_user(s, a, "new", PW, PW, "viewer"),
        lambda s, a: user_admin.change_role(s, a, "reader", "admin"),
        lambda s, a: user_admin.set_chair(s, a, "judge", True),
        lambda s, a: user_admin.set_account_active(s, a, "judge", False),
        lambda s, a: user_admin.reset_password(s, a, "boss", "taken over", "taken over"),
        lambda s, a: report_form(s, a, "1.2.3"),
    ]
    reader = _user(sessions, "reader")
    for action in actions:
        with pytest.raises(PermissionDenied, match="only admin users"):
            with unit_of_work(sessions) as session:
                action(session, reader)
    with unit_of_work(sessions) as session:
        users.create_user(session, "boss2", PW, "admin", actor="setup")
        users.set_active(session, "boss2", False, actor="setup")
    gone = _user(sessions, "boss2")
    with pytest.raises(PermissionDenied, match="deactivated"):
        with unit_of_work(sessions) as session:
            user_admin.change_role(session, gone, "reader", "admin")
    with unit_of_work(sessions, readonly=True) as session:
        assert users.get_user(session, "reader").role == "annotator"  # type: ignore[union-attr]
        assert users.get_user(session, "new") is None
        assert users.authenticate(session, "boss", PW) is not None
        assert audit.history(session, actor="reader") == []


def test_admin_actions_change_and_audit(sessions: sessionmaker[Session]) -> None:
    boss = _user(sessions, "boss")
    with unit_of_work(sessions) as session:
        new = user_admin.add_user(session, boss, " Nora ", PW, PW, "adjudicator",
                                  display_name=" Dr Nora ", is_chair=True)
        assert (new.username, new.display_name, new.is_chair) == ("nora", "Dr Nora", True)
        user_admin.change_role(session, boss, "reader", "viewer")
        user_admin.set_chair(session, boss, "judge", True)
        user_admin.set_account_active(session, boss, "judge", False)
        user_admin.reset_password(session, boss, "reader", "a new one", "a new one")
    with unit_of_work(sessions) as session:
        # a chair who stops adjudicating stops chairing
        assert not user_admin.change_role(session, boss, "nora", "annotator").is_chair
        user_admin.set_account_active(session, boss, "judge", True)
    with unit_of_work(sessions, readonly=True) as session:
        rows = {r.username: r for r in user_admin.user_rows(session, boss)}
        assert (rows["reader"].role, rows["judge"].is_chair, rows["judge"].active) == (
            "viewer", True, True)
        assert users.authenticate(session, "reader", "a new one") is not None
        assert users.authenticate(session, "reader", PW) is None
        done = [(e.action, (e.after or {}).get("role"), (e.after or {}).get("active"))
                for e in reversed(audit.history(session, actor="boss"))]
        assert done == [
            ("user.create", "adjudicator", True), ("user.set_role", "viewer", None),
            ("user.set_role", "adjudicator", None), ("user.set_active", None, False),
            ("user.set_password", None, None), ("user.set_role", "annotator", None),
            ("user.set_active", None, True),
        ]


def test_bad_requests_are_refused_with_what_to_do(sessions: sessionmaker[Session]) -> None:
    boss = _user(sessions, "boss")
    refusals = [
        (lambda s: user_admin.add_user(s, boss, "READER", PW, PW, "viewer"), "already exists"),
        (lambda s: user_admin.add_user(s, boss, "x", "abc", "abc", "viewer"), "characters"),
        (lambda s: user_admin.add_user(s, boss, "x", PW, PW + "!", "viewer"), "passwords differ"),
        (lambda s: user_admin.add_user(s, boss, "x y", PW, PW, "viewer"), "not allowed"),
        (lambda s: user_admin.add_user(s, boss, "x", PW, PW, "boss"), "unknown role"),
        (lambda s: user_admin.add_user(s, boss, "x", PW, PW, "viewer", is_chair=True),
         "only an adjudicator"),
        (lambda s: user_admin.set_chair(s, boss, "reader", True), "only an adjudicator"),
        (lambda s: user_admin.reset_password(s, boss, "reader", PW, "other"), "passwords differ"),
        (lambda s: user_admin.set_account_active(s, boss, "boss", False), "your own account"),
        (lambda s: user_admin.change_role(s, boss, "boss", "viewer"), "only active admin"),
    ]
    for action, message in refusals:
        with pytest.raises(InputError, match=message):
            with unit_of_work(sessions) as session:
                action(session)
    with pytest.raises(NotFound, match="no user named"):
        with unit_of_work(sessions) as session:
            user_admin.change_role(session, boss, "ghost", "viewer")
    with unit_of_work(sessions, readonly=True) as session:
        assert [r.username for r in user_admin.user_rows(session, boss)] == [
            "boss", "judge", "reader"]
        assert audit.history(session, actor="boss") == []


def test_the_last_active_admin_stays(sessions: sessionmaker[Session]) -> None:
    boss = _user(sessions, "boss")
    with unit_of_work(sessions) as session:
        user_admin.add_user(session, boss, "deputy", PW, PW, "admin")
    deputy = _user(sessions, "deputy")
    with unit_of_work(sessions) as session:
        user_admin.set_account_active(session, deputy, "boss", False)
    with pytest.raises(InputError, match="only active admin"):
        with unit_of_work(sessions) as session:
            user_admin.change_role(session, deputy, "deputy", "annotator")
    with unit_of_work(sessions) as session:  # with the boss back, the deputy may step down
        user_admin.set_account_active(session, deputy, "boss", True)
        user_admin.change_role(session, deputy, "deputy", "annotator")


def test_unlink_a_hospital_identity(sessions: sessionmaker[Session]) -> None:
    boss = _user(sessions, "boss")
    with unit_of_work(sessions) as session:
        users.create_user(session, "kim@hospital.org", PW, "annotator", actor="setup")
        linked = users.user_for_oidc(session, subject="old-idp-1", email="kim@hospital.org")
    with unit_of_work(sessions) as session:  # the hospital moved to another provider
        with pytest.raises(PermissionDenied, match="linked to another"):
            users.user_for_oidc(session, subject="new-idp-1", email="kim@hospital.org")
    with pytest.raises(PermissionDenied, match="only admin users"):
        with unit_of_work(sessions) as session:
            user_admin.unlink_hospital_identity(session, _user(sessions, "reader"),
                                                "kim@hospital.org")
    with unit_of_work(sessions) as session:
        user_admin.unlink_hospital_identity(session, boss, "kim@hospital.org")
    with unit_of_work(sessions) as session:
        again = users.user_for_oidc(session, subject="new-idp-1", email="kim@hospital.org")
        assert (again.id, again.role, again.oidc_subject) == (linked.id, "annotator", "new-idp-1")
        unlink = audit.history(session, action="user.unlink_oidc")
        assert [(e.actor, e.before, e.after) for e in unlink] == [
            ("boss", {"oidc_subject": "old-idp-1"}, {"oidc_subject": None})]


def test_report_form_and_derived_overall(sessions: sessionmaker[Session]) -> None:
    boss = _user(sessions, "boss")
    with unit_of_work(sessions) as session:
        study, _ = get_or_create_study(session, "1.2.840.9", "rsna")
        study_id = study.id
    with unit_of_work(sessions, readonly=True) as session:
        empty = report_form(session, boss, " 1.2.840.9 ")
        assert (empty.study_id, empty.exists, empty.labels) == (study_id, False, {})
        with pytest.raises(NotFound, match="no study has the UID"):
            report_form(session, boss, "9.9.9")
        with pytest.raises(InputError, match="Study Instance UID"):
            report_form(session, boss, "  ")
    from db.reports import set_report

    with unit_of_work(sessions) as session:
        set_report(session, boss, study_id, {"C2": True, "L1": False}, "C2 fracture")
    with unit_of_work(sessions, readonly=True) as session:
        form = report_form(session, boss, "1.2.840.9")
    assert (form.exists, form.labels, form.patient_overall) == (
        True, {"C2": True, "L1": False}, True)
    assert form.levels[:7] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert form.levels[7:] == [f"T{i}" for i in range(1, 13)] + ["L1"]  # L1 kept for saving
    assert editor_levels([])[-1] == "T12"
    assert derived_overall({"C1": None, "C2": False}) is False
    assert derived_overall({"C1": None, "C2": False, "T4": True}) is True
    assert derived_overall({"C1": None}) is None


def test_the_system_account_cannot_sign_in_or_be_given_a_role(sessions: sessionmaker[Session]) -> None:
    from db.csv_import import dataset_user

    with unit_of_work(sessions) as s:
        dataset_user(s)
    admin = _user(sessions, "boss")
    for change in (lambda s: user_admin.change_role(s, admin, "dataset", "admin"),
                   lambda s: user_admin.set_account_active(s, admin, "dataset", True),
                   lambda s: user_admin.reset_password(s, admin, "dataset", "long enough pw",
                                                       "long enough pw")):
        with pytest.raises(PermissionDenied, match="'dataset' is a system account"):
            with unit_of_work(sessions) as s:
                change(s)
    with unit_of_work(sessions, readonly=True) as s:
        row = users.get_user(s, "dataset")
        assert row is not None and (row.role, row.active, row.password_hash) == ("viewer", False, "!")
        assert users.authenticate(s, "dataset", "!") is None
