"""``spine export rsna`` and undecided studies, on SQLite and PostgreSQL.

A study with an open reader dispute on C1–C7 has a level nobody decided yet: by default it is left
out of train.csv and train_bounding_boxes.csv (exporting it would turn "undecided" into a label),
and the command says so on stderr, naming it; ``--include-undecided`` writes it with its
provisional label (the report's). A study whose dispute the committee decided carries the decision.

Two phantom studies (real DICOM) are imported with readers' CSVs that open one dispute each:
``POSITIVE`` (the report calls C2 fractured; reader2 says intact) stays open, ``NEGATIVE`` (the
report calls every level intact; reader1 says C7 is fractured and drew a box) is decided
"fractured" by two adjudicators.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db import disputes as store
from db import models as m
from db.exporter import RsnaExport, UndecidedStudy, export_rsna
from db.importer import import_path
from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.labels import CERVICAL
from spine_core.phantom.rsna_layout import write_rsna_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (48, 96, 96)
WHY = "Cortical step at the anterior-inferior endplate on two axial slices."
NEGATIVE_BOX = (24, 30.0, 30.0, 8.0, 6.0)  # slice_number, x, y, width, height (reader1, C7)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantom studies (one with a fractured C2, one without fractures), no readers yet."""
    root = tmp_path_factory.mktemp("undecided") / "data"
    write_rsna_dataset(root, n_studies=2, seed=7, shape=SHAPE, workers=1, n_readers=0)
    reports = {r["StudyInstanceUID"]: r for r in rows(root / "train.csv")}
    assert sorted(r["patient_overall"] for r in reports.values()) == ["0", "1"]
    assert [r["C2"] for r in reports.values() if r["patient_overall"] == "1"] == ["1"]
    return root


def _uids(dataset: Path) -> tuple[str, str]:
    """(POSITIVE, NEGATIVE) study UIDs."""
    reports = rows(dataset / "train.csv")
    positive = next(r for r in reports if r["patient_overall"] == "1")["StudyInstanceUID"]
    negative = next(r for r in reports if r["patient_overall"] == "0")["StudyInstanceUID"]
    return positive, negative


@pytest.fixture
def scene(dataset: Path, migrated_db_url: str, tmp_path: Path) -> tuple[Workspace, str, str]:
    """Both studies imported with readers who disagree on one level each; NEGATIVE's dispute is
    decided 'fractured' by adjudicator1 and adjudicator2, POSITIVE's stays open."""
    positive, negative = _uids(dataset)
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    reports = {r["StudyInstanceUID"]: r for r in rows(root / "train.csv")}
    disputed = {positive: "C2", negative: "C7"}
    with (root / "readers_levels.csv").open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["StudyInstanceUID", "reader", "level", "call"])
        for uid, level in disputed.items():
            for reader in ("reader1", "reader2"):
                for lvl in CERVICAL:
                    fractured = reports[uid][lvl] == "1"
                    if lvl == level:
                        fractured = reader == "reader1"
                    out.writerow([uid, reader, lvl, "fractured" if fractured else "not_fractured"])
    with (root / "readers_boxes.csv").open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader",
                      "level"])
        out.writerow([negative, *NEGATIVE_BOX, "reader1", "C7"])

    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    with unit_of_work(ws.sessions) as s:
        ensure_demo_users(s)
    result = import_path(root, ws, actor="test", progress=False)
    assert result.ok, result.problems
    with unit_of_work(ws.sessions, readonly=True) as s:
        found = s.execute(
            select(m.Study.study_uid, m.Dispute.level, m.Dispute.status, m.Dispute.id)
            .join(m.Study, m.Study.id == m.Dispute.study_id).order_by(m.Study.study_uid)).all()
    assert sorted((u, lvl, st) for u, lvl, st, _ in found) == sorted(
        [(positive, "C2", "open"), (negative, "C7", "open")])
    negative_dispute = next(d for u, _, _, d in found if u == negative)
    for voter in ("adjudicator1", "adjudicator2"):
        with unit_of_work(ws.sessions) as s:
            me = s.scalars(select(m.User).where(m.User.username == voter)).one()
            store.cast_vote(s, me, negative_dispute, "fractured", WHY, settings=ws.settings)
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert s.get(m.Dispute, negative_dispute).status == "decided"  # type: ignore[union-attr]
    return ws, positive, negative


def test_undecided_study_is_left_out_by_default_and_exported_with_the_flag(
        scene: tuple[Workspace, str, str], dataset: Path, tmp_path: Path) -> None:
    ws, positive, negative = scene
    report_row = next(r for r in rows(dataset / "train.csv") if r["StudyInstanceUID"] == positive)
    dataset_boxes = [r for r in rows(dataset / "train_bounding_boxes.csv")
                     if r["StudyInstanceUID"] == positive]
    assert dataset_boxes, "the positive phantom study should carry reference boxes"
    decided_row = {"StudyInstanceUID": negative, "patient_overall": "1",
                   **{lvl: "1" if lvl == "C7" else "0" for lvl in CERVICAL}}
    number, x, y, w, h = NEGATIVE_BOX
    decided_box = {"StudyInstanceUID": negative, "x": repr(x), "y": repr(y), "width": repr(w),
                   "height": repr(h), "slice_number": str(number)}

    # default: the undecided study is in neither file; the decided one carries the decision
    result = export_rsna(ws, tmp_path / "default")
    assert isinstance(result, RsnaExport)
    assert result.undecided == (UndecidedStudy(positive, ("C2",)),)
    assert rows(tmp_path / "default" / "train.csv") == [decided_row]
    assert rows(tmp_path / "default" / "train_bounding_boxes.csv") == [decided_box]
    note = result.note()
    assert note.startswith("left out 1 study with undecided levels") and positive in note
    assert "(C2)" in note and "--include-undecided" in note

    # with the flag: the undecided study comes back with its provisional label, the report's
    # (C2 fractured, not the 0 a pending level used to become), and its boxes
    result = export_rsna(ws, tmp_path / "all", include_undecided=True)
    assert result.undecided == (UndecidedStudy(positive, ("C2",)),)
    labels = {r["StudyInstanceUID"]: r for r in rows(tmp_path / "all" / "train.csv")}
    assert labels == {positive: report_row, negative: decided_row}
    assert labels[positive]["C2"] == "1"
    boxes = rows(tmp_path / "all" / "train_bounding_boxes.csv")
    assert [b for b in boxes if b["StudyInstanceUID"] == negative] == [decided_box]
    got = [b for b in boxes if b["StudyInstanceUID"] == positive]
    key = lambda b: (int(b["slice_number"]), float(b["x"]), float(b["y"]))  # noqa: E731
    assert [key(b) for b in got] == sorted(key(b) for b in dataset_boxes)
    assert result.note().startswith("included 1 study with undecided levels")

    # the real command says the same on stderr, and still succeeds
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update(SPINE_DATA_DIR=str(ws.settings.data_dir), SPINE_DB_URL=ws.settings.database_url)
    spine = [sys.executable, "-m", "spine_cli.main", "export", "rsna"]
    run = subprocess.run([*spine, str(tmp_path / "cli")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "left out 1 study with undecided levels" in run.stderr and positive in run.stderr
    assert "spine export rsna --include-undecided" in run.stderr
    assert [r["StudyInstanceUID"] for r in rows(tmp_path / "cli" / "train.csv")] == [negative]
    run = subprocess.run([*spine, "--include-undecided", str(tmp_path / "cli-all")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "included 1 study with undecided levels" in run.stderr
    assert sorted(r["StudyInstanceUID"] for r in rows(tmp_path / "cli-all" / "train.csv")) == (
        sorted([positive, negative]))


def test_the_note_names_the_first_few_undecided_studies() -> None:
    many = tuple(UndecidedStudy(f"1.2.{i}", ("C2", "C5")) for i in range(7))
    note = RsnaExport([], many).note()
    assert note.startswith("left out 7 studies with undecided levels")
    assert "1.2.0 (C2 C5)" in note and "1.2.4 (C2 C5)" in note and "1.2.5" not in note
    assert "and 2 more" in note
    assert RsnaExport([], ()).note() == ""


def test_include_undecided_belongs_to_the_rsna_export(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env["SPINE_DATA_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-m", "spine_cli.main", "export", "readers",
                          "--include-undecided", str(tmp_path / "out")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "--include-undecided applies to export rsna only" in run.stderr
