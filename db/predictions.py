"""Model predictions: run a predictor on a study and store the result whole, or not at all.

The predictor's answer is checked first (mask on the study's grid holding level ids,
probabilities in [0, 1], known level names). The predicted mask is then written to a new file of
its own (atomically), then the database row in one transaction. A failure at any point removes the
new file and leaves the database as it was, so no half-written prediction is ever shown; a replaced
prediction's old mask file is removed only after the new row is committed.

A study already predicted by the same model version is skipped unless ``replace`` is asked,
which makes batch prediction resumable.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.errors import ConflictError, NotFound, PredictionError, SpineError
from spine_core.inference.protocol import ModelInfo, Predictor, StudyPrediction
from spine_core.labels import LEVEL_NAMES, level_id, level_name
from spine_core.progress import Progress
from spine_core.volume import Volume

log = logging.getLogger(__name__)

#: Longest model name / version the schema stores.
MAX_NAME_LEN = 64
#: Folder under ``data_dir`` holding the predicted masks.
PREDICTIONS_DIR = "predictions"


def model_version_row(session: Session, info: ModelInfo) -> m.ModelVersion:
    """The row of a model name+version (created on first use, card kept up to date).

    Two writers creating the same version at once both get the one row (the loser of the race
    re-reads it inside a savepoint).
    """
    _check_info(info)
    stmt = select(m.ModelVersion).where(m.ModelVersion.name == info.name,
                                        m.ModelVersion.version == info.version)
    row = session.scalars(stmt).first()
    if row is None:
        try:
            with session.begin_nested():
                row = m.ModelVersion(name=info.name, version=info.version, card=dict(info.card))
                session.add(row)
        except IntegrityError:
            row = session.scalars(stmt).one()
    if dict(row.card or {}) != dict(info.card):
        row.card = dict(info.card)
    return row


def existing_prediction(session: Session, study_id: int, info: ModelInfo) -> m.Prediction | None:
    """The stored prediction of a study by this model name+version, if any."""
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


# --------------------------------------------------------------------------------------------
# Checking a predictor's answer (before anything is written)
# --------------------------------------------------------------------------------------------


def _check_info(info: ModelInfo) -> None:
    for what, value in (("name", info.name), ("version", info.version)):
        if not str(value).strip() or len(str(value)) > MAX_NAME_LEN:
            raise PredictionError(
                f"the model's {what} {value!r} must be 1 to {MAX_NAME_LEN} characters; fix the "
                "model card of the predictor"
            )


def _probability(value: Any, what: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise PredictionError(
            f"the model gave {what} = {value!r}, not a number; nothing was stored"
        ) from None
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise PredictionError(
            f"the model gave {what} = {value!r}, outside [0, 1]; nothing was stored"
        )
    return p


def checked_mask(mask: Any, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The predicted mask as uint8 level ids, after checking shape, type and values.

    Raises:
        PredictionError: wrong shape, non-integer values, or values that are not level ids 0–28.
    """
    if mask is None:
        return None
    arr = np.asarray(mask)
    if tuple(arr.shape) != tuple(shape):
        raise PredictionError(
            f"the model returned a mask of shape {tuple(arr.shape)} for a volume of "
            f"{tuple(shape)}; nothing was stored"
        )
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise PredictionError(
            f"the model returned a mask of type {arr.dtype}; level ids must be integers, nothing "
            "was stored"
        )
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > max(LEVEL_NAMES):
            raise PredictionError(
                f"the model's mask holds values {low}..{high}; level ids are 0 (background) to "
                f"{max(LEVEL_NAMES)}, nothing was stored"
            )
    return arr.astype(np.uint8, copy=False)


def checked_probabilities(result: StudyPrediction) -> tuple[dict[str, float], float | None]:
    """(level name -> p with canonical names, patient p), every value checked to lie in [0, 1].

    A patient probability of NaN is the predictors' "not predicted" (a model that scores no
    fracture: the radiograph ensemble, a MONAI Label segmentation): it is stored as none, never as
    a number a page could read as "no fracture"."""
    levels: dict[str, float] = {}
    for key, value in result.level_probabilities.items():
        try:
            name = level_name(level_id(str(key)))
        except SpineError:
            raise PredictionError(
                f"the model named level {key!r}, which is not a vertebra level; nothing was stored"
            ) from None
        levels[name] = _probability(value, f"the probability of {name}")
    patient = result.patient_probability
    if isinstance(patient, float) and math.isnan(patient):
        return levels, None
    return levels, _probability(patient, "the patient probability")


# --------------------------------------------------------------------------------------------
# Mask files
# --------------------------------------------------------------------------------------------


def _safe_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def _write_mask(ws: Workspace, series_uid: str, affine: np.ndarray, mask: np.ndarray,
                info: ModelInfo) -> Path:
    """Write the mask to a new file (a random suffix: a replaced prediction's file stays until
    the new row is committed) and return its absolute path."""
    from spine_core.io.nifti import save_nifti

    model = f"{_safe_part(info.name)}-{_safe_part(info.version)}"
    folder = ws.settings.data_dir / PREDICTIONS_DIR / model
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{_safe_part(series_uid)}.{secrets.token_hex(4)}"
    path = folder / f"{stem}.nii.gz"
    tmp = folder / f".tmp.{os.getpid()}.{stem}.nii.gz"
    try:
        save_nifti(Volume(mask, affine), tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path.resolve()


def _remove(path: Path | str | None) -> None:
    if path:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:  # a file left behind is harmless; say so in the log
            log.warning("could not remove %s: %s", path, exc)


def predicted_mask_path(prediction: m.Prediction) -> Path | None:
    return Path(prediction.mask_path) if prediction.mask_path else None


# --------------------------------------------------------------------------------------------
# One study, many studies
# --------------------------------------------------------------------------------------------


def series_to_predict(ws: Workspace, study_id: int, info: ModelInfo, *,
                      replace: bool = False) -> m.Series | None:
    """The series of a study to predict (detached), or None when the study was already predicted
    by this model name+version and ``replace`` is not asked.

    Raises:
        NotFound: the study does not exist or has no series.
    """
    with unit_of_work(ws.sessions, readonly=True) as session:
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
    return series


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
        NotFound: the study does not exist or has no series.
        PredictionError: the predictor's answer cannot be stored (nothing stored).
        ConflictError: another run replaced the same prediction at the same moment.
        SpineError subclasses from opening the study or from the predictor (nothing stored then).
    """
    from db.film_views import image_to_predict

    info = predictor.info()
    _check_info(info)
    series = series_to_predict(ws, study_id, info, replace=replace)
    if series is None:
        return None
    started = time.perf_counter()
    volume = image_to_predict(ws, series, study_id)
    load_s = time.perf_counter() - started
    result = predictor.predict(volume, progress)
    backend = getattr(predictor, "url", "") or f"local ({result.device})"
    return store_prediction(ws, study_id, series.series_uid, volume.affine, volume.shape, result,
                            info, actor=actor, replace=replace, backend=backend, load_s=load_s)


def store_prediction(
    ws: Workspace,
    study_id: int,
    series_uid: str,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    result: StudyPrediction,
    info: ModelInfo,
    *,
    actor: str,
    replace: bool = False,
    backend: str = "",
    load_s: float = 0.0,
) -> m.Prediction | None:
    """Check and store a prediction made elsewhere on the study's grid ``(shape, affine)``:
    mask file first, then the row in one transaction; whole or not at all.

    Returns None when the study was predicted by the same model version meanwhile (not replaced).

    Raises:
        PredictionError: the answer cannot be stored (nothing stored).
        ConflictError: another run replaced the same prediction at the same moment.
    """
    _check_info(info)
    mask = checked_mask(result.mask, shape)
    levels, patient = checked_probabilities(result)
    boxes = [b.to_json() for b in result.boxes]
    timings = {"load_s": round(load_s, 3),
               **{str(k): round(float(v), 3) for k, v in result.timings.items()}}
    backend = backend[:256]

    new_path = None
    if mask is not None:
        new_path = _write_mask(ws, series_uid, affine, mask, info)
    old_path = ""
    replaced = False
    try:
        with unit_of_work(ws.sessions) as session:
            version = model_version_row(session, info)
            row = existing_prediction(session, study_id, info)
            if row is not None and not replace:
                _remove(new_path)  # someone else stored it while we ran: theirs stands
                return None
            if row is None:
                row = m.Prediction(study_id=study_id, model_version_id=version.id)
                session.add(row)
            else:
                old_path, replaced = row.mask_path, True
            row.patient_probability = patient
            row.level_probabilities = levels
            row.boxes = boxes
            row.mask_path = str(new_path) if new_path else ""
            row.timings = timings
            row.backend = backend
            row.created_by = actor
            row.created_at = dt.datetime.now(dt.UTC)
            session.flush()
            record(session, actor, "prediction.store", "study", str(study_id), None,
                   {"model": info.name, "version": info.version, "patient_probability": patient,
                    "replaced": replaced})
            session.flush()
            session.expunge(row)
    except IntegrityError as exc:
        _remove(new_path)
        if not replace:
            return None  # a concurrent run inserted the same prediction first
        raise ConflictError(
            f"another run stored a prediction of study {study_id} by {info.name} {info.version} at "
            "the same moment; nothing of this run was kept, predict again if needed"
        ) from exc
    except BaseException:
        _remove(new_path)
        raise
    if old_path and old_path != row.mask_path:
        _remove(old_path)
    return row


@dataclass
class BatchReport:
    """What :func:`predict_many` did."""

    predicted: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    stopped: str = ""  # why the batch stopped early, if it did

    def summary(self) -> str:
        text = (f"{self.predicted} studies predicted, {self.skipped} already predicted"
                + (f", {len(self.problems)} failed" if self.problems else ""))
        return f"{text}; {self.stopped}" if self.stopped else text


def _study_uids(ws: Workspace, study_ids: list[int]) -> dict[int, str]:
    with unit_of_work(ws.sessions, readonly=True) as session:
        rows = session.execute(
            select(m.Study.id, m.Study.study_uid).where(m.Study.id.in_(study_ids))
        )
        return {int(i): str(uid) for i, uid in rows}


def predict_many(
    ws: Workspace,
    predictor: Predictor,
    study_ids: Iterable[int],
    *,
    actor: str,
    replace: bool = False,
    on_study: Callable[[int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_consecutive_failures: int | None = None,
) -> BatchReport:
    """Predict studies one by one, each stored on its own (an interrupted run resumes).

    A study that fails is reported in ``problems`` (with its UID and the reason) and the batch goes
    on; an unexpected exception of a predictor is reported with its type and logged with its
    traceback. ``on_study(study_id, outcome)`` is told "predicted", "skipped" or "failed" after each
    study. The batch stops early (``stopped`` says why) when ``should_stop()`` turns true between
    studies, or after ``max_consecutive_failures`` failures in a row (e.g. a backend that is down).
    """
    ids = [int(i) for i in study_ids]
    uids = _study_uids(ws, ids) if ids else {}
    report = BatchReport()
    failures_in_a_row = 0
    for study_id in ids:
        if should_stop is not None and should_stop():
            report.stopped = "stopped on request"
            break
        name = uids.get(study_id, f"id {study_id}")
        try:
            row = predict_study(ws, predictor, study_id, actor=actor, replace=replace)
        except SpineError as exc:
            report.problems.append(f"study {name}: {exc}")
            outcome = "failed"
        except Exception as exc:  # noqa: BLE001 - one broken study must not end the batch
            log.exception("prediction of study %s failed unexpectedly", name)
            report.problems.append(f"study {name}: unexpected {type(exc).__name__}: {exc}")
            outcome = "failed"
        else:
            outcome = "skipped" if row is None else "predicted"
            if row is None:
                report.skipped += 1
            else:
                report.predicted += 1
        failures_in_a_row = failures_in_a_row + 1 if outcome == "failed" else 0
        if on_study:
            on_study(study_id, outcome)
        if max_consecutive_failures and failures_in_a_row >= max_consecutive_failures:
            report.stopped = (f"stopped after {failures_in_a_row} failures in a row; fix the cause "
                              "(see the last failure) and run again to resume")
            break
    return report
