"""``spine export verse`` / ``ctspine1k`` round trips on SQLite and PostgreSQL: a whole-spine
demo imported, exported and imported into an empty database gives back the same masks (voxel for
voxel, in the image's own orientation), centroids and Genant grades; a centroid off its vertebra
is named and left out, the mask unchanged; the final grade is the readers' when all agree."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from db import annotations as ann
from db import grades
from db import models as m
from db.importer import import_path
from db.layout_export import export_layout
from db.migrate import upgrade
from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.phantom.demo import write_demo_dataset
from tests.app_helpers import fast_scrypt
from tests.db_fixtures import BACKEND_PARAMS, fresh_database


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout-export") / "verse"
    write_demo_dataset(root, region="whole", layout="verse", n_studies=2, seed=5,
                       shape=(128, 48, 48), workers=1)
    return root


def _state(ws: Workspace) -> dict[str, tuple[bytes, dict[str, tuple[float, ...]], dict[str, tuple[int, str | None]]]]:
    """Per subject: mask bytes in file order, centroids (LPS), dataset grades."""
    from db.layout_export import final_grades, subject_of
    from db.studies import open_image, open_mask

    out = {}
    with ws.sessions() as s:
        for study in s.scalars(select(m.Study)):
            series = s.scalars(select(m.Series).where(m.Series.study_id == study.id)).one()
            image = open_image(ws, series)
            mask = open_mask(ws, series, image)
            assert mask is not None
            cents = {c.level: (round(c.x, 1), round(c.y, 1), round(c.z, 1)) for c in
                     s.scalars(select(m.Centroid).where(m.Centroid.study_id == study.id))}
            out[subject_of(study)] = (np.asarray(mask.array).tobytes(), cents,
                                      final_grades(s, study.id))
    return out


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_verse_round_trip(demo: Path, tmp_path: Path, backend: str) -> None:
    with fresh_database(backend, tmp_path / "a") as url_a, fresh_database(backend, tmp_path / "b") as url_b:
        upgrade(url_a)
        upgrade(url_b)
        first = Workspace(Settings(data_dir=tmp_path / "var-a", db_url=url_a, workers=1))
        report = import_path(demo, first.settings, actor="test", progress=False)
        assert report.studies_added == 2 and not report.problems
        written = export_layout(first, "verse", tmp_path / "out")
        assert not written.warnings, written.warnings
        assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in written.paths)
        # the image keeps its own orientation, and the centroid file says which
        for ct in (tmp_path / "out" / "rawdata").glob("*/*_ct.nii.gz"):
            src = next(demo.glob(f"rawdata/*/{ct.name}"))
            assert nib.aff2axcodes(nib.load(ct).affine) == nib.aff2axcodes(nib.load(src).affine)
            ctd = next((tmp_path / "out" / "derivatives").glob(f"*/{ct.name[:-10]}_seg-subreg_ctd.json"))
            assert json.loads(ctd.read_text())[0]["direction"] == list(nib.aff2axcodes(nib.load(ct).affine))
        second = Workspace(Settings(data_dir=tmp_path / "var-b", db_url=url_b, workers=1))
        again = import_path(tmp_path / "out", second.settings, actor="test", progress=False)
        assert again.studies_added == 2 and not again.problems, again.problems
        before, after = _state(first), _state(second)
        assert before.keys() == after.keys()
        for subject in before:
            assert before[subject][0] == after[subject][0], f"{subject}: mask differs"
            assert before[subject][2] == after[subject][2], f"{subject}: grades differ"
            b, a = before[subject][1], after[subject][1]
            assert b.keys() == a.keys() and all(
                np.allclose(b[k], a[k], atol=1.0) for k in b), (b, a)  # JSON keeps 0.1 voxel
        first.sessions.kw["bind"].dispose()
        second.sessions.kw["bind"].dispose()


def test_off_vertebra_centroid_is_named_and_readers_agreed_grade_is_final(demo: Path,
                                                                           tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", workers=1)
    import_path(demo, settings, actor="test", progress=False)  # migrates the new database
    ws = Workspace(settings)
    with unit_of_work(ws.sessions) as s:
        with fast_scrypt():
            ensure_demo_users(s)
        study = s.scalars(select(m.Study).order_by(m.Study.id)).first()
        assert study is not None
        cent = s.scalars(select(m.Centroid).where(m.Centroid.study_id == study.id,
                                                  m.Centroid.level == "L1")).one()
        cent.x += 500.0  # far outside the body
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        readers = [s.scalars(select(m.User).where(m.User.username == n)).one() for n in ("reader1", "reader2")]
        ann.assign(s, admin, study.id, [r.id for r in readers])
        for r in readers:
            grades.set_grade(s, r, study.id, "L2", 3, "crush")
            ann.submit(s, r, study.id, confirm=True)
        sid = study.id
    written = export_layout(ws, "verse", tmp_path / "out")
    assert any("centroid of L1 left out: it lies outside the image" in w for w in written.warnings), \
        written.warnings
    with ws.sessions() as s:
        from db.layout_export import final_grades

        assert final_grades(s, sid)["L2"] == (3, "crush")
    rows = (tmp_path / "out" / "genant_grades.csv").read_text().splitlines()
    assert any(r.endswith(",21,3,crush") for r in rows), rows  # L2 = VerSe label 21


def test_ctspine1k_round_trip_leaves_out_what_its_labels_cannot_hold(demo: Path, tmp_path: Path) -> None:
    first = Workspace(Settings(data_dir=tmp_path / "var-a", workers=1))
    import_path(demo, first.settings, actor="test", progress=False)
    written = export_layout(first, "ctspine1k", tmp_path / "out")
    assert any("S left out of the label map (CTSpine1K labels C1-L6 only)" in w
               for w in written.warnings), written.warnings
    second = Workspace(Settings(data_dir=tmp_path / "var-b", workers=1))
    again = import_path(tmp_path / "out", second.settings, actor="test", progress=False)
    assert again.dataset == "ctspine1k" and again.studies_added == 2 and not again.problems, again.problems
    before, after = _state(first), _state(second)
    assert sorted(sorted(v[2].items()) for v in before.values()) == sorted(
        sorted(v[2].items()) for v in after.values())  # the grades
    masks_before = sorted(np.where(np.isin(np.frombuffer(v[0], np.uint8), [26, 28]), 0,
                                   np.frombuffer(v[0], np.uint8)).tobytes() for v in before.values())
    assert masks_before == sorted(v[0] for v in after.values())
