"""Readers' work and final labels as DICOM TID 1500 Measurement Reports (highdicom), and back.

One report per reader, whose observer context names the reader (person observer, login name =
the account), carrying:

* each fracture box as a planar ROI group (TID 1410): a closed POLYLINE SCOORD in pixel
  coordinates on the referenced axial CT instance, finding type "Fracture of bone", finding site =
  the vertebra (SNOMED CT), tracking identifier ``box <n> <level>``;
* each per-level call and Genant grade as a qualitative evaluation group (TID 1501) with the
  vertebra as finding site.

One more report carries the final labels (observer = this application as a device), each with its
provenance (source, policy, who decided, when) as a comment.

Reading back (:func:`read_sr`) gives the same plain data, so export -> import is identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from spine_core.errors import InputError
from spine_core.io.dicom_seg import MANUFACTURER, new_uid
from spine_core.vertebra_codes import (
    ABSENT,
    CALL_CODES,
    FINAL_LABEL,
    FRACTURE,
    GENANT_GRADE,
    LOCAL,
    PRESENT,
    call_of_code,
    genant_code,
    level_of_code,
    vertebra_code,
)

COMMENT = Code("121106", "DCM", "Comment")
DEVICE_NAME = "SpineReview"


@dataclass(frozen=True)
class SrBox:
    """A reader's box on one axial slice, in pixels of that slice (x: column, y: row)."""

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    level: str | None = None


@dataclass
class ReaderWork:
    reader: str  # account name
    boxes: list[SrBox] = field(default_factory=list)
    calls: dict[str, str] = field(default_factory=dict)  # level -> fractured | not_fractured | unsure
    grades: dict[str, int] = field(default_factory=dict)  # level -> Genant grade 0-3


@dataclass(frozen=True)
class FinalLabel:
    level: str
    fractured: bool
    provenance: str  # "source=decision; policy=committee; by=chair; at=2026-..."


@dataclass
class SrReading:
    study_uid: str
    referenced_series_uid: str
    reader: ReaderWork | None = None  # a reader's report
    final: list[FinalLabel] = field(default_factory=list)  # the final labels' report
    is_final: bool = False


def _tracking(identifier: str, uid_root: str) -> Any:
    import highdicom as hd

    return hd.sr.TrackingIdentifier(uid=new_uid(uid_root), identifier=identifier)


def _site(level: str) -> Any:
    import highdicom as hd

    return hd.sr.FindingSite(anatomic_location=vertebra_code(level))


def _document(source_images: Sequence[Dataset], groups: list[Any], observer: Any,
              uid_root: str, series_uid: str, instance_number: int) -> Dataset:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    report = hd.sr.MeasurementReport(
        observation_context=observer,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(source_images),
        content=report,
        series_instance_uid=series_uid,
        series_number=902,
        sop_instance_uid=new_uid(uid_root),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="SpineReview readers and final labels",
    )
    return sr


def write_reader_sr(source_images: Sequence[Dataset], work: ReaderWork, *, uid_root: str, series_uid: str,
                    instance_number: int) -> Dataset:
    """A TID 1500 report of one reader's boxes, calls and grades (``source_images``: the series'
    instances in slice order; a box's ``slice_index`` picks its instance)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    groups: list[Any] = []
    for n, box in enumerate(work.boxes, start=1):
        if not 0 <= box.slice_index < len(source_images):
            raise InputError(f"box {n} of {work.reader} lies on slice {box.slice_index}, outside the series")
        x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source_images[box.slice_index]),
        )
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            # the level closes the identifier: T13 and L6 share SNOMED CT's generic "Vertebra"
            tracking_identifier=_tracking(f"box {n} {box.level}" if box.level else f"box {n}", uid_root),
            referenced_region=region,
            finding_type=FRACTURE,
            finding_sites=[_site(box.level)] if box.level else None,
        ))
    for level in sorted(set(work.calls) | set(work.grades)):
        evaluations = []
        if level in work.calls:
            evaluations.append(hd.sr.QualitativeEvaluation(FRACTURE, CALL_CODES[work.calls[level]]))
        if level in work.grades:
            evaluations.append(hd.sr.QualitativeEvaluation(GENANT_GRADE, genant_code(work.grades[level])))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(f"level {level}", uid_root),
            finding_sites=[_site(level)], qualitative_evaluations=evaluations))
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=work.reader if "^" in work.reader else f"{work.reader}^", login_name=work.reader))
    return _document(source_images, groups, hd.sr.ObservationContext(observer_person_context=person),
                     uid_root, series_uid, instance_number)


def write_final_sr(source_images: Sequence[Dataset], labels: Sequence[FinalLabel], *, uid_root: str,
                   series_uid: str, instance_number: int) -> Dataset:
    """A TID 1500 report of the final labels, each with its provenance (observer: this application)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    groups: list[Any] = []
    for label in labels:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(f"final {label.level}", uid_root),
            finding_sites=[_site(label.level)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(FINAL_LABEL, PRESENT if label.fractured else ABSENT)])
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=COMMENT, value=label.provenance[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
        groups.append(group)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=new_uid(uid_root), name=DEVICE_NAME))
    return _document(source_images, groups, hd.sr.ObservationContext(observer_device_context=device),
                     uid_root, series_uid, instance_number)


# --- reading ---------------------------------------------------------------------------------------


def _code_of(item: Any) -> tuple[str, str]:
    concept = item.ConceptCodeSequence[0]
    return str(concept.CodeValue), str(concept.CodingSchemeDesignator)


def _name_of(item: Any) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return str(concept.CodeValue), str(concept.CodingSchemeDesignator)


def _walk(items: Any) -> list[Any]:
    out = []
    for item in items or []:
        out.append(item)
        out.extend(_walk(item.get("ContentSequence")))
    return out


def read_sr_reference(path: Path | str) -> tuple[str, str]:
    """(Study Instance UID, the series its evidence references) of an SR file, headers only.

    Raises:
        InputError: not readable, or no referenced series.
    """
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - one message naming the file
        raise InputError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    series_uids = [str(series.SeriesInstanceUID)
                   for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []
                   for series in study.get("ReferencedSeriesSequence", [])]
    if not series_uids:
        raise InputError(f"{path}: the SR references no image series; it cannot be placed on a study")
    return str(ds.StudyInstanceUID), series_uids[0]


def read_sr(path: Path | str, series_sop_uids: Sequence[str] | None = None) -> SrReading:
    """A SpineReview TID 1500 report read back. ``series_sop_uids`` (the referenced series'
    instances in slice order) turn each box's referenced instance into its slice index.

    Raises:
        InputError: not a TID 1500 report, or a box on an instance outside the series.
    """
    import highdicom as hd

    try:
        sr = hd.sr.srread(str(path))
    except Exception as exc:  # noqa: BLE001 - any reading failure is one message naming the file
        raise InputError(f"{path}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from None
    title = sr.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in sr else "none"
    if str(title) != "126000":
        raise InputError(f"{path}: not a TID 1500 Measurement Report (title {title}); only those are imported")
    _, series_uid = read_sr_reference(path)
    reading = SrReading(str(sr.StudyInstanceUID), series_uid)
    index = {uid: i for i, uid in enumerate(series_sop_uids or [])}
    login = ""
    device = False
    for item in sr.ContentSequence:
        name = _name_of(item)
        if name == ("128774", "DCM"):  # Person Observer's Login Name
            login = str(item.TextValue)
        elif name == ("121008", "DCM") and not login:  # Person Observer Name
            login = str(item.PersonName)
        elif name == ("121012", "DCM"):  # Device Observer Name
            device = True
    if device and not login:
        reading.is_final = True
    else:
        reading.reader = ReaderWork(login)
    content: Any = sr.content
    for group in content.get_planar_roi_measurement_groups():
        level = _group_level(group)
        region = group.roi
        if region is None or reading.reader is None:
            continue
        sop = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        if sop not in index:
            raise InputError(f"{path}: a box lies on instance {sop}, not in series {series_uid} as imported")
        points = np.asarray(region.value, dtype=float)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        # SCOORD data are 32-bit floats: round to a thousandth of a pixel, far below what a reader
        # can draw, so the boxes come back as they were stored (to 1e-3 px).
        reading.reader.boxes.append(SrBox(index[sop], _px(x0), _px(y0), _px(x1 - x0), _px(y1 - y0), level))
    for group in content.get_image_measurement_groups():
        level = _group_level(group)
        if level is None:
            continue
        items = _walk(group[0].ContentSequence)
        for item in items:
            if item.ValueType != "CODE":
                continue
            name, value = _name_of(item), _code_of(item)
            if reading.reader is not None and name == (FRACTURE.value, FRACTURE.scheme_designator):
                call = call_of_code(*value)
                if call:
                    reading.reader.calls[level] = call
            elif reading.reader is not None and name == (GENANT_GRADE.value, LOCAL) and value[0].startswith("GENANT"):
                reading.reader.grades[level] = int(value[0][len("GENANT"):])
            elif reading.is_final and name == (FINAL_LABEL.value, LOCAL):
                provenance = next((str(i.TextValue) for i in items if i.ValueType == "TEXT"
                                   and _name_of(i) == (COMMENT.value, COMMENT.scheme_designator)), "")
                reading.final.append(FinalLabel(level, value == (PRESENT.value, PRESENT.scheme_designator),
                                                provenance))
    return reading


def _px(value: float) -> float:
    return round(float(value), 3) + 0.0


def _group_level(group: Any) -> str | None:
    for site in group.finding_sites:
        code = site.value
        label = ""
        return level_of_code(str(code.value), str(code.scheme_designator), label) or _generic_level(group)
    return None


def _generic_level(group: Any) -> str | None:
    """For L6 / T13 (generic 'Vertebra' code): the level named in the tracking identifier."""
    ident = str(group.tracking_identifier or "")
    last = ident.split()[-1] if ident.split() else ""
    from spine_core.labels import LEVEL_IDS

    return last if last in LEVEL_IDS else None
