"""Annotate on a film (AppTest, a real imported DX film): no CT level-call panel, the vertebra
table instead; Submit checks the film's own things: refused while a box has no label or a label is
used twice, 'Submit anyway' when no reference vertebra is marked (audited), plain Submit once it
is."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select

from db import annotations as ann
from db import box_events as be
from db import film_reading as fr
from db import film_submit as fs
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from spine_core.errors import InputError
from tests.app_helpers import app, demo_workspace, pages_on, signed_in
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

BOXES = [(40.0, 30.0 + 30 * i, 40.0, 25.0) for i in range(2)]


def _user(session: object, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()  # type: ignore[attr-defined]


def _label(ws: object, reader: str, labels: list[str], reference: str | None = None) -> None:
    with unit_of_work(ws.sessions) as s:  # type: ignore[attr-defined]
        me = _user(s, reader)
        for box, label in zip(fr.film_boxes(s, me, 1), labels, strict=True):
            fr.save_film_label(s, me, box.id, box.version, label, None, label == reference)


def _texts(at: object) -> list[str]:
    return [str(e.value) for kind in ("markdown", "warning", "caption")
            for e in getattr(at, kind)]


def test_submit_on_a_film_checks_labels_and_reference(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    with unit_of_work(ws.sessions) as s:
        ann.assign(s, _user(s, "admin"), 1, [_user(s, "reader1").id, _user(s, "reader2").id])
        for name in ("reader1", "reader2"):
            for x, y, w, h in BOXES:
                be.create_box(s, _user(s, name), 1, ann.BoxInput(0, x, y, w, h))
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        texts = _texts(at)
        assert any("Vertebrae on this film" in t for t in texts)
        assert not any(t.startswith("**Levels") for t in texts), texts  # no CT fracture calls
        assert any("2 boxes have no vertebra label" in t for t in texts), texts
        assert at.button(key="film_submit_1").disabled
        with unit_of_work(ws.sessions) as s, pytest.raises(InputError, match="no vertebra label"):
            fs.submit_film(s, _user(s, "reader1"), 1, confirm=True)

        _label(ws, "reader1", ["C3", "C3"])
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert any("more than one box is labelled C3" in t for t in _texts(at))
        assert at.button(key="film_submit_1").disabled

        _label(ws, "reader1", ["C2", "C3"])
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert any("no reference vertebra (C2 or S1) is marked" in t for t in _texts(at))
        button = at.button(key="film_submit_1")
        assert button.label == "Submit anyway" and not button.disabled
        button.click().run()
        assert not at.exception, at.exception
        assert any("You submitted this study" in str(e.value) for e in at.success)

        _label(ws, "reader2", ["C2", "C3"], reference="C2")
        other = app(signed_in(ws, "reader2"), script="pages/annotate.py").run()
        assert not any("Before you submit" in t for t in _texts(other))
        button = other.button(key="film_submit_1")
        assert button.label == "Submit study" and not button.disabled
        button.click().run()
        assert not other.exception, other.exception
    with unit_of_work(ws.sessions, readonly=True) as s:
        done = s.scalars(select(m.Assignment.status).where(m.Assignment.study_id == 1)).all()
        assert set(done) == {"submitted"}
        audit = {e.actor: e.after for e in s.scalars(
            select(m.AuditEntry).where(m.AuditEntry.action == "submit"))}
        assert audit["reader1"] == {"confirmed": {"film": "no reference vertebra (C2 or S1) is "
                                                          "marked"}}
        assert audit["reader2"] is None
        assert s.scalars(select(m.LevelLabel)).all() == []
