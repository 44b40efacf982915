"""Vertebra masks as DICOM Segmentation objects (highdicom), and back.

Writing: a label map on a CT series' grid (array ``[slice, row, column]`` in the series' sorted
order, canonical level ids) becomes a BINARY SEG with one segment per level present, coded with
SNOMED CT (:mod:`spine_core.vertebra_codes`), each frame referencing the source CT instance it
lies on by its SOP Instance UID. The SEG keeps the source's study, frame of reference and patient;
its own UIDs come from the organisational root of the settings.

Reading: the segments are mapped back onto the referenced series, frame by frame, through the
source SOP Instance UIDs (not through re-sampling), so export -> import is voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from spine_core.errors import InputError, MaskError
from spine_core.labels import LEVEL_IDS, level_name
from spine_core.vertebra_codes import ANATOMICAL_STRUCTURE, level_of_code, vertebra_code

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MANUFACTURER = "SpineReview"


@dataclass(frozen=True)
class Algorithm:
    """Identification of the model that produced a predicted mask."""

    name: str
    version: str


@dataclass
class SegReading:
    """A SEG read back: the series it segments, and its label map on that series' grid."""

    referenced_series_uid: str
    study_uid: str
    seg_series_uid: str
    levels: list[str]
    source_sop_uids: list[str]  # referenced instances, in no particular order
    algorithm: str | None = None
    warnings: list[str] = field(default_factory=list)


def new_uid(root: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=root if root.endswith(".") else root + "."))


#: Type 2 attributes of the patient and study modules that derived objects copy from their source;
#: some archives (and synthetic studies) leave them out. Added empty (as type 2 allows) on the
#: in-memory headers only, never on the source files.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "AccessionNumber", "StudyID")


def complete_type2(ds: Dataset) -> Dataset:
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def write_seg(
    source_images: Sequence[Dataset],
    labels: npt.NDArray[np.integer[Any]],
    *,
    uid_root: str,
    series_description: str = "Vertebrae",
    algorithm: Algorithm | None = None,
    series_number: int = 901,
) -> Dataset:
    """A DICOM SEG of ``labels`` (shape ``(len(source_images), rows, columns)``, canonical level
    ids) on ``source_images`` (the CT instances in the label map's slice order).

    Raises:
        MaskError: the label map does not fit the images, or holds no vertebra.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if labels.ndim != 3 or labels.shape[0] != len(source_images):
        raise MaskError(f"mask of shape {labels.shape} does not fit {len(source_images)} source images")
    rows, cols = int(source_images[0].Rows), int(source_images[0].Columns)
    if labels.shape[1:] != (rows, cols):
        raise MaskError(f"mask slices are {labels.shape[1:]}, the images {rows}x{cols}")
    ids = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in ids if v not in LEVEL_IDS.values()]
    if unknown:
        raise MaskError(f"mask values {unknown} are not vertebra levels")
    if not ids:
        raise MaskError("the mask holds no vertebra; nothing to export")
    algorithm_id = None
    if algorithm is not None:
        algorithm_id = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, version=algorithm.version,
            family=codes.cid7162.ArtificialIntelligence)
    segments = []
    lookup = np.zeros(max(LEVEL_IDS.values()) + 1, dtype=np.uint8)
    for number, level_id_ in enumerate(ids, start=1):
        lookup[level_id_] = number
        name = level_name(level_id_)
        segments.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=vertebra_code(name),
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm_id is not None
                            else hd.seg.SegmentAlgorithmTypeValues.MANUAL),
            algorithm_identification=algorithm_id,
            tracking_uid=new_uid(uid_root),
            tracking_id=f"vertebra {name}",
        ))
    label_map = lookup[np.asarray(labels, dtype=np.int64)]
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=new_uid(uid_root),
        series_number=series_number,
        sop_instance_uid=new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="SpineReview",
        software_versions="0.1.0",
        device_serial_number="1",
        series_description=series_description[:64],
        content_label="VERTEBRAE",
        content_description=(f"{algorithm.name} {algorithm.version}" if algorithm else "vertebra levels")[:64],
        omit_empty_frames=True,
    )
    return seg


def seg_reference(path: Path | str) -> SegReading:
    """What a SEG file segments (without decoding its frames): referenced series and levels.

    Raises:
        InputError: not a SEG, or one that references no series.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - any reading failure is one message naming the file
        raise InputError(f"{path}: not a readable DICOM SEG ({type(exc).__name__}: {exc})") from None
    return _reading(seg, path)


def _reading(seg: Any, path: Path | str) -> SegReading:
    refs = seg.get("ReferencedSeriesSequence") or []
    if not refs:
        raise InputError(f"{path}: the SEG names no referenced series; it cannot be placed on an image")
    series_uid = str(refs[0].SeriesInstanceUID)
    levels, warnings = _segment_levels(seg)
    sops = [str(item.ReferencedSOPInstanceUID) for ref in refs
            for item in ref.get("ReferencedInstanceSequence", [])]
    algorithm = None
    for desc in seg.SegmentSequence:
        algo = desc.get("SegmentationAlgorithmIdentificationSequence")
        if algo:
            algorithm = f"{algo[0].get('AlgorithmName', '')} {algo[0].get('AlgorithmVersion', '')}".strip()
    return SegReading(series_uid, str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID),
                      [lv for lv in levels.values() if lv], sops, algorithm, warnings)


def _segment_levels(seg: Any) -> tuple[dict[int, str | None], list[str]]:
    """Segment number -> level (None for a segment that is not a vertebra), and warnings."""
    levels: dict[int, str | None] = {}
    warnings: list[str] = []
    for desc in seg.SegmentSequence:
        number = int(desc.SegmentNumber)
        label = str(desc.get("SegmentLabel", ""))
        prop = desc.SegmentedPropertyTypeCodeSequence[0]
        level = level_of_code(str(prop.CodeValue), str(prop.CodingSchemeDesignator), label)
        if level is None and label.strip().upper() in {k.upper() for k in LEVEL_IDS}:
            level = next(k for k in LEVEL_IDS if k.upper() == label.strip().upper())
        if level is None:
            warnings.append(f"segment {number} ({label or prop.CodeMeaning}) is not a vertebra; "
                            "it is imported as the binary mask value of its segment number only if "
                            "no vertebra segment is present")
        levels[number] = level
    return levels, warnings


def read_seg_labels(path: Path | str, series_sop_uids: Sequence[str]) -> tuple[npt.NDArray[np.uint8], SegReading]:
    """The SEG's label map (canonical level ids) on the series whose instances, in its sorted
    order, are ``series_sop_uids``: array ``(len(series_sop_uids), rows, columns)``.

    A SEG without any vertebra segment (e.g. an organ) is kept as a binary mask: its segment
    numbers become the values (1, 2...), and the warning says so.

    Raises:
        InputError: the SEG references instances that are not in the series.
    """
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    reading = _reading(seg, path)
    levels, _ = _segment_levels(seg)
    known = set(series_sop_uids)
    foreign = [uid for uid in reading.source_sop_uids if uid not in known]
    if foreign:
        raise InputError(f"{path}: the SEG references {len(foreign)} instance(s) that are not in series "
                         f"{reading.referenced_series_uid} as imported (first {foreign[0]}); re-import the "
                         "series or check that the SEG belongs to it")
    numbers = sorted(levels)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(series_sop_uids), segment_numbers=numbers,
        combine_segments=True, skip_overlap_checks=True, ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True)
    lookup = np.zeros(max(numbers) + 1, dtype=np.uint8)
    any_vertebra = any(levels.values())
    for number, level in levels.items():
        if level is not None:
            lookup[number] = LEVEL_IDS[level]
        elif not any_vertebra:
            lookup[number] = number
    return lookup[np.asarray(pixels, dtype=np.int64)], reading
