"""`spine export seg|sr` and `spine push`: a study's results as DICOM objects, and to the PACS.

* SEG: the study's vertebra mask (``final``: the dataset's / imported mask; ``prediction``: the
  latest model's mask, with the model as algorithm), one segment per level, referencing the
  source CT instances by their SOP Instance UIDs, read from the source files at export (the
  database keeps the files, in slice order, not their UIDs).
* SR: TID 1500 Measurement Reports (:mod:`spine_core.io.dicom_sr`), one per reader (observer =
  the reader) and one of the final labels (observer = this application, with each label's
  provenance).

Every object keeps the study's Study Instance UID, Frame of Reference and patient; their own UIDs
come from ``Settings.dicom_uid_root``. Files are written under a temporary name and renamed.
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
    path.parent.mkdir(parents=True, exist_ok=True)
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
    ws = _workspace(settings)
    seg = build_seg(ws, study_uid, source)
    suffix = "" if source == "final" else "_prediction"
    return _write(seg, Path(out) / f"{study_uid}_seg{suffix}.dcm")
