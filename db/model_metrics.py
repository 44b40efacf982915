"""A model version measured against the human work: its predictions joined with final labels.

Classification (from the database only, cheap):

* the RSNA 2022 weighted log loss over studies with all of C1–C7 and the patient label known and
  predicted (:func:`spine_core.metrics.rsna_weighted_log_loss`, weights 1/2 per level and 7/14
  for the patient), both normalisations;
* a ROC curve and its AUC per level and for the patient (each over the studies where that label
  is known and predicted);
* sensitivity and specificity at a chosen threshold (a case is called positive when
  ``p >= threshold``, as on the ROC curve).

The truth is :func:`db.disputes.final_labels_of` (decisions, agreed readers, else the report
outside open disputes). The patient is fractured when any final level label is; not fractured
when C1–C7 are all known and intact; otherwise the report's ``patient_overall`` if it has one.

Segmentation (from files, computed once per prediction and cached): Dice per level of the
predicted mask against the dataset mask, both on the series grid, and the VerSe identification of
the predicted centroids (centres of mass of the predicted mask) against the dataset centroids, or
the centres of mass of the dataset mask when the dataset has no centroid file (20 mm rule,
:func:`spine_core.metrics.identification_rate`). Results are cached as small JSON files under
``data_dir/metrics/``, keyed by everything they depend on (the prediction's mask file and time,
the series grid, the dataset mask row, the dataset centroids), so a new prediction or re-import
is recomputed and nothing in the schema changes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.disputes import final_labels_of
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core import metrics as mt
from spine_core.adjudication import craniocaudal_key
from spine_core.errors import SpineError
from spine_core.labels import CERVICAL, LEVEL_IDS
from spine_core.progress import Progress
from spine_core.volume import Volume

#: The patient-level target's name among the level names.
PATIENT = "patient"
#: Folder under ``data_dir`` holding the per-prediction segmentation results.
METRICS_DIR = "metrics"
#: Bumped when the cached results change meaning (old files are then recomputed).
CACHE_VERSION = 1



# --------------------------------------------------------------------------------------------
# Model versions and what they predicted
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersionSummary:
    """A model version with its card and how many studies it predicted."""

    id: int
    name: str
    version: str
    card: dict[str, Any]
    created_at: dt.datetime
    n_predictions: int
    last_prediction_at: dt.datetime | None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def model_versions(session: Session) -> list[ModelVersionSummary]:
    """Every model version, the most recently used first."""
    rows = session.execute(
        select(m.ModelVersion, func.count(m.Prediction.id), func.max(m.Prediction.created_at))
        .outerjoin(m.Prediction, m.Prediction.model_version_id == m.ModelVersion.id)
        .group_by(m.ModelVersion.id)
    ).all()
    out = [
        ModelVersionSummary(v.id, v.name, v.version, dict(v.card or {}), v.created_at, int(n),
                            _aware(last))
        for v, n, last in rows
    ]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(out, key=lambda v: (v.last_prediction_at or v.created_at or epoch, v.id),
                  reverse=True)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """``max()`` over a UtcDateTime column bypasses the type on SQLite: naive UTC text back."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class StudyOutcome:
    """One prediction of the model version beside the final labels of its study.

    ``probabilities`` and ``truth`` are keyed by level name and :data:`PATIENT`; a label the humans
    have not settled (or a level the model did not score) is simply absent.
    """

    prediction_id: int
    study_id: int
    study_uid: str
    created_at: dt.datetime
    probabilities: dict[str, float]
    truth: dict[str, bool]
    mask_path: str

    @property
    def labelled(self) -> bool:
        return bool(self.truth)


def patient_truth(labels: Mapping[str, bool], report_overall: bool | None) -> bool | None:
    """Whether the patient has a fracture, from the final level labels (see module docstring)."""
    if any(labels.values()):
        return True
    if all(level in labels for level in CERVICAL):
        return False
    return report_overall


def gather(session: Session, model_version_id: int) -> list[StudyOutcome]:
    """The model version's predictions with their studies' final labels, by study id."""
    rows = session.execute(
        select(m.Prediction, m.Study.study_uid)
        .join(m.Study, m.Study.id == m.Prediction.study_id)
        .where(m.Prediction.model_version_id == model_version_id)
        .order_by(m.Prediction.study_id)
    ).all()
    study_ids = [p.study_id for p, _ in rows]
    overall = dict(session.execute(
        select(m.Report.study_id, m.Report.patient_overall).where(m.Report.study_id.in_(study_ids))
    ).all()) if study_ids else {}
    out: list[StudyOutcome] = []
    for prediction, uid in rows:
        labels = final_labels_of(session, prediction.study_id)
        truth: dict[str, bool] = dict(labels)
        patient = patient_truth(labels, overall.get(prediction.study_id))
        if patient is not None:
            truth[PATIENT] = patient
        probabilities = {str(k): float(v)
                         for k, v in (prediction.level_probabilities or {}).items()}
        if prediction.patient_probability is not None:
            probabilities[PATIENT] = float(prediction.patient_probability)
        out.append(StudyOutcome(prediction.id, prediction.study_id, uid, prediction.created_at,
                                probabilities, truth, prediction.mask_path or ""))
    return out


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roc:
    """ROC curve and AUC of one target (a level or the patient); NaN AUC when a class is absent."""

    target: str
    n_pos: int
    n_neg: int
    auc: float
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class ClassificationMetrics:
    """The model version's classification results (see module docstring)."""

    n_predictions: int
    n_labelled: int
    n_scored: int  # studies in the RSNA log loss
    log_loss: float  # per-study normalisation (the competition's scorer); NaN when none scored
    log_loss_pooled: float
    not_scored: tuple[str, ...]  # labelled studies left out of the log loss, with the reason
    roc: dict[str, Roc]  # targets in craniocaudal order, then the patient


def targets_of(studies: Iterable[StudyOutcome]) -> list[str]:
    """Targets with a label and a probability in at least one study: levels head to foot, then
    the patient."""
    seen: set[str] = set()
    for s in studies:
        seen |= set(s.truth) & set(s.probabilities)
    levels = sorted((t for t in seen if t != PATIENT), key=craniocaudal_key)
    return levels + ([PATIENT] if PATIENT in seen else [])


def pairs(studies: Iterable[StudyOutcome], target: str) -> tuple[np.ndarray, np.ndarray]:
    """(truth, probability) of ``target`` over the studies where both are known."""
    both = [(s.truth[target], s.probabilities[target]) for s in studies
            if target in s.truth and target in s.probabilities]
    truth = np.array([t for t, _ in both], dtype=bool)
    scores = np.array([p for _, p in both], dtype=float)
    return truth, scores


def _quiet(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a metric, NaN instead of a warning when it is undefined (shown as "—" on the page)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.UndefinedMetricWarning)
        return fn(*args)


def roc_of(studies: Sequence[StudyOutcome], target: str) -> Roc:
    truth, scores = pairs(studies, target)
    n_pos = int(truth.sum())
    n_neg = int(truth.size - n_pos)
    if truth.size == 0:
        return Roc(target, 0, 0, math.nan, (), (), ())
    fpr, tpr, thresholds = _quiet(mt.roc_curve, truth, scores)
    auc = _quiet(mt.roc_auc, truth, scores)
    return Roc(target, n_pos, n_neg, float(auc), tuple(map(float, fpr)), tuple(map(float, tpr)),
               tuple(map(float, thresholds)))


def _rsna_rows(
    studies: Sequence[StudyOutcome],
) -> tuple[list[list[float]], list[list[float]], list[str]]:
    truth_rows: list[list[float]] = []
    pred_rows: list[list[float]] = []
    left_out: list[str] = []
    targets = (*CERVICAL, PATIENT)
    for s in studies:
        if not s.labelled:
            continue
        no_label = [t for t in targets if t not in s.truth]
        no_prob = [t for t in targets if t not in s.probabilities]
        if no_label:
            left_out.append(f"{s.study_uid}: no final label for {', '.join(no_label)}")
        elif no_prob:
            left_out.append(
                f"{s.study_uid}: the model gave no probability for {', '.join(no_prob)}"
            )
        else:
            truth_rows.append([float(s.truth[t]) for t in targets])
            pred_rows.append([s.probabilities[t] for t in targets])
    return truth_rows, pred_rows, left_out


def classification_metrics(studies: Sequence[StudyOutcome]) -> ClassificationMetrics:
    """Log loss, ROC curves and AUCs of a model version's outcomes (see module docstring)."""
    truth_rows, pred_rows, left_out = _rsna_rows(studies)
    if truth_rows:
        loss = mt.rsna_weighted_log_loss(truth_rows, pred_rows)
        pooled = mt.rsna_weighted_log_loss(truth_rows, pred_rows, normalize="pooled")
    else:
        loss = pooled = math.nan
    return ClassificationMetrics(
        n_predictions=len(studies),
        n_labelled=sum(1 for s in studies if s.labelled),
        n_scored=len(truth_rows),
        log_loss=loss,
        log_loss_pooled=pooled,
        not_scored=tuple(left_out),
        roc={t: roc_of(studies, t) for t in targets_of(studies)},
    )


def operating_points(studies: Sequence[StudyOutcome], threshold: float,
                     targets: Sequence[str] | None = None) -> dict[str, mt.Confusion]:
    """Confusion counts per target when ``p >= threshold`` is called fractured."""
    out: dict[str, mt.Confusion] = {}
    for target in targets if targets is not None else targets_of(studies):
        truth, scores = pairs(studies, target)
        out[target] = mt.confusion(truth, scores >= threshold)
    return out


def rate(fn: Callable[[mt.Confusion], float], counts: mt.Confusion) -> float:
    """Sensitivity or specificity of ``counts``, NaN without a warning when undefined."""
    return float(_quiet(fn, counts))


# --------------------------------------------------------------------------------------------
# Segmentation: Dice and identification, cached per prediction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySegmentation:
    """Dice per level and VerSe identification of one prediction's mask."""

    prediction_id: int
    study_id: int
    dice: dict[str, float]  # level -> Dice, levels in either mask
    identified: dict[str, bool]  # true level -> identified
    distances: dict[str, float]  # level in both -> mm between predicted and true centroid
    reference: str  # "dataset centroids" | "dataset mask"

    @property
    def hits(self) -> int:
        return sum(self.identified.values())

    @property
    def n_true(self) -> int:
        return len(self.identified)

    def to_json(self) -> dict[str, Any]:
        return {"prediction_id": self.prediction_id, "study_id": self.study_id, "dice": self.dice,
                "identified": self.identified, "distances": self.distances,
                "reference": self.reference}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudySegmentation:
        return cls(int(data["prediction_id"]), int(data["study_id"]),
                   {str(k): float(v) for k, v in data["dice"].items()},
                   {str(k): bool(v) for k, v in data["identified"].items()},
                   {str(k): float(v) for k, v in data["distances"].items()},
                   str(data["reference"]))


@dataclass(frozen=True)
class LevelDice:
    level: str
    mean: float
    n_studies: int


@dataclass(frozen=True)
class SegmentationMetrics:
    """Segmentation results over a model version's predictions.

    ``pending``: prediction ids not computed yet (asked with ``compute=False``);
    ``not_applicable``: predictions without a mask or whose study has no reference (with why);
    ``problems``: predictions whose files could not be read (with what to do).
    """

    studies: tuple[StudySegmentation, ...]
    pending: tuple[int, ...] = ()
    not_applicable: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def dice_by_level(self) -> list[LevelDice]:
        values: dict[str, list[float]] = {}
        for s in self.studies:
            for level, d in s.dice.items():
                if not math.isnan(d):
                    values.setdefault(level, []).append(d)
        return [LevelDice(level, float(np.mean(v)), len(v))
                for level, v in sorted(values.items(), key=lambda kv: craniocaudal_key(kv[0]))]

    @property
    def mean_dice(self) -> float:
        """Mean over studies of each study's mean Dice over its levels (NaN without studies)."""
        per_study = [float(np.mean(list(s.dice.values()))) for s in self.studies if s.dice]
        return float(np.mean(per_study)) if per_study else math.nan

    @property
    def hits(self) -> int:
        return sum(s.hits for s in self.studies)

    @property
    def n_true(self) -> int:
        return sum(s.n_true for s in self.studies)

    @property
    def identification_rate(self) -> float:
        """VerSe's pooled rate: all hits over all true vertebrae (NaN when there are none)."""
        return self.hits / self.n_true if self.n_true else math.nan

    @property
    def mean_distance_mm(self) -> float:
        d = [v for s in self.studies for v in s.distances.values()]
        return float(np.mean(d)) if d else math.nan

    def identification_by_level(self) -> dict[str, tuple[int, int]]:
        """Level -> (hits, true vertebrae) over all studies."""
        out: dict[str, list[int]] = {}
        for s in self.studies:
            for level, hit in s.identified.items():
                counts = out.setdefault(level, [0, 0])
                counts[0] += int(hit)
                counts[1] += 1
        ordered = sorted(out.items(), key=lambda kv: craniocaudal_key(kv[0]))
        return {k: (v[0], v[1]) for k, v in ordered}


@dataclass
class _Inputs:
    """What one prediction's segmentation result depends on (read from the database)."""

    prediction_id: int
    study_id: int
    study_uid: str
    created_at: dt.datetime
    mask_path: str
    series: m.Series | None = None
    dataset_mask: m.Mask | None = None
    centroids: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        mask = self.dataset_mask
        series = self.series
        return {
            "v": CACHE_VERSION,
            "prediction_id": self.prediction_id,
            "created_at": self.created_at.isoformat(),
            "mask_path": self.mask_path,
            "series": None if series is None else [
                series.id, list(series.shape), [list(map(float, r)) for r in series.affine]],
            "dataset_mask": None if mask is None else [
                mask.id, mask.path, mask.fingerprint, mask.vocabulary],
            "centroids": sorted([k, *v] for k, v in self.centroids.items()),
        }


def _inputs(session: Session, prediction_ids: Sequence[int]) -> list[_Inputs]:
    rows = session.execute(
        select(m.Prediction, m.Study.study_uid).join(m.Study, m.Study.id == m.Prediction.study_id)
        .where(m.Prediction.id.in_(list(prediction_ids))).order_by(m.Prediction.study_id)
    ).all()
    study_ids = sorted({p.study_id for p, _ in rows})
    series_by_study: dict[int, m.Series] = {}
    for series in session.scalars(select(m.Series).where(m.Series.study_id.in_(study_ids))
                                  .order_by(m.Series.id)):
        series_by_study.setdefault(series.study_id, series)
    masks: dict[int, m.Mask] = {}
    series_ids = [s.id for s in series_by_study.values()]
    for mask in session.scalars(select(m.Mask).where(
            m.Mask.series_id.in_(series_ids), m.Mask.source == "dataset").order_by(m.Mask.id)):
        masks.setdefault(mask.series_id, mask)
    centroids: dict[int, dict[str, tuple[float, float, float]]] = {}
    for c in session.scalars(select(m.Centroid).where(m.Centroid.study_id.in_(study_ids),
                                                      m.Centroid.source == "dataset")):
        centroids.setdefault(c.study_id, {})[c.level] = (float(c.x), float(c.y), float(c.z))
    out = []
    for prediction, uid in rows:
        study_series = series_by_study.get(prediction.study_id)
        study_mask = masks.get(study_series.id) if study_series is not None else None
        for row in (study_series, study_mask):
            if row is not None and row in session:
                session.expunge(row)
        out.append(_Inputs(prediction.id, prediction.study_id, uid, prediction.created_at,
                           prediction.mask_path or "", study_series, study_mask,
                           centroids.get(prediction.study_id, {})))
    return out


def _grid(series: m.Series) -> Volume:
    """A volume standing for the series' grid (shape and affine) without reading its voxels."""
    voxels = np.broadcast_to(np.zeros((), np.uint8), tuple(series.shape))
    return Volume(voxels, np.asarray(series.affine))


class _NotApplicable(Exception):
    """This prediction has nothing to compare (no predicted mask, or no reference)."""


def _compute(inputs: _Inputs) -> StudySegmentation:
    from spine_core.io.masks import align_mask_to_image
    from spine_core.io.nifti import load_nifti
    from spine_core.labels import VOCABULARIES

    if not inputs.mask_path:
        raise _NotApplicable("the model gave no mask")
    if inputs.series is None:
        raise _NotApplicable("the study has no image series")
    if inputs.dataset_mask is None and not inputs.centroids:
        raise _NotApplicable("the dataset has no vertebra mask or centroids for this study")
    grid = _grid(inputs.series)
    pred_path = Path(inputs.mask_path)
    if not pred_path.is_file():
        raise FileNotFoundError(f"the predicted mask {pred_path} is missing; predict the study "
                                "again with 'replace' to recreate it")
    predicted = align_mask_to_image(load_nifti(pred_path), grid,
                                    vocabulary=VOCABULARIES["canonical"],
                                    source=str(pred_path)).array
    truth: np.ndarray | None = None
    if inputs.dataset_mask is not None:
        path = Path(inputs.dataset_mask.path)
        if not path.is_file():
            raise FileNotFoundError(
                f"the dataset mask {path} is missing; restore it or re-import the study"
            )
        truth = align_mask_to_image(load_nifti(path), grid,
                                    vocabulary=VOCABULARIES[inputs.dataset_mask.vocabulary],
                                    source=str(path)).array
    dice = mt.dice_of_levels(predicted, truth) if truth is not None else {}
    predicted_centres = mt.label_centroids(predicted, grid)
    if inputs.centroids:
        true_centres, reference = dict(inputs.centroids), "dataset centroids"
    else:
        assert truth is not None
        true_centres = mt.label_centroids(truth, grid)
        reference = "dataset mask"
    true_centres = {k: v for k, v in true_centres.items() if k in LEVEL_IDS}
    found = mt.identification_rate(predicted_centres, true_centres)
    return StudySegmentation(inputs.prediction_id, inputs.study_id, dice,
                             {str(k): bool(v) for k, v in found.identified.items()},
                             {str(k): float(v) for k, v in found.distances.items()}, reference)


def cache_path(ws: Workspace, prediction_id: int) -> Path:
    """Where the segmentation result of a prediction is cached."""
    return ws.settings.data_dir / METRICS_DIR / f"prediction-{int(prediction_id)}.json"


def _read_cache(path: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or damaged: computed again
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)):
        return None
    return data


def _write_cache(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def segmentation_metrics(
    ws: Workspace,
    prediction_ids: Sequence[int],
    *,
    compute: bool = True,
    progress: Progress | None = None,
) -> SegmentationMetrics:
    """Dice and identification of these predictions (cached results reused; see module docstring).

    With ``compute=False`` nothing is read from the mask files: predictions without a valid cached
    result are listed in ``pending``. ``progress(fraction, text)`` is told after each computation.
    """
    with unit_of_work(ws.sessions, readonly=True) as session:
        inputs = _inputs(session, prediction_ids)
    studies: list[StudySegmentation] = []
    pending: list[int] = []
    not_applicable: list[str] = []
    problems: list[str] = []
    todo: list[tuple[_Inputs, Path, dict[str, Any]]] = []
    for item in inputs:
        path, key = cache_path(ws, item.prediction_id), item.key()
        cached = _read_cache(path, key)
        if cached is None:
            todo.append((item, path, key))
        elif cached.get("result") is not None:
            studies.append(StudySegmentation.from_json(cached["result"]))
        else:
            not_applicable.append(f"{item.study_uid}: {cached.get('reason', 'nothing to compare')}")
    if not compute:
        pending = [item.prediction_id for item, _, _ in todo]
        todo = []
    for done, (item, path, key) in enumerate(todo, start=1):
        try:
            result = _compute(item)
        except _NotApplicable as why:
            not_applicable.append(f"{item.study_uid}: {why}")
            _write_cache(path, {"key": key, "result": None, "reason": str(why)})
        except (SpineError, OSError, ValueError) as exc:
            problems.append(f"{item.study_uid}: {exc}")  # not cached: fixed files are retried
        else:
            studies.append(result)
            _write_cache(path, {"key": key, "result": result.to_json()})
        if progress is not None:
            progress(done / len(todo), f"{done} of {len(todo)}: {item.study_uid}")
    order = {pid: i for i, pid in enumerate(prediction_ids)}
    studies.sort(key=lambda s: order.get(s.prediction_id, len(order)))
    return SegmentationMetrics(tuple(studies), tuple(pending), tuple(not_applicable),
                               tuple(problems))
