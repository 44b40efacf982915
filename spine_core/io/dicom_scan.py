"""Header pass over DICOM files: what each file is, which series it belongs to, what is left out.

:func:`scan_dicom_tree` walks a folder tree of any nesting and any file names (no extension,
``.dcm``, mixed), reads each file's header only (``pydicom.dcmread(stop_before_pixels=True,
specific_tags=HEADER_TAGS)``), and groups images by StudyInstanceUID / SeriesInstanceUID.
Every file it leaves out is reported with a reason, never raised: not DICOM, truncated,
unreadable, no pixel data (SR, presentation states, KO...), not an image (SEG, RT Dose...),
DICOMDIR, localizer/scout, a second copy of an image already found (same SOPInstanceUID).
Truncation is detected from the pixel data element itself (declared length vs file size; walking
the fragments of encapsulated data), without reading pixel values.

The header records keep what the pixel pass needs, including the byte offset of native
little-endian pixel data, so :mod:`spine_core.io.dicom_pixels` can read it without re-parsing.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID

from spine_core.errors import DicomError, NotDicomError
from spine_core.io.dicom_geometry import format_orientation, orientation_groups
from spine_core.io.uids import MAX_UID_LENGTH, is_uid

#: A series's main orientation must hold at least this share of its files for files with another
#: orientation to be dropped as scouts; below it the series is "mixed orientations".
LOCALIZER_MAJORITY = 0.75

_EXPLICIT_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"}
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: SOP classes that carry pixel data but are not image series we read as a CT/MR volume.
_NOT_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation object, not an image (read it as a mask)",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose grid, not an image",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
}
_NOT_IMAGE_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.481.": "RT object",
}

#: Top-level tags the header pass reads (everything else is skipped unparsed).
HEADER_TAGS: tuple[str, ...] = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "SeriesDescription", "SeriesNumber", "StudyDescription", "StudyDate", "PatientID",
    "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "FrameOfReferenceUID",
    "InstanceNumber", "AcquisitionNumber", "ImageType", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "GantryDetectorTilt",
    "ConvolutionKernel", "KVP", "Rows", "Columns", "NumberOfFrames", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
)
_TAG_KEYWORDS = {int(Tag(kw)): kw for kw in HEADER_TAGS}
_TAG_VRS = {t: dictionary_VR(t) for t in _TAG_KEYWORDS}
_HEADER_TAG_LIST = [Tag(t) for t in _TAG_KEYWORDS]
_TEXT_VRS = {"AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"}
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}

#: Descriptive tags copied (as str/float) into FileHeader.tags and Volume.meta.
_DESCRIPTIVE = {
    "SeriesDescription": "series_description", "SeriesNumber": "series_number",
    "StudyDescription": "study_description", "StudyDate": "study_date",
    "PatientID": "patient_id", "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model", "BodyPartExamined": "body_part",
    "FrameOfReferenceUID": "frame_of_reference_uid", "SliceThickness": "slice_thickness",
    "GantryDetectorTilt": "gantry_detector_tilt", "ConvolutionKernel": "convolution_kernel",
    "KVP": "kvp", "RescaleType": "rescale_type", "WindowCenter": "window_center",
    "WindowWidth": "window_width",
}

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------
# Header records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameGeometry:
    """Plane and value transform of one frame (a single-frame file has one)."""

    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True)
class FileHeader:
    """What the header pass learnt about one DICOM file."""

    path: Path
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    transfer_syntax: str
    instance_number: int | None = None
    acquisition_number: int | None = None
    image_type: tuple[str, ...] = ()
    rows: int = 0
    columns: int = 0
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    samples_per_pixel: int = 1
    photometric: str = ""
    has_pixels: bool = False
    frames: tuple[FrameGeometry, ...] = ()
    #: Byte offset/length of native little-endian PixelData (None: decode with pydicom).
    pixel_offset: int | None = None
    pixel_length: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class_uid).name if self.sop_class_uid else "unknown SOP class"


@dataclass
class SeriesHeaders:
    """The image files of one series, as found by the header pass."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    patient_id: str
    headers: list[FileHeader]

    @property
    def files(self) -> list[Path]:
        return [h.path for h in self.headers]

    @property
    def n_frames(self) -> int:
        return sum(h.n_frames for h in self.headers)


#: Why a file was left out, for code: the file cannot be used at all ("not_dicom", "unreadable":
#: truncated, damaged), or it is fine but not part of an image volume ("not_image", "localizer",
#: "duplicate": a second copy of an image already found).
SkipKind = Literal["not_dicom", "unreadable", "not_image", "localizer", "duplicate"]


@dataclass(frozen=True)
class SkippedFile:
    """A file the scan left out, and why (``reason`` is a sentence meant for people)."""

    path: Path
    reason: str
    kind: SkipKind = "unreadable"

    @property
    def is_error(self) -> bool:
        """True when the file itself is broken or not DICOM (rather than merely not an image)."""
        return self.kind in ("not_dicom", "unreadable")


@dataclass
class DicomScan:
    """Result of :func:`scan_dicom_tree`: image series plus every file left out."""

    series: list[SeriesHeaders]
    skipped: list[SkippedFile]

    def get(self, series_uid: str) -> SeriesHeaders:
        """The series with this SeriesInstanceUID (KeyError naming the known ones)."""
        for s in self.series:
            if s.series_uid == series_uid:
                return s
        known = ", ".join(s.series_uid for s in self.series) or "none"
        raise KeyError(f"series {series_uid} is not in this scan (found: {known})")


# --------------------------------------------------------------------------------------------
# Header pass
# --------------------------------------------------------------------------------------------


def read_header(path: Path) -> FileHeader:
    """Read one file's header (no pixel values).

    Raises:
        NotDicomError: the file is not DICOM.
        DicomError: the file is DICOM but unreadable or truncated (the message says which).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            ds = _dcmread_header(fp, path)
            stop_at = fp.tell()
            pixel = _locate_pixel_data(fp, ds, stop_at, size, path)
    except (NotDicomError, DicomError):
        raise
    except OSError as exc:
        raise DicomError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # pydicom raises many kinds on damaged headers
        raise DicomError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    return _header_from_dataset(path, ds, *pixel)


#: The two letters of every DICOM value representation (VR), as written in explicit-VR files.
_VR_CODES = frozenset(v.value.encode("ascii") for v in pydicom.valuerep.VR if len(v.value) == 2)


def looks_like_raw_dataset(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts like a DICOM data set written without the
    Part 10 preamble (ACR-NEMA style, or a preamble stripped by some tool): a first element of
    group 0000, 0002 or 0008 in either byte order, followed by a VR's two letters (explicit VR) or
    by a plausible value length (implicit VR, little endian: even, 4 for a group length, else
    1 to 65534 bytes); a file of zeros is none."""
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(f"{order}HH", head[:4])
        if group not in (0x0000, 0x0002, 0x0008):
            continue
        if head[4:6] in _VR_CODES:
            return True
        length = struct.unpack("<I", head[4:8])[0]
        if order == "<" and element < 0x1000 and length % 2 == 0 and (
                length == 4 if element == 0 else 0 < length < 1 << 16):  # group length: a UL
            return True
    return False


def _dcmread_header(fp: Any, path: Path) -> Dataset:
    head = fp.read(132)
    fp.seek(0)
    if len(head) == 132 and head[128:132] == b"DICM":
        return pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAG_LIST)
    # No Part 10 preamble: accept only what looks like a raw dataset (ACR-NEMA style, group
    # 0000/0002/0008 first), so arbitrary files are not "parsed" into garbage.
    if len(head) < 8 or not ({struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]}
                             & {0x0000, 0x0002, 0x0008}):
        raise NotDicomError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)")
    try:
        ds = pydicom.dcmread(
            fp, stop_before_pixels=True, specific_tags=_HEADER_TAG_LIST, force=True
        )
    except Exception as exc:
        raise NotDicomError(f"{path}: not a DICOM file ({exc})") from exc
    if not ds.get("SeriesInstanceUID") or not ds.get("SOPInstanceUID"):
        raise NotDicomError(
            f"{path}: not a DICOM file (no 'DICM' marker and no readable image identifiers)"
        )
    return ds


def _locate_pixel_data(
    fp: Any, ds: Dataset, stop_at: int, size: int, path: Path
) -> tuple[bool, int | None, int | None]:
    """(has pixel data, native value offset or None, value length or None); checks truncation.

    After ``stop_before_pixels`` pydicom leaves the file positioned at the PixelData element.
    """
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # The dataset was inflated in memory: read it whole to see whether pixels exist.
        fp.seek(0)
        full = pydicom.dcmread(fp)
        return "PixelData" in full, None, None
    implicit, little = ds.original_encoding
    fp.seek(stop_at)
    head = fp.read(12)
    if len(head) < 8:
        return False, None, None
    endian = "<" if little is not False else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) in ((0x7FE0, 0x0008), (0x7FE0, 0x0009)):
        raise DicomError(f"{path}: float pixel data is not supported for image series")
    if (group, elem) != (0x7FE0, 0x0010):
        return False, None, None
    if implicit:
        length, header_len = struct.unpack(endian + "I", head[4:8])[0], 8
    elif head[4:6] in _EXPLICIT_LONG_VRS:
        if len(head) < 12:
            raise DicomError(f"{path}: truncated inside the PixelData element header")
        length, header_len = struct.unpack(endian + "I", head[8:12])[0], 12
    else:
        length, header_len = struct.unpack(endian + "H", head[6:8])[0], 8
    offset = stop_at + header_len
    if length == 0xFFFFFFFF:
        _check_fragments(fp, offset, size, endian, path)
        return True, None, None
    if offset + length > size:
        raise DicomError(
            f"{path}: truncated — PixelData declares {length} bytes but only "
            f"{max(0, size - offset)} follow; re-copy or re-export the file"
        )
    native_le = little is not False and (ts in NATIVE_LE or not ts)
    return True, (offset if native_le else None), length


def _check_fragments(fp: Any, offset: int, size: int, endian: str, path: Path) -> None:
    """Walk the items of encapsulated pixel data (a few seeks) to detect truncation."""
    pos = offset
    while True:
        fp.seek(pos)
        item = fp.read(8)
        if len(item) < 8:
            raise DicomError(
                f"{path}: truncated — encapsulated pixel data ends before its sequence "
                "delimiter; re-copy or re-export the file"
            )
        group, elem, length = struct.unpack(endian + "HHI", item)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise DicomError(f"{path}: damaged encapsulated pixel data at byte {pos}")
        pos += 8 + length
        if pos > size:
            raise DicomError(
                f"{path}: truncated — a pixel data fragment runs past the end of the file; "
                "re-copy or re-export the file"
            )


@overload
def _floats(value: Any, n: Literal[2]) -> tuple[float, float] | None: ...
@overload
def _floats(value: Any, n: Literal[3]) -> tuple[float, float, float] | None: ...
@overload
def _floats(value: Any, n: Literal[6]) -> tuple[float, float, float, float, float, float] | None: ...
def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    """``n`` floats (a tuple of exactly that length), or None when missing or malformed."""
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _float(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _macro(item: Dataset | None, shared: Dataset | None, seq: str) -> Dataset | None:
    """First item of functional group ``seq`` from the per-frame item, else the shared one."""
    for source in (item, shared):
        if source is not None and seq in source and len(source[seq].value):
            return source[seq].value[0]
    return None


def _frames(ds: dict[str, Any]) -> tuple[FrameGeometry, ...]:
    """Per-frame geometry: enhanced multi-frame functional groups, else the classic tags."""
    n = _int(ds.get("NumberOfFrames")) or 1
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per_frame is None and shared is None:
        # A classic multi-frame image has one position for all frames: no per-frame geometry.
        frame = FrameGeometry(
            _floats(ds.get("ImagePositionPatient"), 3) if n == 1 else None,
            _floats(ds.get("ImageOrientationPatient"), 6),
            _floats(ds.get("PixelSpacing"), 2),
            _float(ds.get("RescaleSlope"), 1.0),
            _float(ds.get("RescaleIntercept"), 0.0),
        )
        return tuple(frame for _ in range(n))
    frames = []
    for i in range(n):
        item = per_frame[i] if per_frame is not None and i < len(per_frame) else None
        pos = _macro(item, shared, "PlanePositionSequence")
        ori = _macro(item, shared, "PlaneOrientationSequence")
        pix = _macro(item, shared, "PixelMeasuresSequence")
        val = _macro(item, shared, "PixelValueTransformationSequence")
        frames.append(
            FrameGeometry(
                _floats(pos.get("ImagePositionPatient") if pos else None, 3),
                _floats(ori.get("ImageOrientationPatient") if ori else None, 6),
                _floats(pix.get("PixelSpacing") if pix else None, 2),
                _float(val.get("RescaleSlope") if val else ds.get("RescaleSlope"), 1.0),
                _float(val.get("RescaleIntercept") if val else ds.get("RescaleIntercept"), 0.0),
            )
        )
    return tuple(frames)


def _tag_value(value: Any) -> Any:
    """A JSON-friendly copy of a descriptive tag value (numbers stay numbers)."""
    if isinstance(value, (int, float)):  # IS and DSfloat are int/float subclasses
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, (MultiValue, list)):
        return [_tag_value(v) for v in value]
    return str(value)


def _values(ds: Dataset) -> dict[str, Any]:
    """Keyword -> value of the header tags, each converted once.

    Numbers, UIDs and codes (DS, IS, UI, CS, DA, TM, US...) are decoded here straight from the raw
    bytes, which is several times faster than pydicom's validating conversion; free text (whose
    character set matters) and sequences go through pydicom. A value this shortcut cannot parse
    also falls back to pydicom, so the result is what ``ds.get(keyword)`` would give, with lists
    for multiple values.
    """
    little = ds.original_encoding[1] is not False
    out: dict[str, Any] = {}
    for tag in ds.keys():
        keyword = _TAG_KEYWORDS.get(int(tag))
        if keyword is None:
            continue
        raw = ds.get_item(tag)
        value = raw.value if raw is not None else None
        if isinstance(raw, RawDataElement) and isinstance(value, bytes):
            vr = raw.VR or _TAG_VRS[int(tag)]
            try:
                out[keyword] = _raw_value(value, vr, little)
                continue
            except (ValueError, struct.error, KeyError):
                pass
        out[keyword] = ds[tag].value
    return out


def _raw_value(value: bytes, vr: str, little: bool) -> Any:
    """Decode a numeric/code value from raw bytes (KeyError: not a VR handled here)."""
    if vr in _BINARY_VRS:
        fmt = _BINARY_VRS[vr]
        count = len(value) // struct.calcsize(fmt)
        numbers = struct.unpack(("<" if little else ">") + fmt * count, value)
        return numbers[0] if count == 1 else list(numbers)
    if vr not in _TEXT_VRS:
        raise KeyError(vr)
    text = value.decode("ascii").strip(" \x00")
    if not text:
        return ""
    parts = [p.strip(" \x00") for p in text.split("\\")]
    if vr == "DS":
        floats = [float(p) for p in parts]
        return floats[0] if len(floats) == 1 else floats
    if vr == "IS":
        ints = [int(p) for p in parts]
        return ints[0] if len(ints) == 1 else ints
    return parts[0] if len(parts) == 1 else parts


def _header_from_dataset(
    path: Path, dataset: Dataset, has_pixels: bool, offset: int | None, length: int | None
) -> FileHeader:
    meta = getattr(dataset, "file_meta", None) or {}
    ts = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    if not ts:
        implicit, little = dataset.original_encoding
        ts = (pydicom.uid.ImplicitVRLittleEndian if implicit else
              pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
    ds = _values(dataset)
    sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    image_type = ds.get("ImageType")
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    tags = {key: _tag_value(ds.get(kw)) for kw, key in _DESCRIPTIVE.items()
            if ds.get(kw) not in (None, "")}
    frames = _frames(ds) if has_pixels else ()
    return FileHeader(
        path=path,
        sop_class_uid=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        transfer_syntax=ts,
        instance_number=_int(ds.get("InstanceNumber")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        image_type=tuple(str(t).upper() for t in (image_type or ())),
        rows=_int(ds.get("Rows")) or 0,
        columns=_int(ds.get("Columns")) or 0,
        bits_allocated=_int(ds.get("BitsAllocated")) or 0,
        bits_stored=_int(ds.get("BitsStored")) or _int(ds.get("BitsAllocated")) or 0,
        pixel_representation=_int(ds.get("PixelRepresentation")) or 0,
        samples_per_pixel=_int(ds.get("SamplesPerPixel")) or 1,
        photometric=str(ds.get("PhotometricInterpretation", "")),
        has_pixels=has_pixels,
        frames=frames,
        pixel_offset=offset,
        pixel_length=length,
        tags=tags,
    )


def _non_image_reason(h: FileHeader, limits: SizeLimits | None = None) -> str | None:
    """Why ``h`` is not part of an image series, or None when it is."""
    if h.sop_class_uid == _DICOMDIR_CLASS:
        return "DICOMDIR (a media directory, not an image)"
    if h.sop_class_uid in _NOT_IMAGE_CLASSES:
        return f"not an image: {_NOT_IMAGE_CLASSES[h.sop_class_uid]} ({h.sop_class_name})"
    for prefix, what in _NOT_IMAGE_PREFIXES.items():
        if h.sop_class_uid.startswith(prefix):
            return f"not an image: {what} ({h.sop_class_name})"
    if not h.has_pixels:
        hint = " — the file may be truncated" if "Image Storage" in h.sop_class_name else ""
        return f"no pixel data ({h.sop_class_name}, modality {h.modality or '?'}){hint}"
    if not h.series_uid or not h.study_uid:
        return "image without StudyInstanceUID/SeriesInstanceUID; cannot be grouped into a series"
    for what, uid in (("StudyInstanceUID", h.study_uid), ("SeriesInstanceUID", h.series_uid)):
        if not is_uid(uid):
            shown = uid if len(uid) <= 80 else uid[:77] + "..."
            return (f"{what} {shown!r} is not a DICOM UID (at most {MAX_UID_LENGTH} characters, "
                    "digits and dots); fix or remove the file")
    return _implausible_reason(h, limits or SizeLimits())


@dataclass(frozen=True)
class SizeLimits:
    """How large an untrusted image may claim to be (``Settings.max_image_side``, ``max_frames``,
    ``max_series_mb``; environment ``SPINE_MAX_IMAGE_SIDE`` ...)."""

    max_side: int = 16384
    max_frames: int = 10000
    max_series_mb: int = 8192

    @classmethod
    def from_settings(cls, settings: Any) -> SizeLimits:
        return cls(int(settings.max_image_side), int(settings.max_frames),
                   int(settings.max_series_mb))


#: Largest image side accepted by default (rows, columns), in pixels.
MAX_SIDE = SizeLimits.max_side


def _implausible_reason(h: FileHeader, limits: SizeLimits = SizeLimits()) -> str | None:
    """Why an image header cannot describe real data (sizes against the bytes present and the
    ``limits``, geometry that is not finite, zero or singular), or None. Checked before any pixel
    is decoded."""
    side = limits.max_side
    if not (0 < h.rows <= side and 0 < h.columns <= side):
        return (f"Rows×Columns {h.rows}×{h.columns} is outside 1..{side} (SPINE_MAX_IMAGE_SIDE); "
                "the header is corrupt — re-export the file, or raise the limit if the image is "
                "real")
    if h.n_frames > limits.max_frames:
        return (f"NumberOfFrames {h.n_frames} is more than {limits.max_frames} "
                "(SPINE_MAX_FRAMES); the header is corrupt, or raise the limit")
    if h.pixel_length is not None and h.bits_allocated:
        need = h.rows * h.columns * max(1, h.samples_per_pixel) * h.bits_allocated // 8 * max(1, h.n_frames)
        if h.pixel_length < need:
            return (f"pixel data holds {h.pixel_length} bytes but Rows×Columns×frames "
                    f"{h.rows}×{h.columns}×{max(1, h.n_frames)} need {need}: the file is truncated "
                    "or its header is wrong")
    for n, frame in enumerate(h.frames):
        where = f" (frame {n + 1})" if h.n_frames > 1 else ""
        # a projection image (no position: a radiograph) may say PixelSpacing 0: its reader
        # (spine_core.io.radiograph) then measures in pixels rather than refusing the file
        if frame.pixel_spacing is not None and frame.position is not None and not all(
                math.isfinite(v) and v > 0 for v in frame.pixel_spacing):
            return f"PixelSpacing {list(frame.pixel_spacing)}{where} must be two positive numbers"
        if frame.position is not None and not all(math.isfinite(v) for v in frame.position):
            return f"ImagePositionPatient {list(frame.position)}{where} is not finite"
        if frame.orientation is not None:
            o = frame.orientation
            row, col = o[:3], o[3:]
            norm_r = math.sqrt(sum(v * v for v in row)) if all(map(math.isfinite, o)) else float("nan")
            norm_c = math.sqrt(sum(v * v for v in col)) if all(map(math.isfinite, o)) else float("nan")
            dot = sum(a * b for a, b in zip(row, col))
            if not (abs(norm_r - 1) < 0.01 and abs(norm_c - 1) < 0.01 and abs(dot) < 0.01):
                return (f"ImageOrientationPatient {list(o)}{where} is not two orthogonal unit "
                        "vectors")
    return None


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int,
         executor: Literal["thread", "process"] = "thread") -> list[R]:
    """``[fn(x) for x in items]``, on a thread or process pool when ``workers > 1``."""
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    if executor == "process":
        chunk = max(1, len(items) // (workers * 4))
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            return list(pool.map(fn, items, chunksize=chunk))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _header_or_reason(path: Path) -> FileHeader | SkippedFile:
    try:
        return read_header(path)
    except DicomError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        kind: SkipKind = "not_dicom" if isinstance(exc, NotDicomError) else "unreadable"
        return SkippedFile(path, reason[len(prefix):] if reason.startswith(prefix) else reason,
                           kind)


def iter_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (any depth, any name), sorted, symlinks not followed."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise NotDicomError(f"{root}: no such file or folder")
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / name for name in sorted(filenames))
    return [p for p in out if p.is_file()]


def scan_files(
    paths: Iterable[Path | str],
    workers: int = 1,
    executor: Literal["thread", "process"] = "thread",
    limits: SizeLimits = SizeLimits(),
) -> DicomScan:
    """Header pass over the given files (see :func:`scan_dicom_tree`)."""
    results = parallel_map(_header_or_reason, [Path(p) for p in paths], workers, executor)
    skipped = [r for r in results if isinstance(r, SkippedFile)]
    groups: dict[tuple[str, str], list[FileHeader]] = {}
    seen: dict[str, Path] = {}
    for r in results:
        if isinstance(r, SkippedFile):
            continue
        reason = _non_image_reason(r, limits)
        if reason:
            skipped.append(SkippedFile(r.path, reason, "not_image"))
            continue
        if r.sop_uid in seen:
            skipped.append(SkippedFile(
                r.path, f"copy of {seen[r.sop_uid]} (same SOPInstanceUID {r.sop_uid}); the "
                "first copy is used", "duplicate"))
            continue
        if r.sop_uid:
            seen[r.sop_uid] = r.path
        groups.setdefault((r.study_uid, r.series_uid), []).append(r)
    series = []
    for (study, uid), headers in groups.items():
        kept, dropped = split_localizers(headers)
        skipped.extend(dropped)
        if not kept:
            continue
        first = kept[0]
        series.append(SeriesHeaders(
            study_uid=study, series_uid=uid, modality=first.modality,
            description=str(first.tags.get("series_description", "")),
            patient_id=str(first.tags.get("patient_id", "")), headers=kept,
        ))
    series.sort(key=lambda s: (s.patient_id, s.study_uid, str(s.files[0])))
    return DicomScan(series=series, skipped=sorted(skipped, key=lambda s: str(s.path)))


def scan_dicom_tree(
    root: Path,
    workers: int = 1,
    executor: Literal["thread", "process"] = "thread",
    limits: SizeLimits = SizeLimits(),
) -> DicomScan:
    """Find the image series under ``root`` with a header-only pass.

    Args:
        root: a folder (any nesting, any file names) or a single file.
        workers: parallel header readers. Threads (the default) help on network or cold storage;
            ``executor="process"`` also spreads pydicom's parsing over CPU cores, worth it from a
            few thousand files (each process must first import pydicom).
        limits: the largest image side and frame count a header may claim (from the settings).

    Returns:
        The series, grouped by (StudyInstanceUID, SeriesInstanceUID), and every file left out with
        its reason: not DICOM, truncated, unreadable, not an image, localizer.
    """
    return scan_files(iter_files(Path(root)), workers=workers, executor=executor, limits=limits)


# --------------------------------------------------------------------------------------------
# Localizers and orientation groups
# --------------------------------------------------------------------------------------------


def split_localizers(headers: Sequence[FileHeader]) -> tuple[list[FileHeader], list[SkippedFile]]:
    """Separate localizers/scouts from the images of one series.

    A file is a localizer when its ImageType contains LOCALIZER, or when its slice orientation
    differs from the series's main orientation and that main orientation holds a clear majority
    (≥ :data:`LOCALIZER_MAJORITY` of the files). Without a clear majority nothing is dropped and
    :func:`load_series` reports the mixed orientations.
    """
    kept: list[FileHeader] = []
    dropped: list[SkippedFile] = []
    for h in headers:
        if "LOCALIZER" in h.image_type:
            dropped.append(SkippedFile(h.path, "localizer (ImageType contains LOCALIZER)",
                                       "localizer"))
        else:
            kept.append(h)
    groups = orientation_groups([h.frames[0].orientation if h.frames else None for h in kept])
    if len(groups) < 2 or groups[0][0] is None:
        return kept, dropped
    main_rep, main = groups[0]
    if len(main) < LOCALIZER_MAJORITY * len(kept):
        return kept, dropped
    main_set = set(main)
    for i, h in enumerate(kept):
        if i not in main_set:
            ori = h.frames[0].orientation if h.frames else None
            dropped.append(SkippedFile(
                h.path,
                f"localizer: slice orientation {format_orientation(ori)} differs from the "
                f"series's main orientation {format_orientation(main_rep)} "
                f"({len(main)} of {len(kept)} files)",
                "localizer",
            ))
    return [h for i, h in enumerate(kept) if i in main_set], dropped
