"""``spine export verse`` carries the readers' work: a renumbering every submitted reader made
alike ("T13 present at the vertebra labelled L1") renames the exported mask's values, centroids
and grades, and a re-import gives them back; readers who renumber differently leave the mask's
numbering (named in a warning); a level whose grade waits for the committee is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db import annotations as ann
from db import disputes, grades
from db import models as m
from db.importer import import_path
from db.layout_export import export_layout
from db.migrate import upgrade
from db.relabel import set_relabel
from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.demo import write_demo_dataset
from tests.app_helpers import fast_scrypt
from tests.db_fixtures import BACKEND_PARAMS, fresh_database


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout-relabel") / "verse"
    write_demo_dataset(root, region="thoracolumbar", layout="verse", n_studies=1, seed=7,
                       shape=(96, 48, 48), workers=1)
    return root


def _read(ws: Workspace, relabels: dict[str, dict[str, str]],
          levels: dict[str, dict[str, tuple[int, str | None]]]) -> int:
    """Assign reader1 and reader2, store their renumberings and grades, submit; the study id."""
    with unit_of_work(ws.sessions) as s:
        with fast_scrypt():
            ensure_demo_users(s)
        study = s.scalars(select(m.Study)).one()
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        readers = {n: s.scalars(select(m.User).where(m.User.username == n)).one()
                   for n in ("reader1", "reader2")}
        ann.assign(s, admin, study.id, [r.id for r in readers.values()])
        for name, reader in readers.items():
            if relabels.get(name):
                set_relabel(s, reader, study.id, mapping=relabels[name])
            for level, (grade, morph) in levels.get(name, {}).items():
                grades.set_grade(s, reader, study.id, level, grade, morph)
            ann.submit(s, reader, study.id, confirm=True)
        return study.id


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_an_agreed_renumbering_is_exported_and_round_trips(demo: Path, tmp_path: Path,
                                                           backend: str) -> None:
    with fresh_database(backend, tmp_path / "a") as url_a, \
            fresh_database(backend, tmp_path / "b") as url_b:
        upgrade(url_a)
        upgrade(url_b)
        _round_trip(demo, tmp_path, url_a, url_b)


def _round_trip(demo: Path, tmp_path: Path, url_a: str, url_b: str) -> None:
    first = Workspace(Settings(data_dir=tmp_path / "var-a", db_url=url_a, workers=1))
    import_path(demo, first.settings, actor="test", progress=False)
    with first.sessions() as s:
        present = s.scalars(select(m.Mask)).one().levels
    assert {"L1", "L2", "S"} <= set(present)
    shift = {"L1": "T13", **{f"L{i}": f"L{i - 1}" for i in range(2, 6) if f"L{i}" in present}}
    _read(first, {"reader1": shift, "reader2": shift},
          {"reader1": {"L1": (2, "wedge")}, "reader2": {"L1": (2, "wedge")}})
    written = export_layout(first, "verse", tmp_path / "out")
    assert any("renumbered as every reader said (L1 -> T13, L2 -> L1" in w
               for w in written.warnings), written.warnings
    (msk,) = (tmp_path / "out" / "derivatives").glob("*/*_seg-vert_msk.nii.gz")
    (src,) = demo.glob("derivatives/*/*_seg-vert_msk.nii.gz")
    exported, original = np.asarray(nib.load(msk).dataobj), np.asarray(nib.load(src).dataobj)
    assert np.array_equal(exported == LEVEL_IDS["T13"], original == LEVEL_IDS["L1"])
    assert np.array_equal(exported == LEVEL_IDS["S"], original == LEVEL_IDS["S"])
    assert LEVEL_IDS["L5"] not in np.unique(exported)
    (ctd,) = (tmp_path / "out" / "derivatives").glob("*/*_ctd.json")
    assert LEVEL_IDS["T13"] in {e.get("label") for e in json.loads(ctd.read_text())[1:]}
    with (tmp_path / "out" / "genant_grades.csv").open(newline="") as fh:
        rows = {int(r["label"]): (int(r["grade"]), r["morphology"]) for r in csv.DictReader(fh)}
    assert rows[LEVEL_IDS["T13"]] == (2, "wedge")
    second = Workspace(Settings(data_dir=tmp_path / "var-b", db_url=url_b, workers=1))
    again = import_path(tmp_path / "out", second.settings, actor="test", progress=False)
    assert again.studies_added == 1 and not again.problems, again.problems
    with second.sessions() as s:
        assert "T13" in s.scalars(select(m.Mask)).one().levels
        assert "T13" in set(s.scalars(select(m.Centroid.level)))
        grade = s.scalars(select(m.LevelGrade).where(m.LevelGrade.level == "T13")).one()
        assert (grade.grade, grade.morphology) == (2, "wedge")
    first.sessions.kw["bind"].dispose()
    second.sessions.kw["bind"].dispose()


def test_different_renumberings_and_open_grade_disputes_are_named(demo: Path,
                                                                  tmp_path: Path) -> None:
    ws = Workspace(Settings(data_dir=tmp_path / "var", workers=1))
    import_path(demo, ws.settings, actor="test", progress=False)
    sid = _read(ws, {"reader1": {"L5": "L6"}},
                {"reader1": {"L2": (3, "crush")}, "reader2": {"L2": (0, None)}})
    with unit_of_work(ws.sessions) as s:
        disputes.refresh_disputes(s, sid, ws.settings, actor="test")
    written = export_layout(ws, "verse", tmp_path / "out")
    assert any("renumber the vertebrae differently (reader1: L5 -> L6; reader2: as the mask)" in w
               for w in written.warnings), written.warnings
    assert any("the grade of L2 waits for the committee" in w for w in written.warnings)
    (msk,) = (tmp_path / "out" / "derivatives").glob("*/*_seg-vert_msk.nii.gz")
    (src,) = demo.glob("derivatives/*/*_seg-vert_msk.nii.gz")
    assert np.array_equal(np.asarray(nib.load(msk).dataobj), np.asarray(nib.load(src).dataobj))
    ws.sessions.kw["bind"].dispose()
