"""No export writes outside its output folder, whatever the database holds.

Import checks UIDs, but a database is not proof (an older version, a hand edit, another tool): here
a real imported study gets hostile identifiers written straight into its rows — StudyInstanceUID
``../../../../PWNED``, SeriesInstanceUID ``../../PWNEDS``, patient id ``..``, a description
``../../x`` — and a reader named ``../x`` draws a box and makes a call. Every export kind of
``spine export`` then runs through the CLI on SQLite and PostgreSQL: each either writes its files
inside ``OUT`` (names sanitised, or the identifier kept as CSV text) or refuses with one line naming
the identifier; no file appears anywhere outside ``OUT``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db import annotations as ann
from db import box_events
from db import models as m
from db.importer import import_path
from db.migrate import upgrade
from db.session import unit_of_work
from db.workspace import Workspace
from spine_cli.main import main
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.annotation_helpers import add_user
from tests.db_fixtures import BACKEND_PARAMS, fresh_database

HOSTILE_STUDY = "../../../../PWNED"
SHAPE = (48, 64, 64)


def _files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Workspace, Path]]:
    """(workspace, sandbox): one RSNA study with its mask, hostile identifiers in its rows."""
    sandbox = tmp_path_factory.mktemp(f"paths-{request.param}")
    data = sandbox / "a" / "b" / "c" / "d" / "data"  # deep enough for ../../../../ to stay here
    write_rsna_dataset(data, n_studies=2, seed=5, shape=SHAPE, workers=1, n_readers=0)
    with fresh_database(request.param, sandbox) as url:
        upgrade(url)
        ws = Workspace(Settings(data_dir=data.parent / "var", db_url=url, workers=1))
        report = import_path(data, ws, actor="test", progress=False)
        assert report.ok, report.problems
        with unit_of_work(ws.sessions) as s:
            study = s.scalars(select(m.Study).where(m.Study.has_mask.is_(True))
                              .order_by(m.Study.id)).first()
            assert study is not None, "the demo dataset has no study with a mask"
            admin = add_user(s, "admin", "admin")
            reader = add_user(s, "../x", "annotator")
            ann.assign(s, admin, study.id, [reader.id])
            study_id, reader_id = study.id, reader.id
        with unit_of_work(ws.sessions) as s:
            reader = s.get(m.User, reader_id)
            assert reader is not None
            box_events.save_box(s, reader, study_id, ann.BoxInput(20, 10.0, 10.0, 8.0, 6.0,
                                                                  level="C5", note="=1+1"))
        with unit_of_work(ws.sessions) as s:
            s.execute(update(m.Study).where(m.Study.id == study_id).values(
                study_uid=HOSTILE_STUDY, patient_id="..", description="../../x"))
            s.execute(update(m.Series).where(m.Series.study_id == study_id).values(
                series_uid="../../PWNEDS"))
        yield ws, data.parent
        ws.sessions.kw["bind"].dispose()


def _export(ws: Workspace, argv: list[str], capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, str, str]:
    code = main(["export", *argv, "--db", ws.settings.database_url,
                 "--data-dir", str(ws.settings.data_dir), "--workers", "1"])
    got = capsys.readouterr()
    return code, got.out, got.err


KINDS = [
    # kind, arguments after the kind (OUT last), whether it must refuse
    ("rsna", [], False),
    ("readers", [], False),
    ("decisions", [], False),
    ("coco", [], True),
    ("verse", [], False),
    ("ctspine1k", [], False),
    ("nifti", [HOSTILE_STUDY], True),
    ("seg", [HOSTILE_STUDY], True),
    ("sr", [HOSTILE_STUDY], True),
]


@pytest.mark.parametrize(("kind", "extra", "refuses"), KINDS, ids=[k for k, _, _ in KINDS])
def test_export_stays_inside_its_folder(hostile: tuple[Workspace, Path], kind: str,
                                        extra: list[str], refuses: bool,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ws, sandbox = hostile
    out = sandbox / f"out-{kind}" / "x" / "y"
    before = _files_under(sandbox.parent)
    code, stdout, stderr = _export(ws, [kind, *extra, str(out)], capsys)
    outside = {p for p in _files_under(sandbox.parent) - before if out not in p.parents}
    outside = {p for p in outside if ws.settings.data_dir not in p.parents}  # the volume cache
    assert not outside, f"export {kind} wrote outside OUT: {sorted(outside)}"
    assert not list(sandbox.parent.rglob("PWNED*")), "a file named after the hostile UID exists"
    assert "Traceback" not in stderr and "internal error" not in stderr
    if refuses:
        assert code == 2, (stdout, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert HOSTILE_STUDY in stderr and "cannot name a file" in stderr, stderr
    else:
        assert code == 0, stderr
        written = [Path(line) for line in stdout.splitlines() if line.strip()]
        assert written and all(out.resolve() in p.resolve().parents for p in written)
        if kind in ("rsna", "readers", "decisions"):
            text = "".join(p.read_text() for p in written)
            if kind == "readers":
                assert HOSTILE_STUDY in text and "../x" in text and "'=1+1" in text


def test_output_folder_that_is_a_file_is_one_line(hostile: tuple[Workspace, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ws, sandbox = hostile
    blocker = sandbox / "a-file"
    blocker.write_text("not a folder")
    code, _, stderr = _export(ws, ["rsna", str(blocker)], capsys)
    assert code == 2 and "Errno" not in stderr and "is a file, not a folder" in stderr, stderr
    code, _, stderr = _export(ws, ["readers", str(blocker / "below")], capsys)
    assert code == 2 and "Errno" not in stderr and "is a file, not a folder" in stderr, stderr


def test_symlink_in_the_output_folder_is_not_followed(hostile: tuple[Workspace, Path],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ws, sandbox = hostile
    out = sandbox / "out-link"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "train.csv").symlink_to(elsewhere / "train.csv")
    code, _, stderr = _export(ws, ["rsna", str(out)], capsys)
    assert code == 2 and "outside the output folder" in stderr, stderr
    assert not list(elsewhere.iterdir())
