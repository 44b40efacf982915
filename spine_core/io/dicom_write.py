"""Write a Volume as a real CT Image Storage series (one file per slice).

Used by the synthetic data generator and by tests that need DICOM files with a known geometry
(oblique, tilted, compressed...). The files are valid Part 10 files: File Meta, UIDs,
Image Plane and Pixel modules, rescale slope/intercept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from spine_core.volume import Volume

#: Root of the UIDs this project generates (pydicom's prefix + a project suffix).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def uid_from_seed(*parts: object) -> str:
    """A deterministic, valid DICOM UID derived from ``parts`` (same parts -> same UID)."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


@dataclass
class SeriesInfo:
    """Identifiers and descriptive tags of a written series."""

    study_uid: str
    series_uid: str
    patient_id: str = "ANON"
    patient_name: str = "Anonymous"
    study_date: str = "20220101"
    series_number: int = 1
    series_description: str = "Synthetic C-spine bone"
    manufacturer: str = "SpineReview phantom"
    extra: dict[str, object] = field(default_factory=dict)


def write_series(
    volume: Volume,
    out_dir: Path,
    info: SeriesInfo,
    *,
    instance_numbers: Sequence[int] | None = None,
    file_name: Callable[[int, int], str] = lambda index, instance: f"{instance}.dcm",
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    transfer_syntax: str | UID = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write ``volume`` (HU, axes slice/row/column, see :mod:`spine_core.volume`) as DICOM files.

    Args:
        volume: image whose axis 0 is the slice axis; affine columns 1 and 2 give the in-plane
            directions, column 0 the step between slices (any tilt is written as it is).
        out_dir: folder for the files (created).
        info: study/series identifiers.
        instance_numbers: InstanceNumber per a0 index (default 1..N); RSNA numbers superior->inferior
            in some studies and the reverse in others, so callers choose.
        file_name: name of each file from (a0 index, instance number).
        rescale_intercept, rescale_slope: stored value = (HU - intercept) / slope, as uint16/int16.
        transfer_syntax: a native syntax, or a compressed one pydicom can encode (RLE Lossless;
            JPEG-LS and JPEG 2000 when pyjpegls / pylibjpeg-openjpeg are installed).

    Returns:
        The written paths, in a0 order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    n = volume.shape[0]
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, n + 1))
    if len(numbers) != n:
        raise ValueError(f"{len(numbers)} instance numbers for {n} slices")

    aff = volume.affine
    spacing = volume.spacing
    row_cos = aff[:3, 2] / spacing[2]
    col_cos = aff[:3, 1] / spacing[1]
    stored = np.round((np.asarray(volume.array, dtype=np.float32) - rescale_intercept) / rescale_slope)
    signed = bool(stored.min(initial=0) < 0)
    dtype = np.int16 if signed else np.uint16
    info_lim = np.iinfo(dtype)
    stored = np.clip(stored, info_lim.min, info_lim.max).astype(dtype)
    normal = np.cross(row_cos, col_cos)
    thickness = float(abs(np.dot(aff[:3, 0], normal)))
    now = dt.datetime(2022, 1, 1, 12, 0, 0)
    frame_uid = uid_from_seed(info.study_uid, "frame")
    ts = UID(transfer_syntax)

    paths: list[Path] = []
    for k in range(n):
        sop_uid = uid_from_seed(info.series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = info.study_uid
        ds.SeriesInstanceUID = info.series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientID = info.patient_id
        ds.PatientName = info.patient_name
        ds.StudyDate = info.study_date
        ds.SeriesDate = info.study_date
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = "120000"
        ds.Manufacturer = info.manufacturer
        ds.SeriesNumber = info.series_number
        ds.SeriesDescription = info.series_description
        ds.InstanceNumber = int(numbers[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6g}" for v in volume.index_to_lps((k, 0, 0))]
        ds.ImageOrientationPatient = [f"{v:.8g}" for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[2]:.6g}"]
        ds.SliceThickness = f"{thickness:.6g}"
        ds.SliceLocation = f"{float(np.dot(volume.index_to_lps((k, 0, 0)), normal)):.6g}"
        ds.KVP = "120"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        ds.RescaleSlope = f"{rescale_slope:g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = "400"
        ds.WindowWidth = "1800"
        for keyword, value in info.extra.items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        if ts != ExplicitVRLittleEndian:
            ds.compress(ts, encoding_plugin="")
        path = out_dir / file_name(k, int(numbers[k]))
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ct_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    origin: npt.ArrayLike | None = None,
    superior_first: bool = False,
) -> npt.NDArray[np.float64]:
    """Affine of a plain axial stack: rows towards Posterior, columns towards Left.

    Args:
        shape: (slices, rows, columns).
        spacing: (slice step, row spacing, column spacing) in mm.
        origin: LPS position of voxel (0, 0, 0); default centres the field of view on x/y = 0.
        superior_first: slice 0 is the most superior (steps towards Inferior) when True.
    """
    dz, dy, dx = spacing
    aff = np.eye(4)
    aff[:3, 0] = (0.0, 0.0, -dz if superior_first else dz)
    aff[:3, 1] = (0.0, dy, 0.0)
    aff[:3, 2] = (dx, 0.0, 0.0)
    if origin is None:
        origin = (-dx * (shape[2] - 1) / 2, -dy * (shape[1] - 1) / 2, 0.0)
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff
