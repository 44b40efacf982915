"""Vertebra labels on a radiograph through the pages (AppTest, a real imported DX film): the
reader's table below the viewer saves a label, a grade and the reference mark; a second reader
labelled one level lower, both submitted, and the Adjudication page shows the one labelling
dispute in words and takes the committee's decision."""

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
from db.dispute_list import dispute_rows
from db.exporter import export_decisions
from db.importer import import_path
from db.session import unit_of_work
from tests.app_helpers import app, demo_workspace, pages_on, signed_in
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

BOXES = [(40.0, 30.0 + 30 * i, 40.0, 25.0) for i in range(4)]


def _user(session: object, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()  # type: ignore[attr-defined]


def test_a_reader_labels_film_boxes_and_the_committee_decides_the_shift(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    with unit_of_work(ws.sessions) as s:
        ann.assign(s, _user(s, "admin"), 1, [_user(s, "reader1").id, _user(s, "reader2").id])
        for name, dy in (("reader1", 0.0), ("reader2", 2.0)):
            for x, y, w, h in BOXES:
                be.create_box(s, _user(s, name), 1, ann.BoxInput(0, x, y + dy, w, h))
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        assert any("Vertebrae on this film" in str(md.value) for md in at.markdown)
        # the film's line above the viewer, and its view, which the reader may correct
        assert any(str(c.value).startswith("DX radiograph · view lateral · ") for c in at.caption)
        at = at.selectbox(key="an_film_view_1").set_value("PA").run()
        assert not at.exception, at.exception
        assert any("· view PA (set by reader1; header: lateral) ·" in str(c.value)
                   for c in at.caption)
        with unit_of_work(ws.sessions, readonly=True) as s:
            mine = fr.film_boxes(s, _user(s, "reader1"), 1)
        first = mine[0]
        at.selectbox(key=f"film_{first.id}_{first.version}_label").select("C2").run()
        assert not at.exception, at.exception
        at.selectbox(key=f"film_{first.id}_{first.version + 1}_grade").select(1).run()
        at.checkbox(key=f"film_{first.id}_{first.version + 2}_ref").check().run()
        with unit_of_work(ws.sessions, readonly=True) as s:
            saved = fr.film_boxes(s, _user(s, "reader1"), 1)[0]
        assert (saved.level, saved.grade, saved.is_reference) == ("C2", 1, True)
        # the rest through the db layer, then reader2 one level lower
        with unit_of_work(ws.sessions) as s:
            for name, labels in (("reader1", ["C3", "C4", "C5"]), ("reader2", ["C3", "C4", "C5", "C6"])):
                me = _user(s, name)
                boxes = fr.film_boxes(s, me, 1)
                todo = boxes[1:] if name == "reader1" else boxes
                for box, label in zip(todo, labels, strict=True):
                    fr.save_film_label(s, me, box.id, box.version, label, None, False)
                ann.submit(s, me, 1, confirm=True)
            disputes.refresh_disputes(s, 1, ws.settings, actor="test")
            dispute = s.scalars(select(m.Dispute).where(m.Dispute.kind == "labelling")).one()
            dispute_id = dispute.id
        committee = app(signed_in(ws, "adjudicator1"), script="pages/adjudicate.py",
                        adjudicate_dispute=dispute_id).run()
        assert not committee.exception, committee.exception
        texts = [str(md.value) for md in committee.markdown]
        assert any("reader2's labels are one level below reader1's on 4 vertebrae" in t
                   for t in texts), texts
        assert any(str(h.value).startswith("Whole film · Vertebra labels shifted")
                   for h in committee.subheader)
        committee.radio(key="labelling_choice").set_value("reader1")
        committee.text_area(key="labelling_reason").input("counted from C2's dens")
        committee.button[-1].click()  # the form's submit button
        committee.run()
        assert not committee.exception, committee.exception
        with unit_of_work(ws.sessions, readonly=True) as s:
            decided = s.get(m.Dispute, dispute_id)
            assert decided is not None and decided.status == "decided"
            listed = dispute_rows(s, status="all")
            assert [(r["level"], r["kind"]) for r in listed] == [("film", "labelling")]
        # the decided dispute, the dashboard and the decisions export take it too
        again = app(signed_in(ws, "adjudicator1"), script="pages/adjudicate.py",
                    adjudicate_dispute=dispute_id, adjudicate_status="all").run()
        assert not again.exception, again.exception
        assert any("reader1's labelling is right: counted from C2's dens" in str(md.value)
                   for md in again.markdown)
        board = app(signed_in(ws, "adjudicator1"), script="pages/dashboard.py").run()
        assert not board.exception, board.exception
        agreement = app(signed_in(ws, "adjudicator1"), script="pages/agreement.py").run()
        assert not agreement.exception, agreement.exception
        (films,) = [df.value for df in agreement.dataframe if "same label" in df.value.columns]
        assert films.iloc[0]["same label"] == "0 %"
        assert films.iloc[0]["matched vertebrae"] == 4
        assert "one level below" in films.iloc[0]["labelling"]
        (decisions,) = export_decisions(ws, tmp_path / "decisions")
        assert "labelling" in decisions.read_text()
