"""`spine bootstrap` on an empty database: demo users, the read demo set, and studies to read."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from db import models as m
from db.annotations import reader_queue
from db.bootstrap import bootstrap
from db.users import get_user
from db.workspace import open_workspace
from spine_core.config import Settings


def test_bootstrap_leaves_each_demo_reader_studies_to_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", workers=1, demo_studies=1, demo_unread=2,
                        demo_shape="48x64x64")
    lines = bootstrap(settings, progress=False)
    assert any(line.startswith("demo studies to read: 2, assigned to reader1") for line in lines)

    ws = open_workspace(settings)
    with ws.sessions() as session:
        for name in ("reader1", "reader2", "reader3"):
            reader = get_user(session, name)
            assert reader is not None
            queue = reader_queue(session, reader)
            status = sorted(a.status for _, a in queue)
            assert status == ["assigned", "assigned", "submitted"], (name, status)
            unread = [s.id for s, a in queue if a.status == m.AssignmentStatus.assigned.value]
            boxes = session.scalar(select(func.count()).select_from(m.Box).where(
                m.Box.study_id.in_(unread), m.Box.reader_id == reader.id))
            assert boxes == 0  # no box of the reader's on them yet (the dataset's own may be)

    assert bootstrap(settings, progress=False) == []  # a second start changes nothing
