"""`spine import FILE.dcm` for DICOM SEG and our TID 1500 SR: results back onto imported studies.

* SEG: placed on the series it references (found by Series Instance UID among the imported
  series, else "source series not found"), frame by frame through the source SOP Instance UIDs
  (read from the series' files), stored as a NIfTI label map under ``<data_dir>/masks`` and
  recorded as the series' vertebra mask (its dataset mask if it has none, else an extra mask
  with source ``seg``).
* SR: a reader's report becomes that reader's boxes, calls and Genant grades (the account must
  exist, as for a readers' CSV); the final labels' report is read but not imported (final labels
  come from this study's own adjudication), and says so.

Re-importing the same object adds nothing twice.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import InputError, NotFound

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
                  "1.2.840.10008.5.1.4.1.1.88.34"}


@dataclass
class ObjectImport:
    kind: str  # seg | sr
    study_uid: str = ""
    added: int = 0
    unchanged: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.kind.upper()} for study {self.study_uid}: {self.added} added, {self.unchanged} unchanged"
        return text + "".join(f"; {n}" for n in self.notes)


def dicom_object_kind(path: Path) -> str | None:
    """'seg' or 'sr' for a DICOM SEG / SR file, else None (a file for the ordinary import)."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM: not ours to handle
        return None
    sop = str(ds.get("SOPClassUID", ""))
    return "seg" if sop == SEG_SOP_CLASS else "sr" if sop in SR_SOP_CLASSES else None


def _workspace(settings: Settings | Workspace) -> Workspace:
    return settings if isinstance(settings, Workspace) else open_workspace(settings)


def _series(session: Session, series_uid: str, what: str) -> m.Series:
    series = session.scalars(select(m.Series).where(m.Series.series_uid == series_uid)).first()
    if series is None:
        raise NotFound(f"{what}: source series not found: series {series_uid} is not imported; import its "
                       "CT first (`spine import FOLDER` or `spine import dicomweb --study UID`)")
    return series


def import_dicom_object(settings: Settings | Workspace, path: Path | str, *, actor: str = "cli") -> ObjectImport:
    path = Path(path)
    kind = dicom_object_kind(path)
    if kind == "seg":
        return import_seg(settings, path, actor=actor)
    if kind == "sr":
        return import_sr(settings, path, actor=actor)
    raise InputError(f"{path}: not a DICOM SEG or SR; give a dataset folder to import images")


def import_seg(settings: Settings | Workspace, path: Path, *, actor: str = "cli") -> ObjectImport:
    import nibabel as nib

    from db.dicom_export import source_headers
    from spine_core.io.dicom_seg import read_seg_labels, seg_reference
    from spine_core.labels import level_name, region_of

    ws = _workspace(settings)
    ref = seg_reference(path)
    outcome = ObjectImport("seg", ref.study_uid, notes=list(ref.warnings))
    with ws.sessions.begin() as session:
        series = _series(session, ref.referenced_series_uid, str(path))
        headers = source_headers(series)
        labels, reading = read_seg_labels(path, [str(h.SOPInstanceUID) for h in headers])
        from db.studies import open_image

        image = open_image(ws, series)
        from spine_core.io.safe_paths import inside, output_folder

        target = inside(output_folder(ws.settings.data_dir / "masks"),
                        f"{series.series_uid}.seg.{reading.seg_series_uid}.nii.gz",
                        what="SEG SeriesInstanceUID")
        # the content's hash (a gzip file's bytes change with its time stamp)
        fingerprint = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()
        existing = session.scalars(select(m.Mask).where(m.Mask.series_id == series.id,
                                                        m.Mask.path == str(target))).first()
        if existing is not None and existing.fingerprint == fingerprint and target.is_file():
            outcome.unchanged += 1
            return outcome
        data, affine = image.with_array(labels.astype(np.uint8)).to_nifti_arrays()
        img = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        tmp = target.with_name(f".tmp.{target.name}")
        nib.save(img, tmp)
        os.replace(tmp, target)
        levels = [level_name(int(v)) for v in np.unique(labels) if v != 0 and int(v) <= 28]
        has_dataset = any(mask.source == "dataset" for mask in series.masks)
        row = existing or m.Mask(series_id=series.id, source="seg" if has_dataset else "dataset")
        row.path, row.vocabulary, row.levels, row.fingerprint = str(target), "canonical", levels, fingerprint
        row.warnings = list(reading.warnings)
        if existing is None:
            session.add(row)
        study = series.study
        if row.source == "dataset":
            study.has_mask = True
            study.region = region_of(levels)
        else:
            outcome.notes.append("the series already has a vertebra mask; this one is kept beside it "
                                 "(source 'seg')")
        session.flush()
        record(session, actor, "mask.import", "study", study.study_uid, None,
               {"seg": reading.seg_series_uid, "levels": levels, "algorithm": reading.algorithm})
        outcome.added += 1
    return outcome


def import_sr(settings: Settings | Workspace, path: Path, *, actor: str = "cli") -> ObjectImport:
    from db.csv_import import _reader, _reader_box, _reader_level
    from db.dicom_export import source_headers
    from db.grades import _write as write_grade
    from spine_core.io.dicom_sr import read_sr, read_sr_reference

    ws = _workspace(settings)
    study_uid, series_uid = read_sr_reference(path)
    outcome = ObjectImport("sr", study_uid)
    with ws.sessions.begin() as session:
        series = _series(session, series_uid, str(path))
        headers = source_headers(series)
        reading = read_sr(path, [str(h.SOPInstanceUID) for h in headers])
        study = series.study
        if reading.reader is None:
            outcome.notes.append(f"final labels report ({len(reading.final)} levels) read, not imported: "
                                 "final labels come from this database's adjudication")
            return outcome
        work = reading.reader
        found = (study, series)
        for box in work.boxes:
            row = {"reader": work.reader, "slice_number": str(series.instance_numbers[box.slice_index]),
                   "x": repr(box.x), "y": repr(box.y), "width": repr(box.width), "height": repr(box.height),
                   "level": box.level or "", "note": "", "key": "", "fracture": ""}
            outcome.added += int(_reader_box(session, found, row, actor))
        for level, call in sorted(work.calls.items()):
            outcome.added += int(_reader_level(session, found, {"reader": work.reader, "level": level,
                                                                "call": call}, actor))
        if work.grades:
            reader = _reader(session, work.reader)
            for level, grade in sorted(work.grades.items()):
                before = session.scalars(select(m.LevelGrade.grade).where(
                    m.LevelGrade.study_id == study.id, m.LevelGrade.reader_id == reader.id,
                    m.LevelGrade.level == level)).first()
                write_grade(session, reader, study.id, level, grade, None, None)
                outcome.added += int(before != grade)
        total = len(work.boxes) + len(work.calls) + len(work.grades)
        outcome.unchanged = total - outcome.added
    if outcome.added:
        from db.importer import ImportReport, _after_readers_import

        _after_readers_import(ws, actor, ImportReport())
    return outcome
