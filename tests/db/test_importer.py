"""Import → database → export on real files: RSNA layout written by the phantom, real DICOM/NIfTI.

Runs against SQLite and PostgreSQL (the `migrated_db_url` fixture of tests/db_fixtures.py).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select

from db import models as m
from db.exporter import export_nifti, export_readers, export_rsna
from db.importer import import_path
from db.users import ensure_demo_users
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset

SHAPE = (64, 112, 112)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic studies in the RSNA layout (written once per module)."""
    root = tmp_path_factory.mktemp("rsna") / "demo"
    write_rsna_dataset(root, n_studies=4, seed=7, shape=SHAPE, workers=1)
    return root


def _workspace(db_url: str, tmp_path: Path) -> Workspace:
    settings = Settings(data_dir=tmp_path / "var", db_url=db_url, workers=1)
    ws = Workspace(settings)
    return ws


def _rsna_only(dataset: Path, tmp_path: Path) -> Path:
    """A copy of the dataset with only RSNA's own files (no readers' CSVs)."""
    copy = tmp_path / "rsna_only"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("readers_*.csv"))
    return copy


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _box_key(row: dict[str, str]) -> tuple[object, ...]:
    return (row["StudyInstanceUID"], int(row["slice_number"]),
            *(round(float(row[k]), 3) for k in ("x", "y", "width", "height")))


def test_rsna_round_trip_reproduces_the_csvs(dataset: Path, migrated_db_url: str, tmp_path: Path) -> None:
    source = _rsna_only(dataset, tmp_path)
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(source, ws, actor="test", progress=False)
    assert report.ok, report.problems
    assert report.studies_added == 4 and report.masks_added == 4

    out = tmp_path / "export"
    export_rsna(ws, out)
    original = _rows(source / "train.csv")
    exported = _rows(out / "train.csv")
    assert list(exported[0]) == ["StudyInstanceUID", "patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert sorted(original, key=lambda r: r["StudyInstanceUID"]) == exported

    boxes_in = _rows(source / "train_bounding_boxes.csv")
    boxes_out = _rows(out / "train_bounding_boxes.csv")
    assert boxes_in, "the synthetic dataset should hold fracture boxes"
    assert sorted(map(_box_key, boxes_in)) == sorted(map(_box_key, boxes_out))
    header = (out / "train_bounding_boxes.csv").read_text().splitlines()[0]
    assert header == "StudyInstanceUID,x,y,width,height,slice_number"


def test_reimport_adds_nothing_twice(dataset: Path, migrated_db_url: str, tmp_path: Path) -> None:
    ws = _workspace(migrated_db_url, tmp_path)
    with ws.sessions.begin() as session:
        ensure_demo_users(session)
    first = import_path(dataset, ws, actor="test", progress=False)
    assert first.ok, first.problems
    with ws.sessions() as session:
        counts = {model.__name__: session.scalar(select(func.count()).select_from(model))
                  for model in (m.Study, m.Series, m.Mask, m.Box, m.LevelLabel, m.Report)}
    second = import_path(dataset, ws, actor="test", progress=False)
    assert second.ok, second.problems
    assert second.studies_added == 0 and second.studies_unchanged == 4
    assert second.csv_rows_imported == 0
    with ws.sessions() as session:
        again = {model.__name__: session.scalar(select(func.count()).select_from(model))
                 for model in (m.Study, m.Series, m.Mask, m.Box, m.LevelLabel, m.Report)}
    assert again == counts
    assert counts["LevelLabel"] > 0  # readers' calls were imported

    readers = export_readers(ws, tmp_path / "readers")
    exported = _rows(readers[0])
    original = _rows(dataset / "readers_boxes.csv")
    assert len(exported) == len(original)
    assert {(r["StudyInstanceUID"], r["reader"], int(r["slice_number"])) for r in exported} == {
        (r["StudyInstanceUID"], r["reader"], int(r["slice_number"])) for r in original
    }


def test_broken_study_is_skipped_and_the_rest_imported(dataset: Path, migrated_db_url: str,
                                                       tmp_path: Path) -> None:
    source = _rsna_only(dataset, tmp_path)
    broken = sorted((source / "train_images").iterdir())[0]
    for f in sorted(broken.iterdir())[1:]:
        f.unlink()  # one slice left: not a volume
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(source, ws, actor="test", progress=False)
    assert report.studies_added == 3
    assert any(broken.name in p and "only one slice" in p for p in report.problems), report.problems
    # The CSV rows naming the skipped study are refused by name, the others imported.
    assert any("is not imported" in p for p in report.problems)
    with ws.sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.Study)) == 3


def test_export_nifti_puts_image_and_mask_on_one_grid(dataset: Path, migrated_db_url: str,
                                                      tmp_path: Path) -> None:
    source = _rsna_only(dataset, tmp_path)
    ws = _workspace(migrated_db_url, tmp_path)
    assert import_path(source, ws, actor="test", progress=False).ok
    uid = sorted(p.name for p in (source / "train_images").iterdir())[0]
    image_path, mask_path = export_nifti(ws, uid, tmp_path / "nifti")
    image, mask = nib.load(image_path), nib.load(mask_path)
    assert image.shape == mask.shape
    assert np.allclose(image.affine, mask.affine)
    # The mask exported on the image grid equals the RSNA sagittal mask mapped through affines.
    original = nib.load(source / "segmentations" / f"{uid}.nii")
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(original.affine), nib.orientations.io_orientation(image.affine)
    )
    expected = nib.orientations.apply_orientation(np.asarray(original.dataobj), ornt)
    assert np.array_equal(np.asarray(mask.dataobj), expected.astype(np.uint8))
    labels = set(np.unique(np.asarray(mask.dataobj)).tolist()) - {0}
    assert {1, 2, 3, 4, 5, 6, 7} <= labels


def test_deleted_files_are_reported_not_crashing(dataset: Path, migrated_db_url: str, tmp_path: Path) -> None:
    from db.studies import open_image
    from spine_core.errors import SourceChangedError

    source = _rsna_only(dataset, tmp_path)
    ws = _workspace(migrated_db_url, tmp_path)
    assert import_path(source, ws, actor="test", progress=False).ok
    with ws.sessions() as session:
        series = session.scalars(select(m.Series).order_by(m.Series.id)).first()
        assert series is not None
        assert open_image(ws, series).shape == tuple(series.shape)
        victim = Path(series.source_dir) / series.files[3]
        victim.unlink()
        with pytest.raises(SourceChangedError, match="re-import"):
            open_image(ws, series)
