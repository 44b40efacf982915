"""Helpers for the DICOM reader tests: real files with a known geometry and known HU.

Everything here writes genuine DICOM files (``spine_core.io.dicom_write.write_series``, pydicom,
GDCM) into a test's ``tmp_path``; :func:`assert_matches_sources` re-reads the files with plain
pydicom, independently of the reader under test, to check positions and voxel values.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def hu_array(shape: tuple[int, int, int], seed: int = 0) -> npt.NDArray[np.int16]:
    """Random CT-like HU in [-1024, 3071], different in every voxel (catches any shuffling)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3072, size=shape).astype(np.int16)


def rotation(ax: float, ay: float, az: float) -> npt.NDArray[np.float64]:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    x, y, z = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def stack_affine(
    spacing: tuple[float, float, float] = (2.0, 0.8, 0.7),
    *,
    rot: npt.NDArray[np.float64] | None = None,
    tilt_deg: float = 0.0,
    origin: Sequence[float] = (-12.5, -30.25, 41.0),
) -> npt.NDArray[np.float64]:
    """Affine of a slice stack stepping along +normal (ascending), optionally rotated and tilted.

    Rows run along the rotated +y (column cosines), columns along the rotated +x (row cosines);
    ``tilt_deg`` shears the slice step towards the column cosines, as a tilted gantry does.
    """
    dz, dy, dx = spacing
    r = np.eye(3) if rot is None else rot
    row_cos, col_cos = r[:, 0], r[:, 1]
    normal = np.cross(row_cos, col_cos)
    aff = np.eye(4)
    aff[:3, 0] = dz * normal + dz * np.tan(np.radians(tilt_deg)) * col_cos
    aff[:3, 1] = dy * col_cos
    aff[:3, 2] = dx * row_cos
    aff[:3, 3] = origin
    return aff


def series_info(name: str, **extra: Any) -> SeriesInfo:
    """Deterministic study/series UIDs derived from ``name``."""
    return SeriesInfo(
        study_uid=uid_from_seed("test-study", name),
        series_uid=uid_from_seed("test-series", name),
        series_description=f"test {name}",
        extra=dict(extra),
    )


def write_ct(
    folder: Path, volume: Volume, name: str = "ct", *, extra: dict[str, Any] | None = None,
    part: str = "", **kwargs: Any,
) -> list[Path]:
    """``write_series`` with deterministic UIDs named after ``name``; returns paths in a0 order.

    ``part`` gives the files their own SOPInstanceUIDs, for a second batch written into the same
    series (write_series derives them from the series UID and the slice index).
    """
    paths = write_series(volume, folder, series_info(name, **(extra or {})), **kwargs)
    if part:
        for i, p in enumerate(paths):
            edit(p, SOPInstanceUID=uid_from_seed(name, part, i))
    return paths


def transcode(src: Path, dst: Path, transfer_syntax: str) -> Path:
    """Re-encode a native little-endian file in another transfer syntax (pydicom or GDCM)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax == JPEG_LOSSLESS_SV1:
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        assert reader.Read(), f"GDCM cannot read {src}"
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change(), "GDCM JPEG lossless encoding failed"
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        writer.SetFileName(str(dst))
        assert writer.Write()
        return dst
    ds = pydicom.dcmread(src)
    if transfer_syntax == ExplicitVRBigEndian:
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(dst, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    elif transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        pydicom.dcmwrite(dst, ds, implicit_vr=True, little_endian=True, force_encoding=True)
    elif transfer_syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(dst)
    else:
        ds.compress(transfer_syntax, encoding_plugin="")
        ds.save_as(dst)
    return dst


def edit(path: Path, dst: Path | None = None, **changes: Any) -> Path:
    """Rewrite ``path`` (or write ``dst``) with tags changed; a value of None deletes the tag."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    out = dst or path
    ds.save_as(out)
    return out


def truncate(path: Path, dst: Path, keep_fraction: float) -> Path:
    """Copy the first ``keep_fraction`` of ``path``'s bytes to ``dst`` (a cut-off transfer)."""
    data = path.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def write_localizer(folder: Path, name: str, size: tuple[int, int] = (24, 20)) -> Path:
    """A one-image sagittal scout in series ``name`` with ImageType ...\\LOCALIZER."""
    arr = hu_array((1, *size), seed=99)
    aff = stack_affine((1.0, 1.0, 1.0), rot=rotation(0, 90, 0))
    paths = write_ct(folder, Volume(arr, aff), name,
                     extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
                     file_name=lambda i, n: "scout", part="localizer")
    return paths[0]


def write_enhanced_ct(
    path: Path,
    volume: Volume,
    name: str,
    *,
    frame_order: Sequence[int],
    intercepts: Sequence[float],
) -> Path:
    """One Enhanced CT Image Storage file; stored frame ``f`` holds slice ``frame_order[f]``.

    Geometry lives in the functional groups as scanners write it: PixelMeasures and
    PlaneOrientation shared, PlanePosition and PixelValueTransformation per frame.
    """
    info = series_info(name)
    n, rows, cols = volume.shape
    aff, spacing = volume.affine, volume.spacing
    row_cos, col_cos = aff[:3, 2] / spacing[2], aff[:3, 1] / spacing[1]
    sop_uid = uid_from_seed(info.series_uid, "enhanced")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = info.study_uid, info.series_uid
    ds.FrameOfReferenceUID = uid_from_seed(info.study_uid, "frame")
    ds.Modality, ds.PatientID, ds.SeriesDescription = "CT", "ANON", info.series_description
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1

    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[2]:.6g}"]
    measures.SliceThickness = f"{spacing[0]:.6g}"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8g}" for v in (*row_cos, *col_cos)]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]

    stored = np.empty((n, rows, cols), dtype=np.int16)
    per_frame = []
    for f, k in enumerate(frame_order):
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6g}" for v in volume.index_to_lps((k, 0, 0))]
        transform = Dataset()
        transform.RescaleIntercept = f"{intercepts[k]:g}"
        transform.RescaleSlope = "1"
        transform.RescaleType = "HU"
        content = Dataset()
        content.InStackPositionNumber = int(k) + 1
        item = Dataset()
        item.PlanePositionSequence = [position]
        item.PixelValueTransformationSequence = [transform]
        item.FrameContentSequence = [content]
        per_frame.append(item)
        stored[f] = (np.asarray(volume.array[k], dtype=np.int32) - int(intercepts[k])).astype(np.int16)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame_info(ds: Dataset, frame: int) -> tuple[npt.NDArray[np.float64], float, float]:
    """(ImagePositionPatient, slope, intercept) of a 1-based frame, read with plain pydicom."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        item = ds.PerFrameFunctionalGroupsSequence[frame - 1]
        pos = item.PlanePositionSequence[0].ImagePositionPatient
        pvt = item.PixelValueTransformationSequence[0]
        return np.array(pos, dtype=float), float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
    return (np.array(ds.ImagePositionPatient, dtype=float), float(ds.get("RescaleSlope", 1)),
            float(ds.get("RescaleIntercept", 0)))


def _plane(ds: Dataset) -> tuple[npt.NDArray[np.float64], tuple[float, float]]:
    if "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        ps = shared.PixelMeasuresSequence[0].PixelSpacing
    else:
        iop, ps = ds.ImageOrientationPatient, ds.PixelSpacing
    return np.array(iop, dtype=float), (float(ps[0]), float(ps[1]))


def assert_matches_sources(volume: Volume, atol_mm: float = 2e-3) -> None:
    """Every slice sits at its file's ImagePositionPatient and holds its file's HU.

    Re-reads each file named in ``volume.meta["files"]`` with plain pydicom; the four corner
    voxels of each slice are checked against IPP + row/column steps from the file's own tags.
    """
    files = volume.meta["files"]
    frames = volume.meta.get("frame_numbers", [1] * len(files))
    n, rows, cols = volume.shape
    assert len(files) == n
    cache: dict[str, Dataset] = {}
    for k, (name, frame) in enumerate(zip(files, frames)):
        ds = cache.get(name) or cache.setdefault(name, pydicom.dcmread(name))
        ipp, slope, intercept = _frame_info(ds, frame)
        iop, (row_spacing, col_spacing) = _plane(ds)
        for j, i in ((0, 0), (rows - 1, 0), (0, cols - 1), (rows - 1, cols - 1)):
            expected = ipp + j * row_spacing * iop[3:] + i * col_spacing * iop[:3]
            np.testing.assert_allclose(volume.index_to_lps((k, j, i)), expected, atol=atol_mm,
                                       err_msg=f"a0={k} voxel ({j},{i}) of {name}")
        pixels = ds.pixel_array
        stored = pixels[frame - 1] if pixels.ndim == 3 else pixels
        hu = stored.astype(np.float64) * slope + intercept
        np.testing.assert_array_equal(np.asarray(volume.array[k], dtype=np.float64), hu,
                                      err_msg=f"a0={k} values of {name}")


def bundled(name: str) -> Path:
    """A file from pydicom's own test data that ships inside the package (never downloaded)."""
    from pydicom.data import get_testdata_file

    base = Path(pydicom.__file__).parent / "data" / "test_files"
    local = list(base.rglob(name))
    if not local:
        pytest.skip(f"{name} is not bundled with this pydicom (download-only test file)")
    path = get_testdata_file(name, download=False) or local[0]
    return Path(path)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def small_ct() -> Volume:
    """6×40×36 random HU on a plain axial grid (2 mm slices, 0.8×0.7 mm pixels).

    40×36 is about the smallest size OpenJPEG encodes with its default 6 resolutions.
    """
    shape = (6, 40, 36)
    return Volume(hu_array(shape), stack_affine((2.0, 0.8, 0.7)))


__all__ = [
    "ENHANCED_CT", "JPEG_LOSSLESS_SV1", "assert_matches_sources", "bundled", "copy_tree",
    "ct_affine", "edit", "hu_array", "rotation", "series_info", "small_ct", "stack_affine",
    "transcode", "truncate", "write_ct", "write_enhanced_ct", "write_localizer",
]
