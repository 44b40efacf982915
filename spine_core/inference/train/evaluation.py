"""Evaluation: the full two-stage pipeline scored on held-out studies (:func:`evaluate`), and
:func:`extra_validation` of written weights on more studies, recorded in their model card."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.errors import InputError
from spine_core.inference.calibration import DEFAULT_BINS, calibration_report, fit_temperature
from spine_core.inference.fracture import (
    FractureModel,
    ScoredLevels,
    level_boxes,
    patient_probability,
)
from spine_core.inference.preprocess import grid_of
from spine_core.inference.segmentation import (
    SegmentationModel,
    SegmentationResult,
    centroids_of,
)
from spine_core.inference.train.data import LabelledStudy, Log, phantom_source
from spine_core.inference.train.model_card import BOX_NOTE, OUTPUT_NOTE, card_markdown
from spine_core.labels import CERVICAL, level_name


@dataclass
class LevelScores:
    """Every level the two-stage pipeline scored on some studies: its prior-shifted logit before
    the temperature (:attr:`ScoredLevels.shifted_logits`) and whether that level of the study is
    truly fractured (1) or not (0). What a temperature is fitted on and calibration measured on."""

    logits: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def add(self, study: LabelledStudy, scored: ScoredLevels) -> None:
        self.logits += list(scored.shifted_logits)
        self.labels += [1.0 if lid in study.fractured else 0.0 for lid in scored.ids]
        self.seeds.append(study.seed)

    @property
    def n_fractured(self) -> int:
        return int(sum(self.labels))


def score_levels(
    segmentation: SegmentationModel,
    fracture: FractureModel,
    studies: Iterable[LabelledStudy],
    log: Log | None = None,
    what: str = "calibration",
) -> LevelScores:
    """Segment and score ``studies`` (no boxes, no metrics): the levels' logits and truth."""
    out = LevelScores()
    for study in studies:
        seg = segmentation.segment(study.image)
        out.add(study, fracture.score(seg, study.image.affine))
        if log:
            log(f"scored {what} study seed {study.seed} ({len(out.seeds)} done)")
    return out


def fit_calibration(scores: LevelScores) -> tuple[float, str | None]:
    """The temperature fitted on ``scores`` (:func:`~spine_core.inference.calibration.
    fit_temperature`), or 1.0 with the reason when it cannot be fitted (one class only)."""
    if not scores.logits:
        return 1.0, "not fitted: the calibration studies had no scored level"
    try:
        return fit_temperature(scores.logits, scores.labels), None
    except InputError as exc:
        return 1.0, f"not fitted: {exc}"


def calibration_summary(
    temperature: float, fitted: LevelScores, measured: LevelScores, note: str | None = None,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The model card's ``calibration`` section: the temperature, where it was fitted, and ECE,
    NLL and reliability bins before (T = 1) and after it on the ``measured`` studies."""
    out: dict[str, Any] = {
        "method": "temperature scaling: P = sigmoid((logit + log prior odds) / T), T minimising the "
                  "negative log-likelihood of the levels' truth on the calibration studies",
        "temperature": round(float(temperature), 4),
        "fitted_on": _split_summary(fitted),
    }
    if note:
        out["note"] = note
    if measured.logits:
        report = calibration_report(measured.logits, measured.labels, temperature, n_bins)
        report.pop("n_fractured")  # the split summary says it as n_fractured_levels
        out["measured_on"] = {**_split_summary(measured), **report}
    return out


def _split_summary(scores: LevelScores) -> dict[str, Any]:
    seeds = scores.seeds
    return {
        "n_studies": len(seeds),
        "seeds": [min(seeds), max(seeds)] if seeds else [],
        "n_levels": len(scores.labels),
        "n_fractured_levels": scores.n_fractured,
    }


#: Boxes measured against the true boxes -> prefix of their metrics: the detector's (what the
#: pipeline gives), the classifier's Grad-CAM (its explanation) and the level's extent (baseline).
BOX_KINDS = {"detector": "box", "gradcam": "gradcam_box", "extent": "extent_box"}


def evaluate(
    segmentation: SegmentationModel,
    fracture: FractureModel | None,
    studies: Iterable[LabelledStudy],
    *,
    prior: float = 0.1,
    log: Log | None = None,
    scores: LevelScores | None = None,
) -> dict[str, Any]:
    """Score the full two-stage pipeline on held-out studies.

    Dice per level on the input grid; VerSe identification (centroid within 20 mm and nearest);
    fracture ROC AUC over cervical levels pooled and per patient; RSNA weighted log loss, where a
    cervical level the segmentation missed gets probability ``prior``. ``scores``, when given,
    receives every scored level's logit and truth (for the calibration figures).
    """
    from spine_core import metrics

    level_ids = segmentation.level_ids
    dice_rows: list[dict[int, float]] = []
    ident = []
    level_truth: list[float] = []
    level_score: list[float] = []
    rsna_true: list[list[float]] = []
    rsna_pred: list[list[float]] = []
    seconds: list[float] = []
    located: dict[str, list[metrics.BoxLocalisation]] = {kind: [] for kind in BOX_KINDS}
    for study in studies:
        t0 = time.perf_counter()
        seg = segmentation.segment(study.image)
        seconds.append(time.perf_counter() - t0)
        truth_mask = np.asarray(study.mask.array)
        dice_rows.append(metrics.dice_per_label(seg.mask, truth_mask, level_ids))
        true_c = centroids_of(truth_mask, grid_of(study.mask))
        ident.append(metrics.identification_rate(seg.centroids, true_c))
        if fracture is None:
            continue
        scored = fracture.score(seg, study.image.affine)
        if scores is not None:
            scores.add(study, scored)
        probs = scored.probabilities
        present = {level_name(lid) for lid in true_c}
        row_true, row_pred = [], []
        for name in CERVICAL:
            y = 1.0 if name in {level_name(f) for f in study.fractured} else 0.0
            p = probs.get(name, prior)
            row_true.append(y)
            row_pred.append(p)
            if name in present:
                level_truth.append(y)
                level_score.append(p)
        filled = {n: row_pred[i] for i, n in enumerate(CERVICAL)}
        row_true.append(max(row_true))
        row_pred.append(patient_probability(filled))
        rsna_true.append(row_true)
        rsna_pred.append(row_pred)
        for kind, found in _localisation(fracture, seg, study, scored).items():
            located[kind] += found
        if log:
            log(f"evaluated study seed {study.seed}")
    dice_by_level = {
        level_name(lid): float(np.nanmean([r[lid] for r in dice_rows]))
        for lid in level_ids
        if any(not math.isnan(r[lid]) for r in dice_rows)
    }
    result: dict[str, Any] = {
        "n_studies": len(dice_rows),
        "dice_per_level": {k: round(v, 4) for k, v in dice_by_level.items()},
        "dice_mean": round(float(np.mean(list(dice_by_level.values()))), 4) if dice_by_level else None,
        "identification_rate": round(float(metrics.pooled_identification_rate(ident)), 4),
        "segmentation_seconds_mean": round(float(np.mean(seconds)), 3) if seconds else None,
    }
    if fracture is not None and rsna_true:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
            auc_level = metrics.roc_auc(level_truth, level_score)
            auc_patient = metrics.roc_auc([r[-1] for r in rsna_true], [r[-1] for r in rsna_pred])
        result.update(
            {
                "fracture_auc_level": None if math.isnan(auc_level) else round(auc_level, 4),
                "fracture_auc_patient": None if math.isnan(auc_patient) else round(auc_patient, 4),
                "rsna_weighted_log_loss": round(
                    metrics.rsna_weighted_log_loss(np.array(rsna_true), np.array(rsna_pred)), 4
                ),
                "n_levels_scored": len(level_truth),
                "n_fractured_levels": int(sum(level_truth)),
                "n_fractured_patients": int(sum(r[-1] for r in rsna_true)),
            }
        )
        result.update(_localisation_summary(located))
    return result


def _localisation(
    fracture: FractureModel, seg: SegmentationResult, study: LabelledStudy, scored: ScoredLevels
) -> dict[str, list[Any]]:
    """Boxes of each truly fractured, segmented level (whatever its score) against its true boxes:
    the box detector's (when the model has one), Grad-CAM's and, as the baseline, the level's
    extent."""
    from spine_core import metrics

    out: dict[str, list[Any]] = {kind: [] for kind in BOX_KINDS}
    names = sorted({b[0] for b in study.boxes} & set(scored.probabilities))
    if not names:
        return out
    found = {
        "gradcam": fracture.localise(seg, study.image.affine, scored, levels=names) or [],
        "extent": level_boxes(seg.mask, {n: 1.0 for n in names}, 0.5,
                              fracture.config.box_min_area_fraction),
    }
    if fracture.detector is not None:
        found["detector"] = fracture.detector.boxes(seg, study.image.affine, scored,
                                                    fracture.config, names)
    for name in names:
        truth = [b[1:] for b in study.boxes if b[0] == name]
        for kind, boxes in found.items():
            pred = [(b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height)
                    for b in boxes if b.level == name]
            out[kind].append(metrics.box_localisation(pred, truth))
    return out


def _localisation_summary(located: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Means over fractured levels of the box metrics (NaN entries left out)."""
    out: dict[str, Any] = {}
    for kind, rows in located.items():
        if not rows:
            continue
        prefix = BOX_KINDS[kind]
        for field_name in ("iou_mean", "centre_hit", "slice_precision", "slice_recall"):
            values = [getattr(r, field_name) for r in rows if not math.isnan(getattr(r, field_name))]
            out[f"{prefix}_{field_name}"] = round(float(np.mean(values)), 4) if values else None
        out[f"{prefix}_n_levels"] = len(rows)
    return out


def extra_validation(
    weights_dir: str | Path,
    n_studies: int,
    first_seed: int,
    shape: tuple[int, int, int] = (200, 256, 256),
    log: Log | None = print,
) -> dict[str, Any]:
    """Evaluate written weights on ``n_studies`` more natural phantom studies (seeds from
    ``first_seed``) and add the result to the model card as ``metrics_extra_validation``.

    The validation of a training run is small (its fracture AUC rests on a handful of fractured
    levels); this gives the card a steadier estimate without retraining.
    """
    from spine_core.inference.local import LocalPredictor

    folder = Path(weights_dir)
    predictor = LocalPredictor.from_dir(folder, device="cpu")
    if predictor.fracture is None:  # pragma: no cover - from_dir loads both stages
        raise InputError(f"{folder} has no fracture stage")
    make = phantom_source(shape)
    seeds = list(range(first_seed, first_seed + n_studies))
    prior = float(np.mean([predictor.fracture.config.prior_for(level_name(lid)) for lid in range(1, 8)]))
    result = evaluate(predictor.segmentation, predictor.fracture, (make(seed) for seed in seeds),
                      prior=prior, log=log)
    result["seeds"] = [seeds[0], seeds[-1]]
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["metrics_extra_validation"] = result
    config = predictor.fracture.config
    if config.cam_layer:  # boxes may be made otherwise than when the card was written
        card["stages"]["fracture"]["boxes"] = BOX_NOTE.format(
            layer=config.cam_layer, threshold=config.cam_threshold)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return result


#: Seeds of the studies :func:`calibrate_weights` fits on and measures on by default: fresh ones,
#: past the training (2022000+), validation (2022500+) and extra validation (2022600+) seeds of
#: the shipped weights. A training run's own calibration split starts at ``seed * 1000 + 700``.
CALIBRATION_FIT_SEED = 2022700
CALIBRATION_TEST_SEED = 2022800


def calibrate_weights(
    weights_dir: str | Path,
    n_fit: int,
    n_test: int,
    *,
    fit_seed: int = CALIBRATION_FIT_SEED,
    test_seed: int = CALIBRATION_TEST_SEED,
    shape: tuple[int, int, int] = (200, 256, 256),
    n_bins: int = DEFAULT_BINS,
    log: Log | None = print,
) -> dict[str, Any]:
    """Fit the fracture temperature of written weights on ``n_fit`` fresh natural phantom studies
    (seeds from ``fit_seed``), measure ECE before (T = 1) and after on ``n_test`` others (seeds
    from ``test_seed``), and write the temperature into ``fracture.json`` and the figures into
    the model card (``calibration``). The weights themselves are not touched (their SHA-256
    stays valid). Returns the card's calibration section.

    Raises:
        InputError: the folder's fracture stage is not a JSON config (TorchScript, bundle), a
            study count below 1, or the seed ranges overlap.
    """
    from spine_core.inference.local import LocalPredictor

    folder = Path(weights_dir)
    config_path = folder / "fracture.json"
    if not config_path.is_file():
        raise InputError(f"{folder} has no fracture.json: only a state-dict config records a "
                         "temperature (export TorchScript or a bundle after calibrating)")
    if n_fit < 1 or n_test < 1:
        raise InputError(f"need at least one study to fit on and one to measure on (got {n_fit}, {n_test})")
    fit_seeds = range(fit_seed, fit_seed + n_fit)
    test_seeds = range(test_seed, test_seed + n_test)
    if set(fit_seeds) & set(test_seeds):
        raise InputError(f"fit seeds {fit_seed}.. and test seeds {test_seed}.. overlap; choose "
                         "ranges apart")
    predictor = LocalPredictor.from_dir(folder, device="cpu")
    if predictor.fracture is None:  # pragma: no cover - from_dir loads both stages
        raise InputError(f"{folder} has no fracture stage")
    make = phantom_source(shape)
    fitted = score_levels(predictor.segmentation, predictor.fracture, (make(s) for s in fit_seeds), log)
    temperature, note = fit_calibration(fitted)
    measured = score_levels(predictor.segmentation, predictor.fracture, (make(s) for s in test_seeds),
                            log, what="test")
    summary = calibration_summary(temperature, fitted, measured, note, n_bins)
    summary["shape"] = list(shape)
    summary["when"] = ("fitted after training (spine calibrate) on fresh synthetic studies; the "
                       "validation metrics above were measured before it, at T = 1 (AUC over levels "
                       "does not depend on T, log losses do)")

    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["calibration"] = {"method": "temperature", "temperature": float(temperature)}
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    card["calibration"] = summary
    fracture_stage = card.get("stages", {}).get("fracture")
    if isinstance(fracture_stage, dict):
        fracture_stage["output"] = OUTPUT_NOTE
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if {"name", "version", "stages", "data", "intended_use", "environment"} <= set(card):
        (folder / "MODEL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return summary
