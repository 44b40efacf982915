"""The RSNA-layout demo dataset: real DICOM and NIfTI files read back with pydicom and nibabel."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage

from spine_core.errors import InputError
from spine_core.labels import CERVICAL
from spine_core.phantom import PhantomStudy, generate_study
from spine_core.phantom.rsna_layout import (
    DemoManifest,
    study_plans,
    study_seeds,
    write_rsna_dataset,
    write_study,
)

SMALL = (96, 112, 112)
SEED = 3  # studies: negative; C2+C7 reported; C1+C7 with C7 missed by the report. Both orders.


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    """Three studies written by two worker processes."""
    return write_rsna_dataset(tmp_path_factory.mktemp("rsna"), 3, seed=SEED, shape=SMALL,
                              workers=2)


@pytest.fixture(scope="module")
def studies(dataset: DemoManifest) -> dict[str, PhantomStudy]:
    """The same studies regenerated in memory (generation is deterministic per seed)."""
    out = {}
    for s, plan in zip(dataset.studies, study_plans(SEED, len(dataset.studies))):
        study = generate_study(s.seed, SMALL, positive=plan.positive, report_miss=plan.report_miss)
        assert study.study_uid == s.study_uid
        out[s.study_uid] = study
    return out


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _read_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """HU volume sorted by position along the slice normal, its LPS affine, instance numbers."""
    datasets = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    first = datasets[0]
    row_cos = np.array(first.ImageOrientationPatient[:3], dtype=float)
    col_cos = np.array(first.ImageOrientationPatient[3:], dtype=float)
    normal = np.cross(row_cos, col_cos)
    datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                   for ds in datasets])
    pos = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    dy, dx = (float(v) for v in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = (pos[-1] - pos[0]) / (len(pos) - 1)
    affine[:3, 1] = col_cos * dy
    affine[:3, 2] = row_cos * dx
    affine[:3, 3] = pos[0]
    return hu, affine, [int(ds.InstanceNumber) for ds in datasets]


def _mask_on_grid(nii: nib.Nifti1Image, lps_affine: np.ndarray) -> np.ndarray:
    """Bring a NIfTI mask onto a DICOM grid (axes slice, row, column) through the affines only."""
    # The DICOM grid as nibabel sees it: index (column, row, slice) -> RAS.
    grid_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine @ np.array(
        [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    transform = nio.ornt_transform(nio.io_orientation(nii.affine), nio.io_orientation(grid_ras))
    data = nio.apply_orientation(np.asanyarray(nii.dataobj), transform)
    moved = nii.affine @ nio.inv_ornt_aff(transform, nii.shape)
    assert np.allclose(moved, grid_ras, atol=1e-3), "affines disagree after reorientation"
    return np.transpose(data, (2, 1, 0))


def test_csv_columns_are_exact(dataset: DemoManifest) -> None:
    expected = {
        dataset.train_csv: ["StudyInstanceUID", "patient_overall", *CERVICAL],
        dataset.boxes_csv: ["StudyInstanceUID", "x", "y", "width", "height", "slice_number"],
        dataset.readers_boxes_csv: ["StudyInstanceUID", "slice_number", "x", "y", "width",
                                    "height", "reader", "level"],
        dataset.readers_levels_csv: ["StudyInstanceUID", "reader", "level", "call"],
        dataset.reports_csv: ["StudyInstanceUID", "text"],
    }
    for path, columns in expected.items():
        assert _rows(path)[0] == columns, path.name
    _, train = _rows(dataset.train_csv)
    assert [r["StudyInstanceUID"] for r in train] == [s.study_uid for s in dataset.studies]
    for row, s in zip(train, dataset.studies):
        assert row["patient_overall"] == str(int(bool(s.reported)))
        assert [row[lv] for lv in CERVICAL] == [str(int(lv in s.reported)) for lv in CERVICAL]


def test_dataset_has_positive_and_negative_studies(dataset: DemoManifest) -> None:
    assert any(s.fractured for s in dataset.studies)
    assert any(not s.fractured for s in dataset.studies)
    assert {s.superior_first for s in dataset.studies} == {True, False}
    missed = [s for s in dataset.studies if s.missed]
    assert missed and all(set(s.missed).isdisjoint(s.reported) for s in missed)
    _, readers = _rows(dataset.readers_boxes_csv)
    for s in missed:  # the image shows it: readers draw it although train.csv says 0
        assert any(r["StudyInstanceUID"] == s.study_uid and r["level"] in s.missed for r in readers)


def test_dicom_round_trips(dataset: DemoManifest, studies: dict[str, PhantomStudy]) -> None:
    for uid, study in studies.items():
        folder = dataset.series_dir(uid)
        assert sorted(int(p.stem) for p in folder.glob("*.dcm")) == list(range(1, SMALL[0] + 1))
        ds = pydicom.dcmread(next(folder.glob("*.dcm")))
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.StudyInstanceUID == uid
        hu, affine, numbers = _read_series(folder)
        assert np.array_equal(hu, study.image.array)
        assert np.allclose(affine, study.image.affine, atol=1e-3)
        assert numbers == list(study.instance_numbers)
        # InstanceNumber 1 is the top slice exactly in superior-first studies.
        assert (numbers[-1] == 1) == study.superior_first


def test_segmentation_round_trips_through_the_affines_only(
    dataset: DemoManifest, studies: dict[str, PhantomStudy]
) -> None:
    for uid, study in studies.items():
        nii = nib.load(dataset.segmentation_path(uid))
        assert np.asanyarray(nii.dataobj).dtype == np.uint8
        hu, affine_lps, _ = _read_series(dataset.series_dir(uid))
        mask = _mask_on_grid(nii, affine_lps)
        assert mask.shape == hu.shape
        assert np.array_equal(mask, study.labels.array)
        # Stored sagittal-first and flipped: read without the header it does not fit.
        assert nio.aff2axcodes(nii.affine)[0] in ("L", "R")
        naive = np.transpose(np.asanyarray(nii.dataobj), (2, 1, 0))
        labels = study.labels.array
        assert naive.shape == labels.shape and not np.array_equal(naive, labels)
        # ...it is the same mask flipped head-to-foot (and front-back or left-right).
        flips = [labels[::-1, ::-1, :], labels[::-1, :, ::-1], labels[::-1, ::-1, ::-1]]
        assert any(np.array_equal(naive, f) for f in flips)


def test_box_slice_numbers_name_the_slices_of_the_fracture(
    dataset: DemoManifest, studies: dict[str, PhantomStudy]
) -> None:
    _, rows = _rows(dataset.boxes_csv)
    assert rows, "expected boxes for the positive studies"
    for row in rows:
        study = studies[row["StudyInstanceUID"]]
        path = dataset.series_dir(study.study_uid) / f"{row['slice_number']}.dcm"
        ds = pydicom.dcmread(path)
        a0 = int(round(study.image.lps_to_index(np.array(ds.ImagePositionPatient, float))[0]))
        x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
        assert 0 <= x and x + w <= ds.Columns and 0 <= y and y + h <= ds.Rows
        match = [b for b in study.boxes
                 if b.slice_index == a0 and (b.x, b.y, b.width, b.height) == (x, y, w, h)]
        assert match and match[0].level in study.reported_levels


def test_readers_and_reports(dataset: DemoManifest, studies: dict[str, PhantomStudy]) -> None:
    _, levels = _rows(dataset.readers_levels_csv)
    _, boxes = _rows(dataset.readers_boxes_csv)
    assert len(levels) == 3 * 7 * len(dataset.studies)
    drawn = {(b["StudyInstanceUID"], b["reader"], b["level"]) for b in boxes}
    for row in levels:
        key = (row["StudyInstanceUID"], row["reader"], row["level"])
        assert row["call"] == str(int(key in drawn))
    for b in boxes:
        assert (dataset.series_dir(b["StudyInstanceUID"]) / f"{b['slice_number']}.dcm").is_file()
    _, reports = _rows(dataset.reports_csv)
    for row, s in zip(reports, dataset.studies):
        for level in s.reported:
            assert level in row["text"]


def test_missed_fracture_is_absent_from_train_csv_but_drawn_by_readers(tmp_path: Path) -> None:
    study = generate_study(3, SMALL, fractured_levels=["C7"], report_miss=True)
    rows = write_study(study, tmp_path)
    assert rows.train[1:] == [0] * 8
    assert rows.boxes == []
    assert any(r[-1] == "C7" for r in rows.reader_boxes)
    assert rows.study.missed == ("C7",)


def test_same_seed_writes_identical_files(dataset: DemoManifest, tmp_path: Path) -> None:
    again = write_rsna_dataset(tmp_path / "again", 1, seed=SEED, shape=SMALL, workers=1)
    first = dataset.studies[0]
    assert again.studies[0] == first
    assert study_seeds(SEED, 1) == [first.seed]
    for p in sorted(dataset.series_dir(first.study_uid).glob("*.dcm"))[:20]:
        assert p.read_bytes() == (again.series_dir(first.study_uid) / p.name).read_bytes()
    assert (dataset.segmentation_path(first.study_uid).read_bytes()
            == again.segmentation_path(first.study_uid).read_bytes())
    assert DemoManifest.load(again.root) == again


def test_dataset_plans_are_half_positive_with_a_tenth_missed() -> None:
    plans = study_plans(11, 100)
    assert sum(p.positive for p in plans) == 50
    assert sum(p.report_miss for p in plans) == 10
    assert all(p.positive for p in plans if p.report_miss)
    assert plans[:7] == study_plans(11, 7)  # a study's plan does not depend on the dataset size
    assert any(p.report_miss for p in study_plans(2022, 6))  # the default demo shows one


def test_refuses_a_folder_that_is_not_a_demo_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="empty"):
        write_rsna_dataset(tmp_path, 1, seed=1, shape=SMALL, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
