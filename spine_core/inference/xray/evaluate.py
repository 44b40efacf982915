"""Scoring predictions against a film's truth: mean Dice per vertebra and labelling accuracy.

Scored vertebrae are the truth's whole vertebrae: a level whose mask touches the film's edge (cut
by the field) or is under a quarter of the film's median vertebra area is left out.

* Dice of a vertebra: its truth mask against the pixels the model labelled with the same level
  (0 when the model gave that level to no pixel, so a labelling error costs Dice too).
* Labelling accuracy: the share of scored vertebrae whose best-overlapping predicted vertebra
  (intersection over union at least 0.3) carries the right label.
* Instance Dice: against the best-overlapping predicted vertebra whatever its label (the
  segmentation alone, labels aside).
* Found: the share that have such a predicted vertebra, labelled or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.inference.xray.model import FilmPrediction
from spine_core.labels import LEVEL_NAMES

MATCH_IOU = 0.3


@dataclass(frozen=True)
class VertebraScore:
    region: str
    level: str
    dice: float
    instance_dice: float  # against the best-overlapping predicted vertebra, whatever its label
    found: bool
    labelled_right: bool


def scored_levels(labels: npt.NDArray[np.uint8]) -> list[int]:
    """Canonical ids of the whole vertebrae on a truth label image (module docstring)."""
    ids = [int(v) for v in np.unique(labels) if v]
    if not ids:
        return []
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=ids)
    edge = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    floor = 0.25 * float(np.median(areas))
    return [lid for lid, a in zip(ids, areas, strict=True) if lid not in edge and a >= floor]


def score_film(pred: FilmPrediction, truth: npt.NDArray[np.uint8], region: str) -> list[VertebraScore]:
    """One score per scored vertebra of ``truth`` (same shape as the prediction)."""
    if pred.mask.shape != truth.shape:
        raise ValueError(f"prediction {pred.mask.shape} and truth {truth.shape} differ in shape")
    out = []
    objects = ndimage.find_objects(truth)
    for lid in scored_levels(truth):
        sl = objects[lid - 1]
        assert sl is not None
        t = truth == lid
        p = pred.mask == lid
        denom = int(t.sum()) + int(p.sum())
        dice = 2.0 * int(np.count_nonzero(t & p)) / denom if denom else 1.0
        inside = pred.instances[t]
        found, right, instance_dice = False, False, 0.0
        if inside.size and inside.any():
            k = int(np.bincount(inside[inside > 0]).argmax())
            inst = pred.instances == k
            inter = int(np.count_nonzero(inst & t))
            iou = inter / float(np.count_nonzero(inst | t))
            instance_dice = 2.0 * inter / (int(inst.sum()) + int(t.sum()))
            if iou >= MATCH_IOU:
                found = True
                right = pred.vertebrae[k - 1].level == LEVEL_NAMES[lid]
        out.append(VertebraScore(region, LEVEL_NAMES[lid], dice, instance_dice, found, right))
    return out


def summarise(scores: Iterable[VertebraScore]) -> dict[str, Any]:
    """dice_mean, labelling_accuracy, found and n_vertebrae, overall and per region."""
    rows = list(scores)

    def block(sel: list[VertebraScore]) -> dict[str, Any]:
        if not sel:
            return {"n_vertebrae": 0}
        return {"dice_mean": round(float(np.mean([s.dice for s in sel])), 4),
                "labelling_accuracy": round(float(np.mean([s.labelled_right for s in sel])), 4),
                "instance_dice_mean": round(float(np.mean([s.instance_dice for s in sel])), 4),
                "found": round(float(np.mean([s.found for s in sel])), 4),
                "n_vertebrae": len(sel)}

    out = block(rows)
    for region in sorted({s.region for s in rows}):
        out[region] = block([s for s in rows if s.region == region])
    return out


def dice_by_level(scores: Iterable[VertebraScore]) -> dict[str, float]:
    """Mean Dice per level name."""
    acc: dict[str, list[float]] = {}
    for s in scores:
        acc.setdefault(s.level, []).append(s.dice)
    return {k: round(float(np.mean(v)), 4) for k, v in acc.items()}


def table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown rows: one per mode, Dice, labelling accuracy, found, per region beside."""
    lines = ["| model | mean Dice | labelling accuracy | vertebrae found | cervical Dice / acc. | "
             "lumbar Dice / acc. |", "|---|---|---|---|---|---|"]
    names = {"unet": "U-Net alone", "detector": "detector alone (boxes as masks)",
             "ensemble": "**ensemble**"}
    for mode, m in metrics.items():
        per = []
        for region in ("cervical", "lumbar"):
            r = m.get(region, {})
            per.append(f"{r['dice_mean']:.3f} / {r['labelling_accuracy']:.3f}" if r.get("n_vertebrae")
                       else "–")
        lines.append(f"| {names.get(mode, mode)} | {m.get('dice_mean', 0):.3f} | "
                     f"{m.get('labelling_accuracy', 0):.3f} | {m.get('found', 0):.3f} | "
                     f"{per[0]} | {per[1]} |")
    return lines
