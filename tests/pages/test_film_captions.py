"""Box captions in the viewer name a film's vertebrae as a radiologist reads them: "S1" for the
sacrum's top vertebra on a film, the sacrum "S" on a CT."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db import annotations as ann
from db import box_events as be
from db import film_reading as fr
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from pages.parts.viewer_parts import reader_boxes
from tests.annotation_helpers import add_study
from tests.app_helpers import demo_workspace, pages_on, signed_in
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx


def _user(session: object, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()  # type: ignore[attr-defined]


def test_film_box_captions_say_s1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    with unit_of_work(ws.sessions) as s:
        ct = add_study(s, "1.2.14.99").id
        me = _user(s, "reader1")
        ann.assign(s, _user(s, "admin"), 1, [me.id])
        ann.assign(s, _user(s, "admin"), ct, [me.id])
        be.create_box(s, me, 1, ann.BoxInput(0, 40, 30, 40, 25))
        be.create_box(s, me, ct, ann.BoxInput(2, 5, 5, 10, 10, level="S"))
    with unit_of_work(ws.sessions) as s:
        me = _user(s, "reader1")
        (box,) = fr.film_boxes(s, me, 1)
        fr.save_film_label(s, me, box.id, box.version, "S1", None, True)
    with pages_on(ws, monkeypatch):
        reader = signed_in(ws, "reader1")
        assert [b.label for b in reader_boxes(1, reader)] == ["you S1"]
        assert [b.label for b in reader_boxes(ct, reader)] == ["you S"]
