"""The demonstration's curated case list (admins, audited) and the list made without it, on SQLite
and PostgreSQL; a viewer's writes are refused by the database layer, whatever the page shows."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations, box_events, demo_cases
from db import models as m
from db.disputes import cast_vote
from db.reports import set_report
from db.session import unit_of_work
from spine_core.errors import ConflictError, InputError, PermissionDenied


def _setup(sessions: sessionmaker[Session]) -> dict[str, int]:
    with unit_of_work(sessions) as s:
        for name, role in (("admin", "admin"), ("viewer", "viewer"), ("adj", "adjudicator")):
            s.add(m.User(username=name, display_name=name, role=role, password_hash="!"))
        for n in range(4):
            s.add(m.Study(study_uid=f"1.2.826.0.1.{n:060d}", dataset="rsna", n_slices=10))
        s.flush()
        ids = {u.username: u.id for u in s.scalars(select(m.User))}
        ids.update({f"study{n}": sid for n, sid in enumerate(
            s.scalars(select(m.Study.id).order_by(m.Study.study_uid)))})
        return ids


def _user(s: Session, ids: dict[str, int], name: str) -> m.User:
    user = s.get(m.User, ids[name])
    assert user is not None
    return user


def test_admin_builds_edits_orders_and_removes_cases(db_sessions: sessionmaker[Session]) -> None:
    ids = _setup(db_sessions)
    with unit_of_work(db_sessions) as s:
        admin = _user(s, ids, "admin")
        a = demo_cases.add_case(s, admin, ids["study2"], "C2 fracture the report missed",
                                "Look at the dens.", "c2")
        b = demo_cases.add_case(s, admin, ids["study0"], "An intact spine")
        c = demo_cases.add_case(s, admin, ids["study1"], "A false alarm")
    with unit_of_work(db_sessions) as s:
        rows = demo_cases.curated_cases(s)
        assert [r.id for r in rows] == [a, b, c]
        assert rows[0].level == "C2" and rows[0].note == "Look at the dens."
        assert rows[0].short_name.startswith("rsna · …") and len(rows[0].short_name) < 20
        demo_cases.move_case(s, _user(s, ids, "admin"), c, -5)  # clamped to the top
    with unit_of_work(db_sessions) as s:
        assert [r.id for r in demo_cases.curated_cases(s)] == [c, a, b]
        version = next(r.version for r in demo_cases.curated_cases(s) if r.id == a)
        demo_cases.edit_case(s, _user(s, ids, "admin"), a, title="C2: the report missed it",
                             note="", level=None, version=version)
    with unit_of_work(db_sessions) as s, pytest.raises(ConflictError, match="changed by admin"):
        demo_cases.edit_case(s, _user(s, ids, "admin"), a, title="stale", note="", level=None,
                             version=version)
    with unit_of_work(db_sessions) as s:
        demo_cases.remove_case(s, _user(s, ids, "admin"), b)
    with unit_of_work(db_sessions) as s:
        rows = demo_cases.curated_cases(s)
        assert [(r.id, r.title, r.level) for r in rows] == [
            (c, "A false alarm", None), (a, "C2: the report missed it", None)]
        actions = list(s.scalars(select(m.AuditEntry.action).where(
            m.AuditEntry.entity == "demo_case").order_by(m.AuditEntry.id)))
        assert actions == ["demo_case.add"] * 3 + ["demo_case.move", "demo_case.edit",
                                                    "demo_case.remove"]
        assert demo_cases.demonstration_cases(s) == (rows, True)


@pytest.mark.parametrize(("title", "level", "message"), [
    ("  ", None, "needs a title"), ("x" * 201, None, "under 200"), ("ok", "C9", "not a vertebra")])
def test_bad_case_is_one_clear_line(db_sessions: sessionmaker[Session], title: str,
                                    level: str | None, message: str) -> None:
    ids = _setup(db_sessions)
    with unit_of_work(db_sessions) as s, pytest.raises(InputError, match=message):
        demo_cases.add_case(s, _user(s, ids, "admin"), ids["study0"], title, level=level)


def test_a_viewer_or_adjudicator_cannot_write(db_sessions: sessionmaker[Session]) -> None:
    """Read-only is the database layer's rule: a viewer calling write functions is refused."""
    ids = _setup(db_sessions)
    with unit_of_work(db_sessions) as s:
        case = demo_cases.add_case(s, _user(s, ids, "admin"), ids["study0"], "A case")
    for name in ("viewer", "adj"):
        with unit_of_work(db_sessions) as s:
            user = _user(s, ids, name)
            with pytest.raises(PermissionDenied, match="only admin users"):
                demo_cases.add_case(s, user, ids["study1"], "mine")
            with pytest.raises(PermissionDenied, match="only admin users"):
                demo_cases.edit_case(s, user, case, title="x", note="", level=None)
            with pytest.raises(PermissionDenied, match="only admin users"):
                demo_cases.move_case(s, user, case, 1)
            with pytest.raises(PermissionDenied, match="only admin users"):
                demo_cases.remove_case(s, user, case)
    with unit_of_work(db_sessions) as s:
        viewer = _user(s, ids, "viewer")
        with pytest.raises(PermissionDenied):
            box_events.save_box(s, viewer, ids["study0"],
                                annotations.BoxInput(1, 1.0, 1.0, 4.0, 4.0, level="C2"))
        with pytest.raises(PermissionDenied):
            annotations.set_level_call(s, viewer, ids["study0"], "C2", "fractured")
        with pytest.raises(PermissionDenied):
            set_report(s, viewer, ids["study0"], {"C2": True}, "fracture", "RIS")
        with pytest.raises(PermissionDenied):
            cast_vote(s, viewer, 1, "fractured", "because")
        assert s.scalars(select(m.Box)).first() is None


def _predict(s: Session, study_id: int, p: float, levels: dict[str, float]) -> None:
    version = s.scalars(select(m.ModelVersion)).first()
    if version is None:
        version = m.ModelVersion(name="spinereview-demo", version="0.1.0")
        s.add(version)
        s.flush()
    s.add(m.Prediction(study_id=study_id, model_version_id=version.id, patient_probability=p,
                       level_probabilities=levels))


def test_without_a_list_a_hit_a_miss_and_a_false_alarm_come_first(
        db_sessions: sessionmaker[Session]) -> None:
    ids = _setup(db_sessions)
    with unit_of_work(db_sessions) as s:
        admin = _user(s, ids, "admin")
        # study0: intact, model agrees; study1: false alarm; study2: missed C5; study3: found C2
        for n, labels in enumerate([{"C2": False}, {"C2": False}, {"C5": True, "C2": False},
                                    {"C2": True}]):
            set_report(s, admin, ids[f"study{n}"], labels, "", "train.csv")
        _predict(s, ids["study0"], 0.1, {"C2": 0.1})
        _predict(s, ids["study1"], 0.9, {"C2": 0.2, "C4": 0.9})
        _predict(s, ids["study2"], 0.2, {"C5": 0.2, "C2": 0.1})
        _predict(s, ids["study3"], 0.96, {"C2": 0.96})
    with unit_of_work(db_sessions, readonly=True) as s:
        cases, curated = demo_cases.demonstration_cases(s)
    assert not curated
    assert [(c.study_id, c.title, c.level) for c in cases] == [
        (ids["study3"], "Fracture the model found", "C2"),
        (ids["study2"], "Fracture the model missed", "C5"),
        (ids["study1"], "False alarm: the model flags an intact spine", "C4"),
        (ids["study0"], "No fracture, and the model agrees", None),
    ]
    assert [c.position for c in cases] == [0, 1, 2, 3] and all(c.id is None for c in cases)
    with unit_of_work(db_sessions, readonly=True) as s:
        assert demo_cases.final_label_sources(s, ids["study2"]) == {
            "C2": (False, "report"), "C5": (True, "report")}
