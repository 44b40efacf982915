"""Headers that cannot describe real data are refused in the header pass, before any pixel is
decoded, each with one line naming the file and what is wrong: sizes against the bytes present,
PixelSpacing 0, a NaN position, a singular orientation. A file left out of an otherwise good series
is named in the series' warnings (never a silent slice fewer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from db.importer import import_path
from spine_core.config import Settings
from spine_core.io.dicom import scan_dicom_tree
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume


def _series(folder: Path, name: str, mutate: Callable[[pydicom.Dataset, int], None]) -> Path:
    array = np.full((4, 16, 16), 100, dtype=np.int16)
    write_series(Volume(array, ct_affine(array.shape, (2.0, 0.8, 0.8))), folder / name,
                 SeriesInfo(uid_from_seed(name), uid_from_seed(name, "s")))
    for i, f in enumerate(sorted((folder / name).glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        mutate(ds, i)
        ds.save_as(f)
    return folder / name


CASES: dict[str, tuple[Callable[[pydicom.Dataset, int], None], str]] = {
    "rows": (lambda ds, i: setattr(ds, "Rows", 256),
             "pixel data holds 512 bytes but Rows×Columns×frames 256×16×1 need 8192"),
    "huge": (lambda ds, i: setattr(ds, "Rows", 65535), "Rows×Columns 65535×16 is outside 1..16384"),
    "spacing": (lambda ds, i: setattr(ds, "PixelSpacing", [0, 0]),
                "PixelSpacing [0.0, 0.0] must be two positive numbers"),
    "orientation": (lambda ds, i: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
                    "is not two orthogonal unit vectors"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_implausible_header_is_refused_with_its_reason(tmp_path: Path, case: str) -> None:
    mutate, reason = CASES[case]
    _series(tmp_path, case, mutate)
    scan = scan_dicom_tree(tmp_path)
    assert scan.series == []
    assert len(scan.skipped) == 4 and all(reason in s.reason for s in scan.skipped), scan.skipped


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_one_bad_slice_refuses_its_series_by_name(tmp_path: Path) -> None:
    """A slice left out would store the series one slice short: the series is refused, the file
    named; a study beside it still imports."""
    def nan_position(ds: pydicom.Dataset, i: int) -> None:
        if i == 1:
            ds.ImagePositionPatient = ["nan", 0, 2]

    _series(tmp_path / "data", "nan", nan_position)
    _series(tmp_path / "data", "spacing", CASES["spacing"][0])
    _series(tmp_path / "data", "good", lambda ds, i: None)
    report = import_path(tmp_path / "data", Settings(data_dir=tmp_path / "var", workers=1),
                         actor="test", progress=False)
    assert report.studies_added == 1  # the good study
    assert any("spacing" in p and "PixelSpacing [0.0, 0.0]" in p for p in report.problems)
    assert any("ImagePositionPatient" in p and "is not finite" in p and "not imported" in p
               for p in report.problems), report.problems
    from sqlalchemy import select

    from db import models as m
    from db.workspace import open_workspace

    with open_workspace(Settings(data_dir=tmp_path / "var", workers=1)).sessions() as s:
        series = s.scalars(select(m.Series)).one()
    assert series.shape[0] == 4
