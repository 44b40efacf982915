"""A film's grade dispute on the Adjudication page (AppTest, a real imported DX film): two
readers graded one vertebra differently; the committee sees the film with every reader's boxes,
the readers' grades in words, and casts a grade vote."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select

from db import annotations as ann
from db import box_events as be
from db import disputes
from db import film_reading as fr
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from tests.app_helpers import app, demo_workspace, pages_on, signed_in
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

BOXES = [(40.0, 30.0 + 30 * i, 40.0, 25.0) for i in range(3)]


def _user(session: object, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()  # type: ignore[attr-defined]


def test_a_film_grade_dispute_is_shown_and_voted(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    with unit_of_work(ws.sessions) as s:
        ann.assign(s, _user(s, "admin"), 1, [_user(s, "reader1").id, _user(s, "reader2").id])
        for name, grade in (("reader1", 3), ("reader2", 1)):
            me = _user(s, name)
            for x, y, w, h in BOXES:
                be.create_box(s, me, 1, ann.BoxInput(0, x, y, w, h))
            for box, label in zip(fr.film_boxes(s, me, 1), ["C2", "C3", "C4"], strict=True):
                fr.save_film_label(s, me, box.id, box.version, label,
                                   grade if label == "C3" else 0, label == "C2")
            ann.submit(s, me, 1)
        disputes.refresh_disputes(s, 1, ws.settings, actor="test")
        dispute = s.scalars(select(m.Dispute)).one()
        assert (dispute.level, dispute.kind) == ("C3", "grades_disagree")
        dispute_id = dispute.id
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "adjudicator1"), script="pages/adjudicate.py",
                 adjudicate_dispute=dispute_id).run()
        assert not at.exception, at.exception
        assert str(at.subheader[0].value).startswith("C3 · ")
        texts = [str(md.value) for md in at.markdown]
        assert any("Readers' grades" in t for t in texts), texts
        assert not at.error, [e.value for e in at.error]
        assert not at.info, [i.value for i in at.info]  # the film, not the CT's level slices
        at.radio(key="grade_vote_grade").set_value(3)
        at.radio(key="grade_vote_morphology").set_value("wedge")
        at.text_area(key="grade_vote_rationale").input("anterior height loss over 40 %")
        next(b for b in at.button if b.label == "Cast grade vote").click()
        at.run()
        assert not at.exception, at.exception
    with unit_of_work(ws.sessions, readonly=True) as s:
        (vote,) = s.scalars(select(m.Vote)).all()
        assert vote.choice == "grade_3_wedge"
