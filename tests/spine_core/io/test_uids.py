"""DICOM UIDs from files are checked before they are stored or named in a path: a file whose
StudyInstanceUID is ``../../../../PWNED`` or longer than 64 characters is left out of its series,
with its reason; the rest of the folder still imports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from db.importer import import_path
from spine_core.config import Settings
from spine_core.errors import InputError
from spine_core.io.dicom import scan_dicom_tree
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.io.uids import check_uid, is_uid
from spine_core.volume import Volume

BAD = ["../../../../PWNED", "1.2." + "3" * 70, "1..2", "1.2.", "", "1.2.x", "1.2/3"]


@pytest.mark.parametrize("value", BAD)
def test_bad_uids_are_refused_with_a_line_naming_them(value: str) -> None:
    assert not is_uid(value)
    with pytest.raises(InputError, match=r"case7/1\.dcm: StudyInstanceUID .* is not a DICOM UID"):
        check_uid(value, "StudyInstanceUID", "case7/1.dcm")


def test_good_uids_pass() -> None:
    for value in ("1.2.840.10008.1.2", "0", "2.25." + "1" * 59):
        assert check_uid(value, "StudyInstanceUID", "x") == value


def _series(folder: Path, study_uid: str) -> Path:
    array = np.full((4, 16, 16), 100, dtype=np.int16)
    write_series(Volume(array, ct_affine(array.shape, (2.0, 0.8, 0.8))), folder,
                 SeriesInfo(study_uid, uid_from_seed(study_uid, "s")))
    return folder


def test_a_file_with_a_path_like_uid_is_left_out_and_named(tmp_path: Path) -> None:
    good = uid_from_seed("uids-good")
    _series(tmp_path / "data" / "good", good)
    bad = _series(tmp_path / "data" / "bad", uid_from_seed("uids-bad"))
    for f in bad.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = "../../../../PWNED"
        ds.save_as(f)
    scan = scan_dicom_tree(tmp_path / "data")
    assert [s.study_uid for s in scan.series] == [good]
    reasons = {Path(s.path).parent.name for s in scan.skipped if "is not a DICOM UID" in s.reason}
    assert reasons == {"bad"}
    report = import_path(tmp_path / "data", Settings(data_dir=tmp_path / "var", workers=1),
                         actor="test", progress=False)
    assert report.studies_added == 1
    assert any("../../../../PWNED" in p and "not a DICOM UID" in p for p in report.problems), \
        report.problems
    assert not (tmp_path / "PWNED").exists()
