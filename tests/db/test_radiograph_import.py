"""Radiographs import as cases beside CT, on SQLite and PostgreSQL: pydicom's CR films (one
JPEG 2000), synthetic DX films in the RSNA-like layout ``train_images/<id>/1.dcm``, PNG with and
without a sidecar; opened again for viewing and exported as NIfTI; the case browser's modality
filter; bad radiographs refused as one line each, naming the file, nothing recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from sqlalchemy import select

from db import catalogue
from db import models as m
from db.exporter import export_nifti
from db.importer import import_path
from db.studies import open_image
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.phantom.radiograph import Radiograph
from spine_core.phantom.xray_layout import write_xray_dataset
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx


@pytest.fixture(scope="module")
def film() -> Radiograph:
    return small_film()


def _workspace(db_url: str, tmp_path: Path) -> Workspace:
    return Workspace(Settings(data_dir=tmp_path / "var", db_url=db_url, workers=1))


def _cr_folder(root: Path) -> Path:
    for name in ("RG1_UNCI.dcm", "RG3_J2KR.dcm"):
        source = get_testdata_file(name, download=False)
        if source is None:
            pytest.skip(f"{name} is not installed (pip install pydicom-data)")
        (root / name[:3]).mkdir(parents=True)
        shutil.copy(source, root / name[:3] / name)
    return root


def _series(ws: Workspace) -> dict[str, m.Series]:
    with ws.sessions() as session:
        rows = session.scalars(select(m.Series).join(m.Study)).all()
        for row in rows:
            _ = row.study.study_uid
        return {s.files[0] if s.files else s.source_dir: s for s in rows}


def test_cr_films_import_as_one_slice_series_and_open_right(migrated_db_url: str,
                                                            tmp_path: Path) -> None:
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(_cr_folder(tmp_path / "cr"), ws, progress=False)
    assert report.ok and report.studies_added == 2, report.problems
    assert sum("spacing unknown" in w for w in report.warnings) == 2
    series = _series(ws)
    rg1, rg3 = series["RG1_UNCI.dcm"], series["RG3_J2KR.dcm"]
    assert (rg1.modality, rg1.shape, rg1.source_format) == ("CR", [1, 1955, 1841], "dicom")
    assert rg3.shape == [1, 1760, 1760] and rg1.study.n_slices == 1
    volume = open_image(ws, rg3)  # JPEG 2000, decoded after a child process's trial
    assert volume.meta["spacing_source"] == "unknown" and volume.meta["view"] == "AP"
    assert volume.meta["inverted"] and volume.meta["window"] == [1023 - 550.0, 1024.0]
    with ws.sessions() as session:
        audit = session.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "study.import")
                                .where(m.AuditEntry.entity_id == rg1.study.study_uid)).one()
        assert audit.after is not None and audit.after["modality"] == "CR"
        assert audit.after["radiograph"]["spacing_source"] == "unknown"
        assert audit.after["radiograph"]["view"] == "PA"
    again = import_path(tmp_path / "cr", ws, progress=False)
    assert again.studies_unchanged == 2 and again.studies_added == 0


def test_synthetic_dx_round_trip_through_import_and_nifti_export(migrated_db_url: str,
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "xr"
    write_xray_dataset(root, region="lumbar", n_studies=1, seed=9, phantom_shape=(200, 96, 96))
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(root, ws, progress=False)
    assert report.ok and report.dataset == "rsna" and report.studies_added == 1, report.problems
    ((name, dx),) = _series(ws).items()
    assert name == "1.dcm" and dx.modality == "DX" and dx.instance_numbers == [1]
    volume = open_image(ws, dx)
    source = next(root.glob("train_images/*/1.dcm"))
    import pydicom

    ds = pydicom.dcmread(source)
    assert volume.meta["sop_uids"] == [ds.SOPInstanceUID]
    pitch = float(ds.ImagerPixelSpacing[0]) / float(ds.EstimatedRadiographicMagnificationFactor)
    assert volume.meta["spacing_source"] == \
        "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    assert np.allclose(volume.spacing[1:], pitch)
    stored = ds.pixel_array.astype(np.int32)
    expected = (4095 - stored) if ds.PhotometricInterpretation == "MONOCHROME1" else stored
    assert np.array_equal(volume.array[0], expected)
    image_path, mask_path = export_nifti(ws, dx.study.study_uid, tmp_path / "out")  # + its vertebra mask
    img = nib.load(image_path)
    assert isinstance(img, nib.Nifti1Image)
    assert img.shape == (ds.Columns, ds.Rows, 1)
    assert np.allclose(img.header.get_zooms()[:2], pitch)
    assert np.array_equal(np.asarray(img.dataobj)[:, :, 0].T, volume.array[0])
    mask = nib.load(mask_path)
    assert isinstance(mask, nib.Nifti1Image) and mask.shape == img.shape
    assert np.allclose(mask.affine, img.affine) and np.asarray(mask.dataobj).max() > 0


def test_png_radiographs_import_with_and_without_a_sidecar(migrated_db_url: str,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "png"
    root.mkdir()
    pixels = (np.arange(80 * 60).reshape(80, 60) % 256).astype(np.uint8)
    Image.fromarray(pixels).save(root / "bare.png")
    Image.fromarray(pixels).save(root / "lateral.png")
    (root / "lateral.json").write_text(json.dumps({"pixel_spacing_mm": 0.14, "view": "lateral",
                                                   "modality": "DX"}))
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(root, ws, progress=False)
    assert report.ok and report.dataset == "images" and report.studies_added == 2, report.problems
    series = _series(ws)
    bare, lateral = series["bare.png"], series["lateral.png"]
    assert bare.modality == "OT" and bare.files == ["bare.png"] and bare.shape == [1, 80, 60]
    assert any("spacing unknown" in w for w in bare.warnings)
    assert lateral.modality == "DX" and lateral.files == ["lateral.png", "lateral.json"]
    bare_volume, lateral_volume = open_image(ws, bare), open_image(ws, lateral)
    assert bare_volume.meta["spacing_source"] == "unknown" and np.allclose(bare_volume.spacing, 1)
    assert lateral_volume.meta["spacing_source"] == "sidecar"
    assert np.allclose(lateral_volume.spacing[1:], 0.14)
    assert np.array_equal(bare_volume.array[0], pixels)


def test_the_case_browser_filters_by_modality(migrated_db_url: str, tmp_path: Path,
                                              film: Radiograph) -> None:
    from spine_core.phantom.rsna_layout import write_rsna_dataset

    ws = _workspace(migrated_db_url, tmp_path)
    ct = tmp_path / "ct"
    write_rsna_dataset(ct, n_studies=1, seed=3, shape=(48, 64, 64), workers=1)
    assert import_path(ct, ws, progress=False).studies_added == 1
    assert import_path(_cr_folder(tmp_path / "cr"), ws, progress=False).studies_added == 2
    write_dx(film, tmp_path / "dx" / "film", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).studies_added == 1
    with ws.sessions() as session:
        assert catalogue.modality_names(session) == ["CR", "CT", "DX"]
        by_modality = {mod: [r.modality for r in catalogue.list_cases(session, modality=mod).rows]
                       for mod in ("CT", "CR", "DX", "MR")}
        assert by_modality == {"CT": ["CT"], "CR": ["CR", "CR"], "DX": ["DX"], "MR": []}
        assert catalogue.count_cases(session, modality="cr") == 2
        assert sorted(r.modality for r in catalogue.list_cases(session).rows) == \
            ["CR", "CR", "CT", "DX"]


def test_bad_radiographs_are_one_line_each_naming_the_file_and_nothing_is_recorded(
        migrated_db_url: str, tmp_path: Path, film: Radiograph) -> None:
    root = tmp_path / "bad"
    write_dx(film, root / "frames", 2, NumberOfFrames=2,
             PixelData=np.tile(film.image, (2, 1, 1)).tobytes())
    write_dx(film, root / "tiny", 3, Rows=1, Columns=1, PixelData=b"\0\0")
    write_dx(film, root / "huge", 4, Rows=30000, Columns=30000, PixelData=b"\0" * 64)
    write_dx(film, root / "rgb", 5, Modality="OT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7",
             SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0,
             BitsAllocated=8, BitsStored=8, HighBit=7, Rows=32, Columns=32,
             PixelData=bytes(32 * 32 * 3))
    write_dx(film, root / "two", 6)  # two films in one series: which one is the case?
    write_dx(film, root / "two", 6, name="2.dcm", SOPInstanceUID="1.2.826.0.1.3680043.10.6.2")
    (root / "damaged").mkdir()
    j2k = bytearray(Path(_cr_folder(tmp_path / "cr"), "RG3", "RG3_J2KR.dcm").read_bytes())
    start = j2k.find(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream's first markers
    j2k[start:start + 200] = b"\x13" * 200
    (root / "damaged" / "1.dcm").write_bytes(j2k)
    ws = _workspace(migrated_db_url, tmp_path)
    report = import_path(root, ws, progress=False)
    assert report.studies_added == 0 and len(report.problems) == 6, report.problems
    expected = {"frames": "2 frames", "tiny": "1×1 pixels", "huge": "30000×30000",
                "rgb": "colour image", "two": "holds 2 radiographs",
                "damaged": "pixel data cannot be decoded"}
    for problem in report.problems:
        case = problem.split(":")[0].removeprefix("case ")
        assert "\n" not in problem and "1.dcm" in problem and expected[case] in problem, problem
        assert "Traceback" not in problem
    with ws.sessions() as session:
        assert session.scalars(select(m.Study)).first() is None
