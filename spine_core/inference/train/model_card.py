"""The model card of a training run: its content (:func:`build_card`, a JSON-serialisable dict)
and its Markdown rendering, written as MODEL_CARD.md (:func:`card_markdown`)."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from spine_core.inference.calibration import reliability_table
from spine_core.inference.networks import count_parameters
from spine_core.inference.train.data import CropSet
from spine_core.inference.train.loop import PhaseLog
from spine_core.inference.train.settings import TrainSettings
from spine_core.labels import level_name

#: Box localisation metrics of :func:`~spine_core.inference.train.evaluation.evaluate` (the box
#: detector's, the classifier's Grad-CAM, then the level-extent baseline), in the card's order.
BOX_METRICS = tuple(
    f"{prefix}_{name}"
    for prefix in ("box", "gradcam_box", "extent_box")
    for name in ("iou_mean", "centre_hit", "slice_precision", "slice_recall", "n_levels")
)


DISCLAIMER = (
    "Trained on SYNTHETIC phantom CT only (no patient data). For demonstrations and software tests "
    "only: not validated on real scans, not a medical device, never use it for diagnosis."
)

BOX_NOTE = (
    "for each level whose probability reaches the threshold, the box detector (below) gives one "
    "box per axial slice, scored with the level probability (box_* metrics below). The "
    "classifier's Grad-CAM (layer `{layer}`, voxels at or above {threshold} of its maximum inside "
    "the vertebra, mapped back to the input and boxed per slice) stays as the explanation of the "
    "score (gradcam_box_*); the level's extent is the baseline (extent_box_*)."
)

DETECTOR_NOTE = (
    "the classifier's crop of a level (same grid and channels); per voxel, the probability that it "
    "lies inside a true fracture box on its axial slice. Resampled onto the input's slices, the "
    "pixels at or above {threshold} are boxed on each slice where the segmentation has the level{grow}"
)
GROW_NOTE = (
    "; each run of boxed slices grows up and down over the next slices with pixels at or above "
    "{grow}, each such box kept inside the box of the slice it grew from"
)


OUTPUT_NOTE = (
    "P(fracture) per level: sigmoid((logit + log prior odds of the level) / T); priors = natural "
    "phantom prevalence (RSNA 2022 rates for C1-C7, 0.5 % floor); T = the temperature fitted on "
    "calibration studies (see Calibration; 1 = none)"
)


def build_card(
    s: TrainSettings,
    seg_net: nn.Module,
    frac_net: nn.Module,
    seg_log: PhaseLog,
    frac_log: PhaseLog,
    val_metrics: Mapping[str, Any],
    data_seconds: float,
    total_seconds: float,
    n_fractured_train: int,
    crops: CropSet,
    calibration: Mapping[str, Any] | None = None,
    detector: tuple[nn.Module, PhaseLog] | None = None,
) -> dict[str, Any]:
    """The model card as a JSON-serialisable dict (``calibration``: the section
    :func:`~spine_core.inference.train.evaluation.calibration_summary` makes; ``detector``: the
    box detector's network and training record)."""
    settings = asdict(s)
    settings.pop("seg_spec")
    settings.pop("frac_spec")
    settings.pop("det_spec")
    settings["seg_config"] = s.seg_config.to_dict()
    settings["frac_config"] = s.frac_config.to_dict()
    card: dict[str, Any] = {
        "name": s.name,
        "version": s.version,
        "intended_use": DISCLAIMER,
        "data": {
            "kind": "synthetic phantom (spine_core.phantom.generate_study)",
            "shape": list(s.shape),
            "train_seeds": [s.train_seeds()[0], s.train_seeds()[-1]],
            "val_seeds": [s.val_seeds()[0], s.val_seeds()[-1]],
            "n_train": s.n_train,
            "n_val": s.n_val,
            "n_fractured_levels_train": n_fractured_train,
            "n_crops_train": int(crops.targets.numel()),
            "crop_positive_fraction": (
                round(float(crops.targets.mean()), 4) if crops.targets.numel() else None
            ),
        },
        "stages": {
            "segmentation": {
                "network": s.seg_spec,
                "parameters": count_parameters(seg_net),
                "input": f"closest canonical orientation (S,P,L), {s.seg_config.spacing_mm} mm isotropic, "
                f"HU window {list(s.seg_config.window)} -> [0, 1]",
                "output": "background + canonical levels "
                + ", ".join(level_name(v) for v in s.seg_config.labels if v),
                "inference": "MONAI sliding_window_inference, argmax, largest component per level; "
                + ("logits upsampled trilinearly onto the input grid around the kept levels"
                   if s.seg_config.smooth_upsampling
                   else "labels copied back to the input grid by nearest neighbour"),
                "training": {
                    "loss": "cross-entropy (levels weighted 20x background) + soft Dice over the "
                    "levels present in each batch",
                    "iterations": seg_log.iterations,
                    "stopped_by_time_budget": seg_log.stopped_by_budget,
                    "seconds": round(seg_log.seconds, 1),
                    "loss_first_tenth": round(seg_log.mean_loss(True), 4),
                    "loss_last_tenth": round(seg_log.mean_loss(False), 4),
                },
            },
            "fracture": {
                "network": s.frac_spec,
                "parameters": count_parameters(frac_net),
                "input": f"per-vertebra crop {list(s.frac_config.crop_shape)} at "
                f"{s.frac_config.crop_spacing_mm} mm "
                "around the level centroid: channel 0 windowed CT zeroed beyond the level's mask dilated by "
                f"{s.frac_config.context_mm} mm, channel 1 the level's mask, channel 2 a black top-hat "
                f"({s.frac_config.tophat_voxels}-voxel closing minus CT, x{s.frac_config.tophat_gain}) "
                "that lights up thin dark gaps in bone",
                "output": OUTPUT_NOTE,
                "patient_probability": "noisy-OR over cervical levels: 1 - prod(1 - p_level) for C1-C7",
                "boxes": BOX_NOTE.format(layer=s.frac_config.cam_layer,
                                         threshold=s.frac_config.cam_threshold),
                "training": {
                    "loss": "binary cross-entropy, class-balanced batches, on crops of the trained "
                    "segmentation's predicted masks (random flips of each axis and in-plane transposes); "
                    f"training studies enriched: {s.enrich_fractures:.0%} forced positive with 1-3 "
                    "cervical fractures",
                    "iterations": frac_log.iterations,
                    "stopped_by_time_budget": frac_log.stopped_by_budget,
                    "seconds": round(frac_log.seconds, 1),
                    "loss_first_tenth": round(frac_log.mean_loss(True), 4),
                    "loss_last_tenth": round(frac_log.mean_loss(False), 4),
                },
            },
        },
        "metrics_validation": dict(val_metrics),
        "metrics_notes": (
            "Measured on held-out synthetic studies through the full two-stage pipeline. Dice per "
            "level on the input grid; identification: VerSe rule (predicted centroid within 20 mm "
            "and nearest); AUC over cervical levels pooled and per patient; RSNA weighted log loss "
            "(per-study normalised), a cervical level the segmentation missed scored with the mean "
            "prior of C1-C7. The lowest level in view is often cut by the field of view, hence its "
            "low Dice."
        ),
        "settings": settings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": s.threads,
            "device": s.device,
            "data_preparation_seconds": round(data_seconds, 1),
            "total_seconds": round(total_seconds, 1),
        },
    }
    if detector is not None:
        det_net, det_log = detector
        card["stages"]["fracture_boxes"] = {
            "network": s.det_spec,
            "parameters": count_parameters(det_net),
            "input_output": DETECTOR_NOTE.format(
                threshold=s.det_threshold,
                grow=GROW_NOTE.format(grow=s.det_grow_threshold) if s.det_grow_threshold else ""),
            "training": {
                "loss": f"voxel binary cross-entropy (inside-box voxels weighted {s.det_pos_weight:g}x) "
                "+ soft Dice, on the crops of the training studies' fractured levels (their true "
                f"per-slice boxes drawn on the crop grid; {s.det_positive_share:.0%} of each batch) "
                "and of unfractured levels (no box), same flips and transposes as the classifier's",
                "n_crops_with_boxes": int(crops.box_rows.numel()),
                "iterations": det_log.iterations,
                "stopped_by_time_budget": det_log.stopped_by_budget,
                "seconds": round(det_log.seconds, 1),
                "loss_first_tenth": round(det_log.mean_loss(True), 4),
                "loss_last_tenth": round(det_log.mean_loss(False), 4),
            },
        }
    if calibration is not None:
        card["calibration"] = dict(calibration)
    return card


def card_markdown(card: Mapping[str, Any]) -> str:
    """The model card as Markdown."""
    m = card.get("metrics_validation", {})
    seg = card["stages"]["segmentation"]
    frac = card["stages"]["fracture"]
    data = card["data"]
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        f"**{card['intended_use']}**",
        "",
        "## Data",
        f"- {data['kind']}, volumes of shape {data['shape']} (slices x rows x columns).",
        f"- Training: {data['n_train']} studies (seeds {data['train_seeds'][0]}–{data['train_seeds'][1]}), "
        f"{data['n_fractured_levels_train']} fractured levels, {data['n_crops_train']} vertebra crops.",
        f"- Validation: {data['n_val']} held-out studies "
        f"(seeds {data['val_seeds'][0]}–{data['val_seeds'][1]}).",
        "",
        "## Stage 1: segmentation",
        f"- Network: `{seg['network']['arch']}` {seg['network']['params']}, "
        f"{seg['parameters']:,} parameters.",
        f"- Input: {seg['input']}.",
        f"- Output: {seg['output']}.",
        f"- Inference: {seg['inference']}.",
        f"- Training: {seg['training']['loss']}, {seg['training']['iterations']} iterations "
        f"({seg['training']['seconds']} s), loss {seg['training']['loss_first_tenth']} -> "
        f"{seg['training']['loss_last_tenth']}.",
        "",
        "## Stage 2: fracture classification",
        f"- Network: `{frac['network']['arch']}` {frac['network']['params']}, "
        f"{frac['parameters']:,} parameters.",
        f"- Input: {frac['input']}.",
        f"- Output: {frac['output']}; patient probability: {frac['patient_probability']}.",
        f"- Boxes: {frac['boxes']}",
        f"- Training: {frac['training']['loss']}, {frac['training']['iterations']} iterations "
        f"({frac['training']['seconds']} s), loss {frac['training']['loss_first_tenth']} -> "
        f"{frac['training']['loss_last_tenth']}.",
        *_detector_markdown(card["stages"].get("fracture_boxes")),
        "",
        "## Validation metrics (held-out synthetic studies)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("n_studies", "dice_mean", "identification_rate", "fracture_auc_level",
                "fracture_auc_patient", "rsna_weighted_log_loss", "n_levels_scored",
                "n_fractured_levels", "n_fractured_patients", "segmentation_seconds_mean",
                *BOX_METRICS):
        if key in m:
            lines.append(f"| {key} | {m[key]} |")
    if m.get("dice_per_level"):
        per_level = ", ".join(f"{k} {v}" for k, v in m["dice_per_level"].items())
        lines += ["", f"Dice per level: {per_level}."]
    extra = card.get("metrics_extra_validation")
    if extra:
        lines += ["", f"## More held-out synthetic studies ({extra['n_studies']}, seeds "
                  f"{extra['seeds'][0]}–{extra['seeds'][1]}, same weights, evaluated after training)",
                  "", "| metric | value |", "|---|---|"]
        for key in ("dice_mean", "identification_rate", "fracture_auc_level", "fracture_auc_patient",
                    "rsna_weighted_log_loss", "n_levels_scored", "n_fractured_levels",
                    "n_fractured_patients", *BOX_METRICS):
            if key in extra:
                lines.append(f"| {key} | {extra[key]} |")
    lines += calibration_markdown(card.get("calibration"))
    lines += ["", card.get("metrics_notes", ""), "",
              f"Trained in {card['environment']['total_seconds']} s with {card['environment']['threads']} "
              f"CPU threads, torch {card['environment']['torch']}. Weights are stored as float16; the "
              "metrics above were measured with the float16-rounded weights.", ""]
    return "\n".join(lines)


def _detector_markdown(det: Mapping[str, Any] | None) -> list[str]:
    if not det:
        return []
    t = det["training"]
    return ["", "## Stage 2: fracture box detector (trained on boxes)",
            f"- Network: `{det['network']['arch']}` {det['network']['params']}, "
            f"{det['parameters']:,} parameters.",
            f"- Input and output: {det['input_output']}.",
            f"- Training: {t['loss']}; {t['n_crops_with_boxes']} crops with boxes, "
            f"{t['iterations']} iterations ({t['seconds']} s), loss {t['loss_first_tenth']} -> "
            f"{t['loss_last_tenth']}."]


def calibration_markdown(cal: Mapping[str, Any] | None) -> list[str]:
    """The card's calibration section: temperature, ECE and NLL before/after, reliability tables."""
    if not cal:
        return []
    fit = cal.get("fitted_on", {})
    lines = ["", "## Calibration of the fracture probabilities", "",
             f"- Method: {cal.get('method', 'temperature scaling')}.",
             f"- Temperature T = {cal['temperature']}, fitted on {fit.get('n_studies', 0)} synthetic "
             f"studies (seeds {_seed_range(fit)}), {fit.get('n_levels', 0)} scored levels of which "
             f"{fit.get('n_fractured_levels', 0)} fractured."]
    if cal.get("note"):
        lines.append(f"- {cal['note']}.")
    if cal.get("when"):
        lines.append(f"- {str(cal['when'])[0].upper()}{str(cal['when'])[1:]}.")
    measured = cal.get("measured_on")
    if measured:
        lines += [
            f"- Measured on {measured['n_studies']} other held-out studies (seeds {_seed_range(measured)}), "
            f"{measured['n_levels']} scored levels, {measured['n_fractured_levels']} fractured; "
            f"{measured['n_bins']} equal-width bins.",
            "",
            "| | before (T = 1) | after |",
            "|---|---|---|",
            f"| expected calibration error | {measured['ece_before']} | {measured['ece_after']} |",
            f"| negative log-likelihood | {measured['nll_before']} | {measured['nll_after']} |",
        ]
        for key, title in (("reliability_before", "before calibration (T = 1)"),
                           ("reliability_after", f"after calibration (T = {cal['temperature']})")):
            lines += ["", f"Reliability {title}; empty bins left out:", "",
                      *reliability_table(measured.get(key, []))]
    return lines


def _seed_range(split: Mapping[str, Any]) -> str:
    seeds = split.get("seeds") or []
    return f"{seeds[0]}–{seeds[1]}" if len(seeds) == 2 else "none"
