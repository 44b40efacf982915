"""A film's view set by a person, on SQLite and PostgreSQL: readers on their assigned films,
adjudicators and admins may set lateral, AP or PA; back to the header's removes it; every change
is audited; a viewer, an unassigned reader, a CT study and an unknown view are refused in one
line with nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import film_views as fv
from db import models as m
from db.session import unit_of_work
from spine_core.errors import InputError, NotFound, PermissionDenied
from tests.annotation_helpers import add_study, setup_people, user


def _studies(db_sessions: sessionmaker[Session]) -> tuple[dict[str, int], int, int]:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        film = add_study(s, "1.2.15.1", (1, 600, 400))
        ct = add_study(s, "1.2.15.2", (20, 64, 64))
        ann.assign(s, user(s, ids["admin"]), film.id, [ids["reader1"]])
        ann.assign(s, user(s, ids["admin"]), ct.id, [ids["reader1"]])
        return ids, film.id, ct.id


def _set(db_sessions: sessionmaker[Session], who: int, study_id: int, view: str | None) -> bool:
    with unit_of_work(db_sessions) as s:
        return fv.set_film_view(s, user(s, who), study_id, view)


def _view(db_sessions: sessionmaker[Session], study_id: int) -> fv.SetView | None:
    with unit_of_work(db_sessions, readonly=True) as s:
        return fv.film_view(s, study_id)


def _audit(db_sessions: sessionmaker[Session]) -> list[tuple[str, str, object, object]]:
    with unit_of_work(db_sessions, readonly=True) as s:
        rows = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "film.view")
                         .order_by(m.AuditEntry.id))
        return [(e.actor, e.entity_id, (e.before or {}).get("view"), (e.after or {}).get("view"))
                for e in rows]


def test_a_reader_sets_the_view_and_the_committee_corrects_it_on_record(
        db_sessions: sessionmaker[Session]) -> None:
    ids, film, _ = _studies(db_sessions)
    assert _view(db_sessions, film) is None
    assert _set(db_sessions, ids["reader1"], film, "lateral")
    got = _view(db_sessions, film)
    assert got is not None and (got.view, got.set_by) == ("lateral", "reader1")
    assert not _set(db_sessions, ids["reader1"], film, "lateral")  # no change, no entry
    assert _set(db_sessions, ids["adjudicator"], film, "AP")
    got = _view(db_sessions, film)
    assert got is not None and (got.view, got.set_by) == ("AP", "adjudicator")
    assert _set(db_sessions, ids["admin"], film, "")  # back to the header's
    assert _view(db_sessions, film) is None
    assert _audit(db_sessions) == [("reader1", str(film), "header", "lateral"),
                                   ("adjudicator", str(film), "lateral", "AP"),
                                   ("admin", str(film), "AP", "header")]
    with unit_of_work(db_sessions, readonly=True) as s:
        assert fv.may_set_film_view(s, user(s, ids["reader1"]), film)
        assert not fv.may_set_film_view(s, user(s, ids["reader2"]), film)
        assert not fv.may_set_film_view(s, user(s, ids["viewer"]), film)


@pytest.mark.parametrize(("who", "study", "view", "error", "words"), [
    ("viewer", "film", "AP", PermissionDenied, "set a radiograph's view"),
    ("reader2", "film", "AP", PermissionDenied, "not assigned to you"),
    ("reader1", "ct", "AP", InputError, "is not a radiograph"),
    ("reader1", "film", "oblique", InputError, "unknown view 'oblique'"),
    ("admin", "missing", "PA", NotFound, "no image series"),
])
def test_refusals_say_why_in_one_line_and_change_nothing(
        db_sessions: sessionmaker[Session], who: str, study: str, view: str,
        error: type[Exception], words: str) -> None:
    ids, film, ct = _studies(db_sessions)
    _set(db_sessions, ids["reader1"], film, "PA")
    target = {"film": film, "ct": ct, "missing": 10**6}[study]
    with pytest.raises(error, match=words) as caught:
        _set(db_sessions, ids[who], target, view)
    assert "\n" not in str(caught.value)
    got = _view(db_sessions, film)
    assert got is not None and got.view == "PA"
    assert len(_audit(db_sessions)) == 1


def test_the_models_see_the_view_a_reader_set(tmp_path: Path) -> None:
    """predict_study hands the model the readers' view: a lateral DX film set to PA is refused in
    one line with nothing stored; set back to the header's (lateral), it is predicted."""
    from db.importer import import_path
    from db.predictions import latest_prediction, predict_study
    from spine_core.config import Settings
    from spine_core.errors import OutOfFieldError
    from spine_core.inference.select import load_local_predictor
    from tests.app_helpers import demo_workspace
    from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

    ws = demo_workspace(tmp_path / "var")
    write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    admin = _id(ws.sessions, "admin")
    assert _set(ws.sessions, admin, 1, "PA")
    predictor = load_local_predictor(Settings(device="cpu"))
    with pytest.raises(OutOfFieldError, match="reads lateral films and this film is PA"):
        predict_study(ws, predictor, 1, actor="admin")
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert latest_prediction(s, 1) is None
    assert _set(ws.sessions, admin, 1, None)
    row = predict_study(ws, predictor, 1, actor="admin")
    assert row is not None and row.boxes


def _id(db_sessions: sessionmaker[Session], name: str) -> int:
    with unit_of_work(db_sessions, readonly=True) as s:
        return int(s.scalars(select(m.User.id).where(m.User.username == name)).one())
