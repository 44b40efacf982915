"""The reader on files other tools wrote: pydicom's bundled test data (no download needed).

Bundled here (pydicom 3.0): CT_small, MR_small in seven encodings, MR_truncated, 693_J2KI,
image_dfl (deflated), test-SR, rtdose, liver_1frame (SEG) and the dicomdirtests tree of real
CT/MR/CR series with DICOMDIR files. emri_small* and JPEG-LL are download-only and not used.
Single-image files become small series by rewriting only their position and UIDs; the pixel
data (compressed or not) is kept byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from spine_core.errors import SeriesGeometryError
from spine_core.io.dicom import load_series, read_header, scan_dicom_tree
from spine_core.io.dicom_write import uid_from_seed
from tests.dicom_fixtures import assert_matches_sources, bundled, copy_tree


def make_series(src: Path, folder: Path, n: int = 3, step_mm: float = 2.5) -> list[Path]:
    """``n`` copies of one image, stepped along its slice normal, numbered against position."""
    ds = pydicom.dcmread(src)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    series_uid = uid_from_seed("bundled", src.name)
    folder.mkdir(parents=True)
    out = []
    for k in range(n):
        copy = pydicom.dcmread(src)
        copy.SeriesInstanceUID = series_uid
        copy.SOPInstanceUID = uid_from_seed(series_uid, k)
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        copy.InstanceNumber = n - k
        copy.ImagePositionPatient = [f"{v:.6f}" for v in ipp + k * step_mm * normal]
        path = folder / f"copy{(k * 7 + 3) % n}"
        copy.save_as(path)
        out.append(path)
    return out


MR_ENCODINGS = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", MR_ENCODINGS)
def test_mr_small_in_every_bundled_encoding(tmp_path: Path, name: str) -> None:
    reference = pydicom.dcmread(bundled("MR_small.dcm")).pixel_array
    src = bundled(name)
    make_series(src, tmp_path / "s")
    vol = load_series(tmp_path / "s")
    assert vol.shape == (3, 64, 64)
    assert vol.array.dtype == np.int16
    for k in range(3):
        np.testing.assert_array_equal(vol.array[k], reference)
    assert vol.meta["instance_numbers"] == [3, 2, 1]
    assert vol.meta["transfer_syntaxes"] == [str(pydicom.dcmread(src).file_meta.TransferSyntaxUID)]
    assert_matches_sources(vol)


def test_ct_small_alone_is_one_slice_and_as_a_series_keeps_its_hu(tmp_path: Path) -> None:
    src = bundled("CT_small.dcm")
    with pytest.raises(SeriesGeometryError, match="has only one slice; a volume needs at least 2"):
        load_series([src])
    make_series(src, tmp_path / "s", n=4, step_mm=1.25)
    vol = load_series(tmp_path / "s")
    ds = pydicom.dcmread(src)
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array[2], hu)
    np.testing.assert_allclose(vol.affine[:3, 0], [0, 0, 1.25], atol=1e-5)
    assert_matches_sources(vol)


def test_lossy_jpeg2000_ct_matches_pydicom_decoding(tmp_path: Path) -> None:
    make_series(bundled("693_J2KI.dcm"), tmp_path / "s", n=2)
    vol = load_series(tmp_path / "s")
    assert vol.shape == (2, 512, 512)
    assert_matches_sources(vol)


def test_deflated_secondary_capture_with_added_geometry(tmp_path: Path) -> None:
    src = bundled("image_dfl.dcm")
    ds = pydicom.dcmread(src)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing = [0.5, 0.5]
    prepared = tmp_path / "dfl.dcm"
    ds.save_as(prepared)
    make_series(prepared, tmp_path / "s", n=2)
    assert str(read_header(tmp_path / "s" / "copy0").transfer_syntax) == "1.2.840.10008.1.2.1.99"
    vol = load_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array)
    assert vol.array.dtype == np.int16  # 8-bit unsigned, no rescale: fits int16 exactly


def test_non_images_and_truncated_files_are_reported(tmp_path: Path) -> None:
    for name in ("MR_truncated.dcm", "test-SR.dcm", "rtdose.dcm", "liver_1frame.dcm",
                 "rtplan.dcm", "CT_small.dcm"):
        (tmp_path / name).write_bytes(bundled(name).read_bytes())
    scan = scan_dicom_tree(tmp_path)
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert reasons["MR_truncated.dcm"].startswith("truncated — PixelData declares 8192 bytes")
    assert "structured report" in reasons["test-SR.dcm"]
    assert "RT Dose" in reasons["rtdose.dcm"]
    assert "segmentation" in reasons["liver_1frame.dcm"]
    assert reasons["rtplan.dcm"] == "not an image: RT object (RT Plan Storage)"
    assert [s.files[0].name for s in scan.series] == ["CT_small.dcm"]


def test_dicomdir_tree_of_real_series(tmp_path: Path) -> None:
    root = copy_tree(bundled("DICOMDIR").parent, tmp_path / "media")
    scan = scan_dicom_tree(root, workers=2)
    reasons = {s.path.relative_to(root).as_posix(): s.reason for s in scan.skipped}
    assert reasons["DICOMDIR"] == "DICOMDIR (a media directory, not an image)"
    assert reasons["98892001/CT2N/6293"] == "localizer (ImageType contains LOCALIZER)"
    assert "not a DICOM file" in reasons["README.txt"]

    by_files = {s.files[0].parent.name + f"/{len(s.files)}": s for s in scan.series}
    ct = by_files["CT5N/5"]
    vol = load_series(ct)
    # InstanceNumber decreases as the position rises: sorted by position, not number
    assert vol.meta["instance_numbers"] == [10, 9, 8, 7, 6]
    assert vol.meta["geometry_issues"] == []
    assert_matches_sources(vol)

    # a three-plane MR pilot is one series of three orientations: refused, never guessed
    pilot = next(s for s in scan.series if "PILOT" in s.description)
    with pytest.raises(SeriesGeometryError, match="mixes slice orientations"):
        load_series(pilot)
