"""`spine export seg|sr` and `spine push`: a study's results as DICOM objects, and to the PACS.

* SEG: the study's vertebra mask (``final``: the dataset's / imported mask; ``prediction``: the
  latest model's mask, with the model as algorithm), one segment per level, referencing the
  source CT instances by their SOP Instance UIDs, read from the source files at export (the
  database keeps the files, in slice order, not their UIDs).
* SR: TID 1500 Measurement Reports (:mod:`spine_core.io.dicom_sr`), one per reader (observer =
  the reader) and one of the final labels (observer = this application, with each label's
  provenance).

Every object keeps the study's Study Instance UID, Frame of Reference and patient; their own UIDs
come from ``Settings.dicom_uid_root``. Files are written under a temporary name and renamed, with
names proven to lie inside ``OUT`` (:func:`spine_core.io.safe_paths.inside`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import InputError, MaskError, NotFound
from spine_core.io.safe_paths import inside, output_folder


def _workspace(settings: Settings | Workspace) -> Workspace:
    return settings if isinstance(settings, Workspace) else open_workspace(settings)


def _study(session: Session, study_uid: str) -> m.Study:
    study = session.scalars(select(m.Study).where(m.Study.study_uid == study_uid)).first()
    if study is None:
        raise NotFound(f"no study with StudyInstanceUID {study_uid}; `spine info` lists what is imported")
    return study


def _first_series(session: Session, study: m.Study) -> m.Series:
    series = session.scalars(select(m.Series).where(m.Series.study_id == study.id).order_by(m.Series.id)).first()
    if series is None:
        raise NotFound(f"study {study.study_uid} has no image series; re-import it")
    if series.source_format != "dicom":
        raise InputError(f"study {study.study_uid} was imported from {series.source_format}, not DICOM: "
                         "a SEG or SR must reference DICOM source instances")
    return series


def source_headers(series: m.Series) -> list[Dataset]:
    """The series' source instances (headers only), in the stored slice order, checked against the
    geometry recorded at import (slice i lies where the affine puts it; columns run along a2)."""
    from db.studies import check_sources

    files = check_sources(series)
    if len(files) != int(series.shape[0]):
        raise InputError(f"series {series.series_uid} has {len(files)} files for {series.shape[0]} slices "
                         "(multi-frame images): SEG and SR export needs one instance per slice")
    from spine_core.io.dicom_seg import complete_type2

    headers = [complete_type2(dcmread(path, stop_before_pixels=True)) for path in files]
    affine = np.asarray(series.affine, dtype=float)
    for index, ds in enumerate(headers):
        expected = affine[:3, :3] @ np.array([index, 0.0, 0.0]) + affine[:3, 3]
        if not np.allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-2):
            raise InputError(f"series {series.series_uid}: {files[index].name} is not where slice {index} "
                             "was at import; re-import the study")
    row_dir = np.array([float(v) for v in headers[0].ImageOrientationPatient[:3]])
    step = affine[:3, 2] / max(np.linalg.norm(affine[:3, 2]), 1e-9)
    if not np.allclose(step, row_dir, atol=1e-3):
        raise InputError(f"series {series.series_uid}: its array axes are not the images' rows and columns")
    return headers


def _write(ds: Dataset, path: Path) -> Path:
    path = inside(output_folder(path.parent), path.name)
    tmp = path.with_name(f".tmp.{path.name}")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path


@dataclass
class SegSource:
    labels: np.ndarray
    description: str
    algorithm: tuple[str, str] | None


def _mask_for(ws: Workspace, session: Session, series: m.Series, source: str) -> SegSource:
    from db.studies import open_image, open_mask, primary_mask

    image = open_image(ws, series)
    if source == "final":
        row = primary_mask(series)
        if row is None:
            raise NotFound(f"study {series.study.study_uid} has no vertebra mask; try --source prediction")
        mask = open_mask(ws, series, image, row)
        assert mask is not None
        return SegSource(np.asarray(mask.array), "Vertebrae", None)
    if source == "prediction":
        from spine_core.io.masks import align_mask_to_image
        from spine_core.io.nifti import load_nifti
        from spine_core.labels import VOCABULARIES

        pred = session.scalars(select(m.Prediction).where(m.Prediction.study_id == series.study_id,
                                                          m.Prediction.mask_path != "")
                               .order_by(m.Prediction.id.desc())).first()
        if pred is None:
            raise NotFound(f"study {series.study.study_uid} has no predicted mask; run `spine predict` first")
        version = session.get(m.ModelVersion, pred.model_version_id)
        aligned = align_mask_to_image(load_nifti(Path(pred.mask_path)), image,
                                      vocabulary=VOCABULARIES["canonical"], source=pred.mask_path)
        name, ver = (version.name, version.version) if version is not None else ("model", "?")
        return SegSource(np.asarray(aligned.array), f"Vertebrae ({name})", (name, ver))
    if source.startswith("reader:"):
        raise InputError(f"readers draw boxes and make calls, not masks: {source} has no mask to export "
                         "as SEG; `spine export sr` carries each reader's work")
    raise InputError(f"--source {source!r}: use final, prediction or reader:NAME")


def build_seg(ws: Workspace, study_uid: str, source: str = "final") -> Dataset:
    from spine_core.io.dicom_seg import Algorithm, write_seg

    with ws.sessions() as session:
        study = _study(session, study_uid)
        series = _first_series(session, study)
        headers = source_headers(series)
        got = _mask_for(ws, session, series, source)
    algorithm = Algorithm(*got.algorithm) if got.algorithm else None
    labels = np.asarray(got.labels)
    if labels.shape != (len(headers), int(headers[0].Rows), int(headers[0].Columns)):
        raise MaskError(f"mask of shape {labels.shape} does not fit series {series.series_uid}")
    return write_seg(headers, labels, uid_root=ws.settings.dicom_uid_root, series_description=got.description,
                     algorithm=algorithm)


def export_seg(settings: Settings | Workspace, study_uid: str, out: Path, *, source: str = "final") -> Path:
    """Write the study's mask as ``OUT/<StudyInstanceUID>_seg[_prediction].dcm``."""
    suffix = "" if source == "final" else "_prediction"
    target = inside(Path(out), f"{study_uid}_seg{suffix}.dcm", what="StudyInstanceUID")
    ws = _workspace(settings)
    seg = build_seg(ws, study_uid, source)
    return _write(seg, target)


# --- SR ------------------------------------------------------------------------------------------


def reader_works(session: Session, study_id: int) -> list[object]:
    """Each reader's live boxes, calls and grades on a study (dataset reference boxes excluded)."""
    from spine_core.io.dicom_sr import ReaderWork, SrBox

    works: dict[str, ReaderWork] = {}

    def work(name: str) -> ReaderWork:
        return works.setdefault(name, ReaderWork(name))

    boxes = session.execute(
        select(m.Box, m.User.username).join(m.User, m.User.id == m.Box.reader_id)
        .where(m.Box.study_id == study_id, m.Box.deleted_at.is_(None), m.Box.source != "dataset")
        .order_by(m.User.username, m.Box.slice_index, m.Box.id)).all()
    for box, name in boxes:
        work(name).boxes.append(SrBox(box.slice_index, box.x, box.y, box.width, box.height, box.level))
    for label, name in session.execute(
            select(m.LevelLabel, m.User.username).join(m.User, m.User.id == m.LevelLabel.reader_id)
            .where(m.LevelLabel.study_id == study_id)).all():
        work(name).calls[label.level] = label.call
    for grade, name in session.execute(
            select(m.LevelGrade, m.User.username).join(m.User, m.User.id == m.LevelGrade.reader_id)
            .where(m.LevelGrade.study_id == study_id)).all():
        work(name).grades[grade.level] = int(grade.grade)
    return [works[k] for k in sorted(works)]


def final_labels_with_provenance(session: Session, study_id: int) -> list[object]:
    from db.disputes import final_labels_of
    from spine_core.io.dicom_sr import FinalLabel

    stored = {row.level: row for row in session.scalars(select(m.FinalLabel).where(m.FinalLabel.study_id == study_id))}
    out: list[object] = []
    for level, fractured in sorted(final_labels_of(session, study_id).items()):
        row = stored.get(level)
        if row is None:
            provenance = "source=report"
        else:
            provenance = f"source={row.source}; by={row.updated_by}; at={row.updated_at.isoformat()}"
            if row.decision_id is not None:
                decision = session.get(m.Decision, row.decision_id)
                if decision is not None:
                    provenance += (f"; policy={decision.policy}; decided_by={decision.decided_by}; "
                                   f"decided_at={decision.decided_at.isoformat()}; reason={decision.reason}")
        out.append(FinalLabel(level, bool(fractured), provenance))
    return out


def build_srs(ws: Workspace, study_uid: str) -> list[tuple[str, Dataset]]:
    """(name, SR) for each reader's work, then the final labels (if any)."""
    from spine_core.io.dicom_seg import new_uid
    from spine_core.io.dicom_sr import ReaderWork, write_final_sr, write_reader_sr

    root = ws.settings.dicom_uid_root
    with ws.sessions() as session:
        study = _study(session, study_uid)
        series = _first_series(session, study)
        headers = source_headers(series)
        works = reader_works(session, study.id)
        finals = final_labels_with_provenance(session, study.id)
    series_uid = new_uid(root)
    out: list[tuple[str, Dataset]] = []
    for n, work in enumerate(works, start=1):
        assert isinstance(work, ReaderWork)
        out.append((f"reader {work.reader}", write_reader_sr(headers, work, uid_root=root, series_uid=series_uid,
                                                             instance_number=n)))
    if finals:
        out.append(("final labels", write_final_sr(headers, finals, uid_root=root,  # type: ignore[arg-type]
                                                   series_uid=series_uid, instance_number=len(out) + 1)))
    if not out:
        raise NotFound(f"study {study_uid} has no readers' work and no final labels; nothing to report")
    return out


def _file_part(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]


def export_sr(settings: Settings | Workspace, study_uid: str, out: Path) -> list[Path]:
    """``OUT/<study>_sr_reader_<name>.dcm`` per reader and ``OUT/<study>_sr_final.dcm``."""
    inside(Path(out), f"{study_uid}_sr_final.dcm", what="StudyInstanceUID")
    ws = _workspace(settings)
    paths = []
    for name, sr in build_srs(ws, study_uid):
        part = "final" if name == "final labels" else f"reader_{_file_part(name.removeprefix('reader '))}"
        paths.append(_write(sr, inside(Path(out), f"{study_uid}_sr_{part}.dcm",
                                       what="StudyInstanceUID")))
    return paths


# --- STOW-RS --------------------------------------------------------------------------------------


def push_study(settings: Settings | Workspace, study_uid: str, url: str | None = None, *,
               source: str = "final") -> list[str]:
    """Send the study's SEG (``source``: final, prediction, or none) and SRs to the PACS by STOW-RS;
    one line per object sent."""
    from spine_core.io import dicomweb as dw

    ws = _workspace(settings)
    config = dw.config_from_settings(ws.settings, url)
    objects: list[tuple[str, Dataset]] = []
    if source != "none":
        objects.append((f"SEG ({source})", build_seg(ws, study_uid, source)))
    objects.extend((f"SR {name}", sr) for name, sr in build_srs(ws, study_uid))
    client = dw.make_client(config)
    lines = []
    sent: list[str] = []
    for name, ds in objects:
        try:
            dw.store(client, config, [ds], f"{name} of study {study_uid}")
        except dw.PacsError as exc:
            if not sent:
                raise
            # say what the PACS holds already: pushing again stores those a second time
            raise type(exc)(f"{exc}; already sent before this failure: {', '.join(sent)}") from exc
        sent.append(name)
        lines.append(f"sent {name}: SOP Instance UID {ds.SOPInstanceUID} to {config.url}")
    return lines
