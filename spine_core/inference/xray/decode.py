"""From network outputs on the grid to vertebra instances, for each model alone and the ensemble.

* **U-Net alone**: seeds are the connected components of the *core* channel (each vertebra shrunk
  by a few pixels, so touching vertebrae part); every foreground pixel joins its nearest seed.
  The reference is the instance with the highest mean C2 (or S) probability.
* **Detector alone**: peaks of the centre heatmap with their regressed boxes; each box, filled, is
  the vertebra's mask. The reference is the detection with the highest C2 (or S) heatmap value.
* **Ensemble** (the rule the model card states): the detector says *where the vertebrae are*, the
  U-Net *which pixels are bone*. Each detection is a vertebra; its mask is the U-Net's foreground
  inside its box grown by ``box_margin``, a pixel in several boxes going to the nearest centre.
  A vertebra's reference score is the mean of the detector's heatmap at its centre and the U-Net's
  mean reference probability over its mask; the highest score over both references picks the
  reference vertebra (and so the film's region) if it reaches ``config.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.inference.xray.config import (
    DETECTOR_REFERENCE_CHANNEL,
    REFERENCES,
    UNET_REFERENCE_CHANNEL,
    XrayConfig,
)


@dataclass
class Instances:
    """Vertebrae on the grid: ``labels`` (int32, 0 background, i + 1 for vertebra i), each one's
    centre (row, col), box (x0, y0, x1, y1) and score, and per reference its score per vertebra."""

    labels: npt.NDArray[np.int32]
    centres: list[tuple[float, float]]
    boxes: list[tuple[float, float, float, float]]
    scores: list[float]
    reference_scores: dict[str, list[float]] = field(default_factory=dict)
    filled_boxes: bool = False  # the masks are the boxes (detector alone)

    def __len__(self) -> int:
        return len(self.centres)


@dataclass(frozen=True)
class Detection:
    cy: float
    cx: float
    height: float
    width: float
    score: float
    reference_scores: dict[str, float]


def detections(det: npt.NDArray[np.float32], config: XrayConfig) -> list[Detection]:
    """Peaks of the centre heatmap (3 x 3 local maxima at or above ``config.peak``) with their
    boxes; ``det`` is the detector's output after sigmoid on the heatmaps, (5, g, g)."""
    heat = det[0]
    g = heat.shape[0]
    peaks = (heat == ndimage.maximum_filter(heat, size=3)) & (heat >= config.peak)
    out = []
    for y, x in zip(*np.nonzero(peaks), strict=True):
        out.append(Detection(
            float(y), float(x), max(1.0, float(det[4, y, x]) * g), max(1.0, float(det[3, y, x]) * g),
            float(heat[y, x]),
            {ref: float(det[ch, y, x]) for ref, ch in DETECTOR_REFERENCE_CHANNEL.items()}))
    return _suppress(out)


def _suppress(dets: list[Detection]) -> list[Detection]:
    """Drop a weaker detection whose centre lies inside a stronger one's box (half size)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(abs(d.cy - k.cy) > k.height / 4 or abs(d.cx - k.cx) > k.width / 4 for k in kept):
            kept.append(d)
    return kept


def _nearest_seed(seeds: npt.NDArray[np.int32], allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    """Each allowed pixel takes the label of its nearest seed pixel (0 elsewhere)."""
    if not seeds.any():
        return np.zeros_like(seeds)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return np.where(allowed, seeds[iy, ix], 0).astype(np.int32)


def _box_of(mask: npt.NDArray[np.bool_]) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def unet_instances(probs: npt.NDArray[np.float32], config: XrayConfig) -> Instances:
    """The U-Net alone (module docstring); ``probs`` is its sigmoid output (4, g, g)."""
    fg = probs[0] >= config.foreground
    core, n = ndimage.label((probs[1] >= config.core) & fg)
    sizes = ndimage.sum_labels(np.ones_like(core), core, index=np.arange(1, n + 1)) if n else []
    keep = [i + 1 for i, s in enumerate(sizes) if s >= config.min_core_px]
    seeds = np.zeros_like(core, dtype=np.int32)
    for new, old in enumerate(keep, start=1):
        seeds[core == old] = new
    labels = _nearest_seed(seeds, fg)
    inst = Instances(labels, [], [], [], {ref: [] for ref in REFERENCES})
    for k in range(1, len(keep) + 1):
        mask = labels == k
        ys, xs = np.nonzero(mask)
        inst.centres.append((float(ys.mean()), float(xs.mean())))
        inst.boxes.append(_box_of(mask))
        inst.scores.append(float(probs[0][mask].mean()))
        for ref, ch in UNET_REFERENCE_CHANNEL.items():
            inst.reference_scores[ref].append(float(probs[ch][mask].mean()))
    return inst


def detector_instances(dets: list[Detection], grid: int) -> Instances:
    """The detector alone: each box, filled, is the vertebra's mask (later boxes over earlier)."""
    labels = np.zeros((grid, grid), np.int32)
    inst = Instances(labels, [], [], [], {ref: [] for ref in REFERENCES}, filled_boxes=True)
    for k, d in enumerate(dets, start=1):
        box = (max(0.0, d.cx - d.width / 2), max(0.0, d.cy - d.height / 2),
               min(float(grid), d.cx + d.width / 2), min(float(grid), d.cy + d.height / 2))
        labels[int(box[1]):int(np.ceil(box[3])), int(box[0]):int(np.ceil(box[2]))] = k
        inst.centres.append((d.cy, d.cx))
        inst.boxes.append(box)
        inst.scores.append(d.score)
        for ref in REFERENCES:
            inst.reference_scores[ref].append(d.reference_scores[ref])
    return inst


def ensemble_instances(probs: npt.NDArray[np.float32], dets: list[Detection],
                       config: XrayConfig) -> Instances:
    """The ensemble rule (module docstring)."""
    g = probs.shape[-1]
    fg = probs[0] >= config.foreground
    seeds = np.zeros((g, g), np.int32)
    for k, d in enumerate(dets, start=1):
        seeds[int(round(min(d.cy, g - 1))), int(round(min(d.cx, g - 1)))] = k
    nearest = _nearest_seed(seeds, fg)
    labels = np.zeros((g, g), np.int32)
    inst = Instances(labels, [], [], [], {ref: [] for ref in REFERENCES})
    for k, d in enumerate(dets, start=1):
        my, mx = d.height * (0.5 + config.box_margin), d.width * (0.5 + config.box_margin)
        y0, y1 = max(0, int(d.cy - my)), min(g, int(np.ceil(d.cy + my)) + 1)
        x0, x1 = max(0, int(d.cx - mx)), min(g, int(np.ceil(d.cx + mx)) + 1)
        window = labels[y0:y1, x0:x1]
        mine = nearest[y0:y1, x0:x1] == k
        window[mine] = k
    for k, d in enumerate(dets, start=1):
        mask = labels == k
        if mask.any():
            box = _box_of(mask)
            unet_ref = {ref: float(probs[ch][mask].mean()) for ref, ch in UNET_REFERENCE_CHANNEL.items()}
        else:
            box = (d.cx - d.width / 2, d.cy - d.height / 2, d.cx + d.width / 2, d.cy + d.height / 2)
            unet_ref = dict.fromkeys(REFERENCES, 0.0)
        inst.centres.append((d.cy, d.cx))
        inst.boxes.append(box)
        inst.scores.append(d.score)
        for ref in REFERENCES:
            inst.reference_scores[ref].append(0.5 * (d.reference_scores[ref] + unet_ref[ref]))
    return inst


def pick_reference(inst: Instances, config: XrayConfig) -> tuple[int | None, str | None, float]:
    """(vertebra index, reference 'C2' or 'S', score) of the best reference, or (None, None,
    best score) when no vertebra reaches ``config.reference``."""
    best: tuple[int | None, str | None, float] = (None, None, 0.0)
    for ref, scores in inst.reference_scores.items():
        for i, s in enumerate(scores):
            if s > best[2]:
                best = (i, ref, s)
    if best[2] < config.reference:
        return None, None, best[2]
    return best
