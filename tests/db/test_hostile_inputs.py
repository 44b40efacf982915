"""The hostile corpus (tests/data/hostile/make_hostile.py) through the real ``spine`` command, on
SQLite and PostgreSQL.

Each case is imported (or exported) with ``spine_cli.main``; it must end with one line that names
the file (and row or slice) and says what is wrong, never a traceback, "internal error" or SQL
text, and the database must be unchanged except for the good study written beside the hostile
one. Both databases must give the same answer: the messages are collected per backend and
compared at the end.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from pydicom.encaps import encapsulate
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.migrate import upgrade
from db.session import make_engine, make_sessionmaker, unit_of_work
from spine_cli.main import main
from tests.annotation_helpers import add_user
from tests.db_fixtures import BACKEND_PARAMS, fresh_database, row_counts

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:The value length")

HOSTILE_DIR = Path(__file__).resolve().parents[1] / "data" / "hostile"
#: Text a message for bad input must never hold.
FORBIDDEN = ("Traceback", "internal error", "INSERT INTO", "SELECT ", "UPDATE ", "psycopg",
             "sqlite3.", "IntegrityError", "OperationalError", "[Errno")


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_hostile", HOSTILE_DIR / "make_hostile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_hostile"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


CORPUS = _corpus()
BASE = "base"  # the study the CSV cases refer to, imported before any case


def _base_uid() -> str:
    from spine_core.io.dicom_write import uid_from_seed

    return str(uid_from_seed("hostile-study", f"good-{BASE}"))


CASES = CORPUS.cases(_base_uid())


class Db:
    """One migrated database with the base study and reader1; messages seen per case."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.messages: dict[str, str] = {}

    def argv(self, *args: str) -> list[str]:
        return [*args, "--db", self.url, "--data-dir", str(self.root / "var"), "--workers", "1"]

    def counts(self) -> dict[str, int]:
        return row_counts(self.url)


_SEEN: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Db]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with fresh_database(request.param, root) as url:
        upgrade(url)
        db = Db(url, root)
        _SEEN[request.param] = db.messages  # filled by the cases, compared at the end
        base = root / BASE
        CORPUS._good(base)  # noqa: SLF001 - the corpus's own good series
        assert main(db.argv("import", str(base), "--no-progress")) == 0
        with unit_of_work(db.sessions) as s:
            add_user(s, "reader1", "annotator")
        yield db
        db.engine.dispose()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    got = capsys.readouterr()
    return code, got.out + got.err


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(database: Db, name: str, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    folder = tmp_path / name
    case.build(folder)
    before = database.counts()
    if case.argv:
        argv = [a.replace("{case}", str(folder)) for a in case.argv]
    else:
        argv = ["import", str(folder / case.target), "--no-progress"]
    code, output = _run(database.argv(*argv), capsys)
    after = database.counts()
    for text in FORBIDDEN:
        assert text not in output, f"{name}: {text!r} in the output:\n{output}"
    if case.accepted:
        assert code == 0, output
        _check_formula_cells(database, tmp_path, capsys)
        return
    if case.refused:
        assert code != 0, f"{name} was accepted:\n{output}"
    else:
        assert code == 0, output
    lines = [line for line in output.splitlines() if all(n in line for n in case.named)
             and (case.refused or line.startswith("warning: "))]
    assert lines, f"{name}: no line names {case.named}:\n{output}"
    database.messages[name] = _comparable(lines[0], tmp_path)
    if case.good_studies == 0:
        assert after == before, f"{name} changed the database"
    else:
        assert after["studies"] == before["studies"] + case.good_studies, output
        with database.sessions() as s:
            kept = s.scalars(select(m.Study.source_path)).all()
        assert not [p for p in kept if "/bad" in p or "sub-bad" in p], kept


def _comparable(line: str, tmp_path: Path) -> str:
    """The message without what differs between runs (the folder, the backend's UID seeds)."""
    return line.replace(str(tmp_path), "<tmp>")


def _check_formula_cells(database: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader's formula-like text is stored as written and neutralised in the export."""
    with database.sessions() as s:
        notes = set(s.scalars(select(m.Box.note).where(m.Box.source != "dataset")))
    assert {"=1+1", '\t=HYPERLINK("x")', "@SUM(A1)"} <= notes, notes
    out = tmp_path / "export"
    code, output = _run(database.argv("export", "readers", str(out)), capsys)
    assert code == 0, output
    text = (out / "readers_boxes.csv").read_text()
    assert "'=1+1" in text and "'@SUM(A1)" in text and "'\t=HYPERLINK" in text, text


def test_both_databases_answer_alike() -> None:
    """Runs after the cases of both backends (same module, later in order)."""
    if len(_SEEN) < 2 or any(len(seen) < len(CASES) - 1 for seen in _SEEN.values()):
        pytest.skip("needs every case on both databases in this run")
    assert _SEEN["sqlite"] == _SEEN["postgresql"]


def test_export_of_a_slice_that_aborts_the_decoder_is_one_line(tmp_path: Path) -> None:
    """A compressed file damaged after import (its fingerprint updated, as by a careless
    re-import tool): ``spine export nifti`` names the file instead of dying with exit 134."""
    data = tmp_path / "j2k"
    files = CORPUS._ct(data / "study", "export-crash")  # noqa: SLF001
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(pydicom.uid.JPEG2000Lossless, encoding_plugin="")
        ds.save_as(path)
    db_url = f"sqlite:///{tmp_path / 'spine.db'}"
    common = ["--db", db_url, "--data-dir", str(tmp_path / "var"), "--workers", "1"]
    assert main(["import", str(data), "--no-progress", *common]) == 0
    ds = pydicom.dcmread(files[1])
    ds.PixelData = encapsulate([(HOSTILE_DIR / "j2k_abort_frame.j2k").read_bytes()])
    ds.save_as(files[1])
    from spine_core.io.cache import fingerprint_files

    engine = make_engine(db_url)
    with unit_of_work(make_sessionmaker(engine)) as s:
        series = s.scalars(select(m.Series)).one()
        series.fingerprint = fingerprint_files(
            [Path(series.source_dir) / f for f in series.files])
        uid = s.scalars(select(m.Study.study_uid)).one()
    engine.dispose()
    done = subprocess.run([sys.executable, "-m", "spine_cli.main", "export", "nifti", uid,
                           str(tmp_path / "out"), *common], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "2.dcm" in lines[0] and "crashed the decoder" in lines[0], lines
