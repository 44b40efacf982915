"""Size limits of untrusted images come from the settings (``SPINE_MAX_IMAGE_SIDE``,
``SPINE_MAX_FRAMES``, ``SPINE_MAX_SERIES_MB``, ``SPINE_MAX_MODEL_VOXELS``) and reach the header
pass, the import and the inference server's check."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from db.importer import import_path
from spine_core.config import Settings, load_settings
from spine_core.inference.server import too_many_model_voxels
from spine_core.io.dicom_scan import SizeLimits, scan_dicom_tree
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume


def _series(folder: Path, shape: tuple[int, int, int] = (4, 32, 32)) -> Path:
    array = np.full(shape, 100, dtype=np.int16)
    write_series(Volume(array, ct_affine(shape, (2.0, 0.8, 0.8))), folder,
                 SeriesInfo(uid_from_seed(folder.name), uid_from_seed(folder.name, "s")))
    return folder


def test_limits_are_settings_read_from_the_environment() -> None:
    settings = load_settings({"SPINE_MAX_IMAGE_SIDE": "64", "SPINE_MAX_FRAMES": "3",
                              "SPINE_MAX_SERIES_MB": "1", "SPINE_MAX_MODEL_VOXELS": "1000"})
    assert SizeLimits.from_settings(settings) == SizeLimits(64, 3, 1)
    assert settings.max_model_voxels == 1000
    assert SizeLimits.from_settings(Settings()) == SizeLimits()  # one set of defaults


def test_header_pass_refuses_a_side_over_the_limit(tmp_path: Path) -> None:
    _series(tmp_path / "ct")
    assert scan_dicom_tree(tmp_path).series
    scan = scan_dicom_tree(tmp_path, limits=SizeLimits(max_side=16))
    assert not scan.series
    assert all("outside 1..16 (SPINE_MAX_IMAGE_SIDE)" in s.reason for s in scan.skipped)


def test_import_refuses_a_series_over_the_decoded_size_limit(tmp_path: Path) -> None:
    _series(tmp_path / "data" / "big", (8, 256, 256))  # 1 MiB decoded
    _series(tmp_path / "data" / "small", (4, 32, 32))
    settings = Settings(data_dir=tmp_path / "var", workers=1, max_series_mb=0)
    report = import_path(tmp_path / "data", settings, actor="test", progress=False)
    assert report.studies_added == 0
    assert any("big/" in p and "SPINE_MAX_SERIES_MB" in p for p in report.problems), report.problems
    settings = Settings(data_dir=tmp_path / "var", workers=1, max_series_mb=1)
    report = import_path(tmp_path / "data", settings, actor="test", progress=False)
    assert report.ok and report.studies_added == 2, report.problems


def test_model_grid_voxels_are_checked_from_the_header() -> None:
    ct = Volume(np.zeros((8, 8, 8), dtype=np.int16), np.diag([100.0, 100.0, 100.0, 1.0]))
    said = too_many_model_voxels(ct, 1_000_000)  # 320**3 voxels of 2.5 mm: 32.8 million
    assert said is not None and "32,768,000 voxels" in said and "SPINE_MAX_MODEL_VOXELS" in said
    assert too_many_model_voxels(ct, 40_000_000) is None
    fine = Volume(np.zeros((100, 100, 100), dtype=np.int16), np.diag([0.5, 0.5, 0.5, 1.0]))
    assert too_many_model_voxels(fine, 999_999) is not None  # its own voxels count too
