"""DICOM SEG and TID 1500 SR in the core, without a database or a PACS: codes, voxel-for-voxel
and box-for-box round trips (every object read back by highdicom and pydicom), and what a hostile
PACS answer cannot do (a non-UID never names a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from spine_core.errors import InputError
from spine_core.io import dicomweb as dw
from spine_core.io.dicom_seg import complete_type2, read_seg_labels, write_seg
from spine_core.io.dicom_sr import ReaderWork, SrBox, read_sr, write_reader_sr
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.rsna_layout import write_rsna_dataset
from spine_core.vertebra_codes import VERTEBRA_SCT, level_of_code, vertebra_code

ROOT = "1.2.826.0.1.3680043.8.498."


def test_vertebra_codes_are_snomed_ct_as_dicom_names_them() -> None:
    for level, (value, _) in VERTEBRA_SCT.items():
        keyword = {"S": "Sacrum", "Co": "Coccyx"}.get(level, f"{level}Vertebra")
        assert getattr(codes.SCT, keyword).value == value
        assert level_of_code(value, "SCT") == level
    assert vertebra_code("T13").value == "51282000"  # no code of its own: "Vertebra"
    assert level_of_code("51282000", "SCT", "T13") == "T13"


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    out = tmp_path_factory.mktemp("ct")
    write_rsna_dataset(out, 1, 3, shape=(48, 64, 64), workers=1)
    files = list((out / "train_images").rglob("*.dcm"))
    headers = [complete_type2(pydicom.dcmread(p, stop_before_pixels=True)) for p in files]
    return sorted(headers, key=lambda d: float(d.ImagePositionPatient[2]))


def test_seg_round_trip_voxel_for_voxel(ct: list[pydicom.Dataset], tmp_path: Path) -> None:
    import highdicom as hd

    rng = np.random.default_rng(0)
    labels = np.zeros((len(ct), 64, 64), dtype=np.uint8)
    for i, level in enumerate(["C1", "C2", "T13", "L6", "S"]):
        labels[5 + 8 * i: 9 + 8 * i, 10:40, 12:30] = LEVEL_IDS[level]
    labels[rng.random(labels.shape) < 0.01] = LEVEL_IDS["C2"]
    seg = write_seg(ct, labels, uid_root=ROOT)
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert hd.seg.segread(path).number_of_segments == 5
    assert pydicom.dcmread(path).StudyInstanceUID == ct[0].StudyInstanceUID
    back, reading = read_seg_labels(path, [str(d.SOPInstanceUID) for d in ct])
    assert np.array_equal(back, labels)
    assert reading.referenced_series_uid == ct[0].SeriesInstanceUID
    assert sorted(reading.levels) == sorted(["C1", "C2", "T13", "L6", "S"])


def test_sr_round_trip_box_for_box(ct: list[pydicom.Dataset], tmp_path: Path) -> None:
    import highdicom as hd

    work = ReaderWork("ann1", boxes=[SrBox(7, 10.25, 20.5, 8.125, 4.0, "C2"), SrBox(30, 1.0, 2.0, 3.0, 4.0, None),
                                     SrBox(31, 11.0, 12.0, 13.0, 14.0, "T13")],
                      calls={"C2": "fractured", "C3": "not_fractured", "C5": "unsure"}, grades={"C2": 2})
    sr = write_reader_sr(ct, work, uid_root=ROOT, series_uid=ROOT + "99", instance_number=1)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    hd.sr.srread(path)
    assert pydicom.dcmread(path).SeriesInstanceUID == ROOT + "99"
    back = read_sr(path, [str(d.SOPInstanceUID) for d in ct])
    assert back.reader == work


class _HostilePacs:
    """A PACS answer Orthanc would never give: UIDs that are paths."""

    def search_for_studies(self, **_: Any) -> list[dict[str, Any]]:
        return [{"0020000D": {"vr": "UI", "Value": ["../../etc"]}},
                {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]

    def search_for_series(self, **_: Any) -> list[dict[str, Any]]:
        return [{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}, "00080060": {"vr": "CS", "Value": ["CT"]}}]

    def iter_series(self, **_: Any) -> Any:
        ds = pydicom.Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3", "1.2.3.4", "../../../pwned"
        yield ds


def test_hostile_pacs_names_no_file(tmp_path: Path) -> None:
    config = dw.PacsConfig("http://127.0.0.1:9/dicom-web")
    studies, problems = dw.search_studies(_HostilePacs(), config)
    assert [s.study_uid for s in studies] == ["1.2.3"] and "is not a DICOM UID" in problems[0]
    with pytest.raises(InputError, match="SOPInstanceUID '../../../pwned' is not a DICOM UID"):
        dw.retrieve_study(_HostilePacs(), config, "1.2.3", tmp_path / "pacs")
    assert not any((tmp_path / "pacs" / ".partial").iterdir())
    assert not (tmp_path / "pacs" / "1.2.3").exists()
    assert not list(tmp_path.parent.glob("pwned*"))
