"""Rows the annotation tests start from: users of each role and studies with one series.

Rows are written through the ORM into a real (migrated) database; studies made here have no
image files, which the annotation store never opens (it checks boxes against the series shape).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.session import unit_of_work

SHAPE = (10, 64, 48)  # slices, rows, columns
FIRST_INSTANCE = 101


def add_user(session: Session, username: str, role: str) -> m.User:
    user = m.User(username=username, display_name=username, role=role, password_hash="!")
    session.add(user)
    session.flush()
    return user


def add_study(session: Session, uid: str, shape: tuple[int, int, int] = SHAPE) -> m.Study:
    """A study with one series of ``shape``; instance numbers 101, 102, ... along a0."""
    study = m.Study(study_uid=uid, dataset="dicom")
    session.add(study)
    session.flush()
    session.add(m.Series(
        study_id=study.id, series_uid=f"{uid}.1", source_format="dicom", source_dir="/nowhere",
        files=[], shape=list(shape), affine=[[0, 0, 0.7, 0], [0, 0.7, 0, 0], [2.0, 0, 0, 0],
                                              [0, 0, 0, 1]],
        instance_numbers=list(range(FIRST_INSTANCE, FIRST_INSTANCE + shape[0])), fingerprint="-",
    ))
    session.flush()
    return study


def setup_people(sessions: sessionmaker[Session], n_readers: int = 3) -> dict[str, int]:
    """admin, adjudicator, viewer and reader1..readerN; returns user name -> id."""
    with unit_of_work(sessions) as s:
        users = [add_user(s, "admin", "admin"), add_user(s, "adjudicator", "adjudicator"),
                 add_user(s, "viewer", "viewer")]
        users += [add_user(s, f"reader{i}", "annotator") for i in range(1, n_readers + 1)]
        return {u.username: u.id for u in users}


def user(session: Session, user_id: int) -> m.User:
    found = session.get(m.User, user_id)
    assert found is not None
    return found
