"""Two `spine import` processes racing on the same readers' CSV, and on the same study folder, on
SQLite and PostgreSQL: both exit cleanly and exactly one copy is stored (unique keys with
``INSERT … ON CONFLICT``, db.import_keys / migration 0006).

Each child loads the CLI, says it is ready, and waits for a shared "go" file, so both imports
start at the same moment.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (48, 64, 64)
N_ROWS = 2000

_CHILD = """
import sys, time
from pathlib import Path
from spine_cli.main import main
work = Path(sys.argv[1])
(work / f"ready-{sys.argv[2]}").touch()
while not (work / "go").exists():
    time.sleep(0.005)
sys.exit(main(["import", sys.argv[3], "--no-progress"]))
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small synthetic studies in the RSNA layout (with the readers' files)."""
    root = tmp_path_factory.mktemp("race") / "demo"
    write_rsna_dataset(root, n_studies=2, seed=11, shape=SHAPE, workers=1)
    return root


def _race(db_url: str, work: Path, target: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run two `spine import TARGET` at once; their results."""
    env = {**os.environ, "SPINE_DB_URL": db_url, "SPINE_DATA_DIR": str(work / "var"),
           "SPINE_WORKERS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(work), str(n), str(target)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for n in (1, 2)]
    deadline = time.monotonic() + 120
    while not all((work / f"ready-{n}").exists() for n in (1, 2)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    (work / "go").touch()
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _count(session: Session, model: type[m.Base], *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def _readers_csv(path: Path, study_uids: list[str], first_instance: dict[str, int]) -> None:
    """N_ROWS distinct readers' boxes over the studies (reader1..3, inside the 64×64 image)."""
    rng = random.Random(5)
    seen: set[tuple[object, ...]] = set()
    rows = []
    while len(rows) < N_ROWS:
        uid = rng.choice(study_uids)
        row = (uid, first_instance[uid] + rng.randrange(SHAPE[0]), rng.randrange(40),
               rng.randrange(40), rng.randrange(1, 20), rng.randrange(1, 20),
               f"reader{rng.randrange(1, 4)}")
        if row not in seen:
            seen.add(row)
            rows.append(row)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader",
                         "level", "note"])
        writer.writerows([*r, "", ""] for r in rows)


def _clean(runs: list[subprocess.CompletedProcess[str]]) -> None:
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr


def _rows(path: Path) -> int:
    with path.open(newline="") as fh:
        return len(list(csv.DictReader(fh)))


def test_two_processes_importing_one_study_folder_leave_one_copy(
    dataset: Path, migrated_db_url: str, db_sessions: sessionmaker[Session], tmp_path: Path,
) -> None:
    with unit_of_work(db_sessions) as s:
        ensure_demo_users(s)
    _clean(_race(migrated_db_url, _mkdir(tmp_path / "work"), dataset))
    with unit_of_work(db_sessions, readonly=True) as s:
        assert _count(s, m.Study) == 2 and _count(s, m.Series) == 2
        assert _count(s, m.Mask, m.Mask.source == "dataset") == 2
        assert _count(s, m.Report) == 2
        assert _count(s, m.AuditEntry, m.AuditEntry.action == "study.import") == 2
        live = m.Box.deleted_at.is_(None)
        assert _count(s, m.Box, m.Box.source == "dataset", live) == _rows(dataset / "train_bounding_boxes.csv")
        assert _count(s, m.Box, m.Box.source == "imported", live) == _rows(dataset / "readers_boxes.csv")
        assert _count(s, m.LevelLabel) == _rows(dataset / "readers_levels.csv")


def test_two_processes_importing_one_readers_csv_leave_one_copy(
    dataset: Path, migrated_db_url: str, db_sessions: sessionmaker[Session], tmp_path: Path,
) -> None:
    with unit_of_work(db_sessions) as s:
        ensure_demo_users(s)
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    source = tmp_path / "studies"
    shutil.copytree(dataset, source, ignore=shutil.ignore_patterns("readers_*.csv"))
    assert import_path(source, ws, actor="test", progress=False).ok
    with unit_of_work(db_sessions, readonly=True) as s:
        first = {st.study_uid: min(int(n) for n in se.instance_numbers) for st, se in s.execute(
            select(m.Study, m.Series).join(m.Series, m.Series.study_id == m.Study.id))}
        n_audit = _count(s, m.AuditEntry, m.AuditEntry.action == "box.import")
    path = tmp_path / "readers_boxes_race.csv"
    _readers_csv(path, sorted(first), first)
    with unit_of_work(db_sessions) as s:  # reader1..3 read the first study already
        study = s.scalars(select(m.Study).where(m.Study.study_uid == sorted(first)[0])).one()
        for reader in s.scalars(select(m.User).where(m.User.username.like("reader%"))):
            s.add(m.Assignment(study_id=study.id, reader_id=reader.id, assigned_by="test"))

    runs = _race(migrated_db_url, _mkdir(tmp_path / "work"), path)
    _clean(runs)
    imported = [int(r.stdout.split(" CSV rows imported")[0].rsplit(" ", 1)[1]) for r in runs]
    assert sum(imported) == N_ROWS, [r.stdout for r in runs]
    with unit_of_work(db_sessions, readonly=True) as s:
        assert _count(s, m.Box, m.Box.source == "imported", m.Box.deleted_at.is_(None)) == N_ROWS
        assert _count(s, m.AuditEntry, m.AuditEntry.action == "box.import") == n_audit + N_ROWS
        assert _count(s, m.Assignment) == 3 * 2  # reader1..3 on both studies, once each


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
