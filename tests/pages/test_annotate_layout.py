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
