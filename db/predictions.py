"""Model predictions: run a predictor on a study and store the result whole, or not at all.

The predicted mask is written to a file first (atomically), then the database row in one
transaction; a failure at any point leaves no row, so no half-written prediction is ever shown.
A study already predicted by the same model version is skipped unless ``replace`` is asked,
which makes batch prediction resumable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from spine_core.errors import NotFound, SpineError
from spine_core.inference.protocol import ModelInfo, Predictor, Progress, StudyPrediction
from spine_core.workspace import Workspace


def model_version_row(session: Session, info: ModelInfo) -> m.ModelVersion:
    """The row of a model name+version (created on first use, card kept up to date)."""
    row = session.scalars(
        select(m.ModelVersion).where(m.ModelVersion.name == info.name,
                                     m.ModelVersion.version == info.version)
    ).first()
    if row is None:
        row = m.ModelVersion(name=info.name, version=info.version, card=dict(info.card))
        session.add(row)
        session.flush()
    return row


def existing_prediction(session: Session, study_id: int, info: ModelInfo) -> m.Prediction | None:
    return session.scalars(
        select(m.Prediction)
        .join(m.ModelVersion, m.ModelVersion.id == m.Prediction.model_version_id)
        .where(m.Prediction.study_id == study_id, m.ModelVersion.name == info.name,
               m.ModelVersion.version == info.version)
    ).first()


def latest_prediction(session: Session, study_id: int) -> m.Prediction | None:
    """The most recent prediction of a study, any model."""
    return session.scalars(
        select(m.Prediction).where(m.Prediction.study_id == study_id)
        .order_by(m.Prediction.created_at.desc(), m.Prediction.id.desc()).limit(1)
    ).first()


def _save_mask(ws: Workspace, series: m.Series, prediction: StudyPrediction, info: ModelInfo) -> str:
    if prediction.mask is None:
        return ""
    from spine_core.io.nifti import save_nifti
    from spine_core.volume import Volume

    folder = ws.settings.data_dir / "predictions" / f"{info.name}-{info.version}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{series.series_uid}.nii.gz"
    tmp = folder / f".tmp.{os.getpid()}.{series.series_uid}.nii.gz"
    volume = Volume(np.asarray(prediction.mask, dtype=np.uint8), np.asarray(series.affine))
    save_nifti(volume, tmp)
    os.replace(tmp, path)
    return str(path.resolve())


def predict_study(
    ws: Workspace,
    predictor: Predictor,
    study_id: int,
    *,
    actor: str,
    replace: bool = False,
    progress: Progress | None = None,
) -> m.Prediction | None:
    """Predict one study and store it; returns None when it was already predicted (not replaced).

    Raises:
        SpineError subclasses from opening the study or from the predictor (nothing stored then).
    """
    from spine_core.studies import open_image

    info = predictor.info()
    with ws.sessions() as session:
        study = session.get(m.Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        if not replace and existing_prediction(session, study_id, info) is not None:
            return None
        series = session.scalars(
            select(m.Series).where(m.Series.study_id == study_id).order_by(m.Series.id)
        ).first()
        if series is None:
            raise NotFound(f"study {study.study_uid} has no image series; re-import it")
        session.expunge(series)
    t0 = time.perf_counter()
    volume = open_image(ws, series)
    load_s = time.perf_counter() - t0
    result = predictor.predict(volume, progress)
    if result.mask is not None and tuple(result.mask.shape) != volume.shape:
        raise SpineError(
            f"the model returned a mask of shape {tuple(result.mask.shape)} for a volume of "
            f"{volume.shape}; nothing was stored"
        )
    mask_path = _save_mask(ws, series, result, info)
    timings = {"load_s": round(load_s, 3), **{k: round(float(v), 3) for k, v in result.timings.items()}}
    with ws.sessions.begin() as session:
        version = model_version_row(session, info)
        row = existing_prediction(session, study_id, info)
        if row is None:
            row = m.Prediction(study_id=study_id, model_version_id=version.id)
            session.add(row)
        row.patient_probability = float(result.patient_probability)
        row.level_probabilities = {k: float(v) for k, v in result.level_probabilities.items()}
        row.boxes = [b.to_json() for b in result.boxes]
        row.mask_path = mask_path
        row.timings = timings
        row.backend = getattr(predictor, "url", "") or f"local ({result.device})"
        row.created_by = actor
        session.flush()
        record(session, actor, "prediction.store", "study", str(study_id), None,
               {"model": info.name, "version": info.version,
                "patient_probability": row.patient_probability})
        session.expunge(row)
    return row


@dataclass
class BatchReport:
    predicted: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.predicted} studies predicted, {self.skipped} already predicted"
                + (f", {len(self.problems)} failed" if self.problems else ""))


def predict_many(
    ws: Workspace,
    predictor: Predictor,
    study_ids: Iterable[int],
    *,
    actor: str,
    replace: bool = False,
    on_study: Callable[[int, str], None] | None = None,
) -> BatchReport:
    """Predict studies one by one (each stored on its own: an interrupted run resumes)."""
    report = BatchReport()
    for study_id in study_ids:
        try:
            row = predict_study(ws, predictor, study_id, actor=actor, replace=replace)
        except SpineError as exc:
            report.problems.append(f"study {study_id}: {exc}")
            outcome = "failed"
        else:
            if row is None:
                report.skipped += 1
                outcome = "skipped"
            else:
                report.predicted += 1
                outcome = "predicted"
        if on_study:
            on_study(study_id, outcome)
    return report


def predicted_mask_path(prediction: m.Prediction) -> Path | None:
    return Path(prediction.mask_path) if prediction.mask_path else None
