"""The Assignments page shows readers' queues in words: "Assigned, not opened yet", never the
stored code ("assigned", "in_progress")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db import annotations as ann
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.phantom.demo import write_demo_dataset
from tests.app_helpers import app, demo_workspace, pages_on, signed_in


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    workspace = demo_workspace(tmp_path / "var")
    write_demo_dataset(tmp_path / "verse", region="thoracolumbar", layout="verse", n_studies=1,
                       seed=5, shape=(96, 48, 48), workers=1)
    report = import_path(tmp_path / "verse", workspace.settings, actor="test", progress=False)
    assert report.studies_added == 1 and not report.problems
    with unit_of_work(workspace.sessions) as s:
        study = s.scalars(select(m.Study)).one()
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        readers = s.scalars(select(m.User).where(m.User.username.in_(["reader1", "reader2"]))).all()
        ann.assign(s, admin, study.id, [r.id for r in readers])
    with pages_on(workspace, monkeypatch) as w:
        yield w


def test_the_readers_queues_are_in_words(ws: Workspace) -> None:
    at = app(signed_in(ws, "admin"), script="pages/assign.py").run()
    assert not at.exception, at.exception
    load = next(d.value for d in at.dataframe if "total" in d.value.columns)
    assert list(load.columns) == ["Assigned, not opened yet", "total"]
    assert dict(load["total"]) == {"reader1": 1, "reader2": 1}
    queue = next(d.value for d in at.dataframe if "study status" in d.value.columns)
    assert set(queue["status"]) == {"Assigned, not opened yet"}
    assert set(queue["study status"]) <= {"New", "Being read"}
