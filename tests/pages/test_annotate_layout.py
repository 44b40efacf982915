"""Annotate opens a CT study in one large axial plane (AppTest): the plane readers draw boxes on
gets the viewer's whole width; three linked planes are one key away (T)."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select

from db import models as m
from db.annotations import assign
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from tests.app_helpers import app, demo_workspace, pages_on, signed_in, workstation_view
from tests.prediction_helpers import write_tiny_dataset


def test_annotate_opens_a_ct_study_in_one_large_axial_plane(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    assert import_path(write_tiny_dataset(tmp_path / "ct", n_studies=1), ws, progress=False).ok
    with unit_of_work(ws.sessions) as session:
        admin = session.scalars(select(m.User).where(m.User.username == "admin")).one()
        reader = session.scalars(select(m.User).where(m.User.username == "reader1")).one()
        study = session.scalars(select(m.Study)).one()
        assign(session, admin, study.id, [reader.id])
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        view = workstation_view(at)
        assert (view["layout"], view["plane"]) == ("single", "axial")


def _new_reader_on_a_tiny_study(tmp_path: Path, scheme: str = "fracture"
                                ) -> tuple[Workspace, int, int]:
    """A workspace with one imported tiny study assigned to a new reader, reader9 (who has none
    of the dataset's readings); returns it, the study id and the reader's id."""
    from tests.annotation_helpers import add_user

    ws = demo_workspace(tmp_path / "var")
    assert import_path(write_tiny_dataset(tmp_path / "ct", n_studies=1), ws, progress=False).ok
    with unit_of_work(ws.sessions) as session:
        admin = session.scalars(select(m.User).where(m.User.username == "admin")).one()
        reader = add_user(session, "reader9", "annotator")
        study = session.scalars(select(m.Study)).one()
        study.call_scheme = scheme
        assign(session, admin, study.id, [reader.id])
        return ws, study.id, reader.id


def test_a_level_call_that_arrives_without_its_callback_is_still_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a reader's click on a level call can reach the server in a run whose on_change
    callback never runs (the run that drew the control was cut short): the control then shows
    the choice, and the page saves it on that run instead of losing it. Here the choice arrives
    through session state, which runs no callback."""
    from db import annotations as ann

    ws, study_id, reader_id = _new_reader_on_a_tiny_study(tmp_path)

    def stored() -> dict[str, str]:
        with unit_of_work(ws.sessions, readonly=True) as s:
            me = s.get(m.User, reader_id)
            assert me is not None
            return {lvl: c.call for lvl, c in ann.own_level_calls(s, me, study_id).items()}

    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader9"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        controls = [c for c in at.button_group
                    if str(c.key).startswith(f"annotate_call_{study_id}_")]
        assert controls, "no level-call control on the page"
        key = str(controls[0].key)
        level = key.split("_")[3]
        assert stored().get(level) != "fractured"
        at.session_state[key] = "fractured"  # the value, without the click's callback
        at = at.run()
        assert not at.exception, at.exception
        assert stored().get(level) == "fractured", ([e.value for e in at.error],
                                                    [w.value for w in at.warning], key)
        assert [t.value for t in at.toast] == [f"{level}: Fractured"]


def test_a_genant_grade_that_arrives_without_its_callback_is_still_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a Genant grade and its morphology (VerSe-style reading)."""
    from db import grades as gr

    ws, study_id, reader_id = _new_reader_on_a_tiny_study(tmp_path, "genant")

    def stored() -> dict[str, tuple[int, str | None]]:
        with unit_of_work(ws.sessions, readonly=True) as s:
            me = s.get(m.User, reader_id)
            assert me is not None
            return {lvl: (g.grade, g.morphology) for lvl, g in gr.grades_of(s, me, study_id).items()}

    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader9"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        grades = [c for c in at.button_group
                  if str(c.key).startswith(f"annotate_grade_{study_id}_")]
        assert grades, "no grade control on the page"
        key = str(grades[0].key)
        level = key.split("_")[3]
        assert level not in stored()
        at.session_state[key] = 2  # the value, without the click's callback
        at = at.run()
        assert not at.exception, at.exception
        assert stored()[level] == (2, None)
        assert [t.value for t in at.toast] == [f"{level}: grade 2"]
        morph = next(str(c.key) for c in at.button_group
                     if str(c.key).startswith(f"annotate_morph_{study_id}_{level}_"))
        at.session_state[morph] = "wedge"
        at = at.run()
        assert not at.exception, at.exception
        assert stored()[level] == (2, "wedge")
