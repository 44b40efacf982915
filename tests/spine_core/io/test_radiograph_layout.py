"""Folders of PNG/JPEG radiographs are a layout of their own ("images"): one case per image, its
sidecar beside it, never a sidecar linked from outside the folder; DICOM wins when both are there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spine_core.errors import UnsafePathError
from spine_core.io.dicom_scan import SizeLimits
from spine_core.io.layouts import detect_layout, iter_cases
from spine_core.io.prepare import CaseFailure, PreparedCase, prepare_case


def _png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, 90, dtype=np.uint8)).save(path)
    return path


def test_png_and_jpeg_files_are_one_case_each(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "lat.png")
    _png(tmp_path / "b.jpeg")
    (tmp_path / "a" / "lat.json").write_text(json.dumps({"pixel_spacing_mm": 0.2}))
    (tmp_path / "notes.txt").write_text("not an image")
    assert detect_layout(tmp_path).kind == "images"
    cases = list(iter_cases(tmp_path))
    assert [(c.case_id, c.image_format, c.dataset) for c in cases] == [
        ("b", "image", "images"), ("a/lat", "image", "images")]
    prepared = prepare_case(cases[1], tmp_path / "store", SizeLimits())
    assert isinstance(prepared, PreparedCase)
    series = prepared.series
    assert series.shape == (1, 40, 30) and series.files == ["lat.png", "lat.json"]
    assert series.details["spacing_source"] == "sidecar" and series.modality == "OT"
    again = prepare_case(cases[1], tmp_path / "store", SizeLimits())
    assert isinstance(again, PreparedCase) and again.series.study_uid == series.study_uid


def test_a_sidecar_linked_from_outside_the_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "film.png")
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"pixel_spacing_mm": 0.2}))
    (root / "film.json").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        list(iter_cases(root))


def test_a_bad_sidecar_fails_its_case_in_one_line(tmp_path: Path) -> None:
    _png(tmp_path / "film.png")
    (tmp_path / "film.json").write_text("[1, 2]")
    (case,) = iter_cases(tmp_path)
    failure = prepare_case(case, tmp_path / "store", SizeLimits())
    assert isinstance(failure, CaseFailure)
    assert "film.json" in failure.reason and "JSON object" in failure.reason
    assert "\n" not in failure.reason


def test_dicom_beside_pngs_makes_a_dicom_folder(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    _png(tmp_path / "thumb.png")
    source = get_testdata_file("CT_small.dcm", download=False)
    assert source is not None
    (tmp_path / "ct.dcm").write_bytes(Path(source).read_bytes())
    assert detect_layout(tmp_path).kind == "dicom"
