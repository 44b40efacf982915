"""From network outputs on the grid to vertebra instances, for each model alone and the ensemble.

* **U-Net output**: with ``unet_flip``, the mean of its output on the film and on the film's
  left-right mirror (mirrored back); the detector reads the film once.
* **U-Net alone**: seeds are the connected parts of the *core* channel (the middle of each
  vertebra: the largest part of its pixels at least ``core_fraction`` of its largest inner distance
  from its edge, so touching vertebrae get cores well apart); parts the C2 (or S) channel claims
  are one seed. Every pixel of at least ``film_foreground`` vertebra probability joins a seed by a
  watershed of the inverted core probability. An instance under ``min_instance_fraction`` of the
  median instance area, off the grid's edge, joins the neighbour it touches most (a fragment
  would shift every label counted past it). The reference is the instance with the highest mean
  C2 (or S) probability.
* **Detector alone**: peaks of the centre heatmap (a weaker peak inside half a stronger one's box
  is dropped) with their regressed boxes; each box, filled, is the vertebra's mask. The reference
  is the detection with the highest C2 (or S) heatmap value.
* **Ensemble** (the rule the model card states): the detector says *where the vertebrae are*, the
  U-Net *which pixels are bone*. A core holding the centres of two detections half a box apart is
  split between them (nearest centre). A detection confirms the nearest core whose box, grown by
  ``box_margin``, holds its centre or whose centroid its box holds; further cores it confirms
  beside that one (within 0.3 of its box height in rows) are parts of the same vertebra, one seed.
  With ``drop_unconfirmed``, a core no detection confirms is a vertebra only when it is at least
  ``loose_core_fraction`` of the confirmed cores' median area (``edge_core_fraction`` of that
  near the grid's edge, where the field cuts vertebrae the detector misses) and lies within
  ``spine_distance`` of a box width from the spine's line through the detections; with
  ``keep_reference_cores``, a core the U-Net's C2 (or S) channel claims (mean at least
  ``reference_merge``) is a vertebra whatever the detector says. A detection of at least ``add_peak``
  on the U-Net's foreground, at least half its box's height from every seed, adds a vertebra
  seeded by a small disk at its centre. Every pixel of at least ``film_foreground`` joins a seed
  by the watershed above, and fragments no detection backs merge as above. A vertebra's reference
  score is the mean of the detector's C2 (or S) heatmap at its centre and the U-Net's mean C2 (or
  S) probability over its mask; the highest score over both references picks the reference
  vertebra (and so the film's region) if it reaches ``config.reference``.
* **On the film**: grid instances (the boxes aside) grow by ``film_expand_px`` and are drawn where
  the U-Net's probability, upsampled bilinearly, reaches ``film_foreground``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.inference.xray.config import (
    DETECTOR_REFERENCE_CHANNEL,
    LUMBAR_CHANNEL,
    REFERENCES,
    UNET_REFERENCE_CHANNEL,
    XrayConfig,
)
from spine_core.inference.xray.cores import assign_cores, loose_cores, split_cores


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
    lumbar: list[float] = field(default_factory=list)  # mean lumbar probability (empty: none)

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
    """Drop a weaker detection whose centre lies inside a stronger one's box shrunk to half its
    height and width (neighbouring vertebrae are about a height apart)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(abs(d.cy - k.cy) > k.height / 2 or abs(d.cx - k.cx) > k.width / 2 for k in kept):
            kept.append(d)
    return kept


def _box_of(mask: npt.NDArray[np.bool_]) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def core_seeds(probs: npt.NDArray[np.float32], config: XrayConfig) -> npt.NDArray[np.int32]:
    """The U-Net's instance seeds: connected parts of its core (on its foreground) of at least
    ``min_core_px`` pixels, numbered 1..n; parts whose mean C2 (or S) probability reaches
    ``reference_merge`` are one seed per reference (the sacrum or C2 in several pieces is one
    vertebra; above 1, never)."""
    fg = probs[0] >= config.foreground
    core, n = ndimage.label((probs[1] >= config.core) & fg)
    if not n:
        return core.astype(np.int32)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(core), core, index=index)
    lut = np.zeros(n + 1, np.int32)
    merged: dict[str, int] = {}
    count = 0
    for i, size in zip(index, sizes, strict=True):
        if size < config.min_core_px:
            continue
        ref = next((r for r, ch in UNET_REFERENCE_CHANNEL.items()
                    if float(ndimage.mean(probs[ch], core, i)) >= config.reference_merge), None)
        if ref is not None and ref in merged:
            lut[i] = merged[ref]
            continue
        count += 1
        lut[i] = count
        if ref is not None:
            merged[ref] = count
    return lut[core]


def reference_cores(cores: npt.NDArray[np.int32], owner: list[int], probs: npt.NDArray[np.float32],
                    config: XrayConfig) -> set[int]:
    """Cores no detection confirms whose mean C2 (or S) probability reaches ``reference_merge``:
    the U-Net's reference vertebra, a vertebra even where the detector missed it (a sacrum with
    a sacralised L5 beside it)."""
    out = set()
    for p, k in enumerate(owner, start=1):
        if k < 0 and any(float(ndimage.mean(probs[ch], cores, p)) >= config.reference_merge
                         for ch in UNET_REFERENCE_CHANNEL.values()):
            out.add(p)
    return out


def _grow(seeds: npt.NDArray[np.int32], probs: npt.NDArray[np.float32], config: XrayConfig
          ) -> npt.NDArray[np.int32]:
    """Every foreground pixel joins a seed: watershed of the inverted core probability from the
    seeds, over the foreground (a pixel goes to the vertebra whose core it runs down to)."""
    from skimage.segmentation import watershed

    fg = (probs[0] >= min(config.foreground, config.film_foreground)) | (seeds > 0)
    if not seeds.any():
        return np.zeros_like(seeds)
    return watershed(-probs[1], markers=seeds, mask=fg).astype(np.int32)


def _merge_small(labels: npt.NDArray[np.int32], n: int, fraction: float,
                 keep: set[int] | frozenset[int] = frozenset()) -> npt.NDArray[np.int32]:
    """Instances under ``fraction`` of the median instance area, off the grid's edge, join the
    neighbour they touch most (a fragment is no vertebra of its own; one would shift every label
    counted past it), or are dropped when they touch none. Cut vertebrae at the edge stay, and
    so do the instances in ``keep`` (those a detection of their own backs)."""
    if n < 3 or fraction <= 0:
        return labels
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    present = areas[areas > 0]
    if not present.size:
        return labels
    floor = fraction * float(np.median(present))
    out = labels.copy()
    boxes = ndimage.find_objects(out, max_label=n)
    g0, g1 = out.shape
    for i in np.argsort(areas):
        k, sl = int(i) + 1, boxes[int(i)]
        if areas[i] >= floor:
            break
        if k in keep or sl is None or sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == g0 or sl[1].stop == g1:
            continue
        win = tuple(slice(max(0, a.start - 1), a.stop + 1) for a in sl)
        mask = out[win] == k
        ring = out[win][ndimage.binary_dilation(mask) & ~mask]
        ring = ring[(ring > 0) & (ring != k)]
        out[win][mask] = int(np.bincount(ring).argmax()) if ring.size else 0
    return out


def _instances_from_labels(labels: npt.NDArray[np.int32], n: int, probs: npt.NDArray[np.float32],
                           det: npt.NDArray[np.float32] | None, scores: list[float] | None = None,
                           centres: list[tuple[float, float]] | None = None) -> Instances:
    """Centres, boxes, scores and reference scores of labels 1..n (empty labels dropped)."""
    inst = Instances(np.zeros_like(labels), [], [], [], {ref: [] for ref in REFERENCES})
    k = 0
    for i in range(1, n + 1):
        mask = labels == i
        if not mask.any():
            continue
        k += 1
        inst.labels[mask] = k
        ys, xs = np.nonzero(mask)
        cy, cx = centres[i - 1] if centres else (float(ys.mean()), float(xs.mean()))
        inst.centres.append((cy, cx))
        inst.boxes.append(_box_of(mask))
        inst.scores.append(scores[i - 1] if scores else float(probs[0][mask].mean()))
        if probs.shape[0] > LUMBAR_CHANNEL:
            inst.lumbar.append(float(probs[LUMBAR_CHANNEL][mask].mean()))
        for ref, ch in UNET_REFERENCE_CHANNEL.items():
            unet_ref = float(probs[ch][mask].mean())
            if det is None:
                inst.reference_scores[ref].append(unet_ref)
            else:
                y = int(round(min(max(cy, 0), det.shape[1] - 1)))
                x = int(round(min(max(cx, 0), det.shape[2] - 1)))
                inst.reference_scores[ref].append(
                    0.5 * (unet_ref + float(det[DETECTOR_REFERENCE_CHANNEL[ref], y, x])))
    return inst


def unet_instances(probs: npt.NDArray[np.float32], config: XrayConfig) -> Instances:
    """The U-Net alone (module docstring); ``probs`` is its sigmoid output (4, g, g)."""
    seeds = core_seeds(probs, config)
    n = int(seeds.max())
    labels = _merge_small(_grow(seeds, probs, config), n, config.min_instance_fraction)
    return _instances_from_labels(labels, n, probs, None)


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


def ensemble_instances(probs: npt.NDArray[np.float32], det: npt.NDArray[np.float32],
                       dets: list[Detection], config: XrayConfig) -> Instances:
    """The ensemble rule (module docstring); ``det`` is the detector's output (5, g, g)."""
    g = probs.shape[-1]
    cores = split_cores(core_seeds(probs, config), dets, config.box_margin)
    fg = probs[0] >= config.foreground
    owner = assign_cores(cores, dets, config.box_margin)
    seeds = np.zeros_like(cores)
    scores: list[float] = []
    backed: set[int] = set()
    seed_of: dict[int, int] = {}
    for p, k in enumerate(owner, start=1):
        if k < 0:
            continue
        if k not in seed_of:  # one seed per detection: its cores are parts of one vertebra
            scores.append(dets[k].score)
            seed_of[k] = len(scores)
            backed.add(len(scores))
        seeds[cores == p] = seed_of[k]
    loose = set(loose_cores(cores, owner, dets, config))
    if config.keep_reference_cores:
        loose |= reference_cores(cores, owner, probs, config)
    for p in sorted(loose):
        scores.append(0.0)
        seeds[cores == p] = len(scores)
    away = ndimage.distance_transform_edt(seeds == 0) if seeds.any() else np.full((g, g), np.inf)
    yy, xx = np.ogrid[:g, :g]
    added: list[Detection] = []
    for k, d in enumerate(dets):  # strongest first
        y, x = int(round(min(d.cy, g - 1))), int(round(min(d.cx, g - 1)))
        if (k in seed_of or d.score < config.add_peak or not fg[y, x] or away[y, x] < 0.5 * d.height
                or any(abs(d.cy - a.cy) <= a.height / 2 for a in added)):
            continue
        added.append(d)
        scores.append(d.score)
        backed.add(len(scores))
        r = max(1.0, config.seed_radius * min(d.height, d.width))
        seeds[((yy - d.cy) ** 2 + (xx - d.cx) ** 2 <= r * r) & (seeds == 0)] = len(scores)
    labels = _merge_small(_grow(seeds, probs, config), len(scores), config.min_instance_fraction,
                          keep=backed)
    return _instances_from_labels(labels, len(scores), probs, det, scores)


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
