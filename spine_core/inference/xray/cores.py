"""The ensemble's U-Net cores against the detector's detections: which detection confirms which
core, cores split between detections, and the unconfirmed cores that are still vertebrae."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.inference.xray.config import XrayConfig

if TYPE_CHECKING:
    from spine_core.inference.xray.decode import Detection

def split_cores(cores: npt.NDArray[np.int32], dets: list[Detection], margin: float
                ) -> npt.NDArray[np.int32]:
    """Cores with the centres of two or more detections in their box grown by ``margin`` of its
    size, at least half a box height apart along the rows (touching vertebrae whose cores ran
    together, or a core the reference merge joined to its neighbour's), split between those
    detections by the nearest centre (distance in box heights and widths)."""
    n = int(cores.max())
    if n == 0 or len(dets) < 2:
        return cores
    out = cores.copy()
    count = n
    for p, sl in enumerate(ndimage.find_objects(cores, max_label=n), start=1):
        if sl is None:
            continue
        inside = [d for d in dets if in_grown(sl, int(round(d.cy)), int(round(d.cx)), margin)]
        inside.sort(key=lambda d: d.cy)
        apart = [inside[0]] if inside else []
        for d in inside[1:]:
            if d.cy - apart[-1].cy > 0.5 * min(d.height, apart[-1].height):
                apart.append(d)
        if len(apart) < 2:
            continue
        ys, xs = np.nonzero(cores[sl] == p)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        dist = np.stack([((ys - d.cy) / d.height) ** 2 + ((xs - d.cx) / d.width) ** 2 for d in apart])
        nearest = dist.argmin(axis=0)
        for j in range(1, len(apart)):
            count += 1
            out[ys[nearest == j], xs[nearest == j]] = count
    if count == n:
        return out
    present = np.unique(out[out > 0])  # numbered 1..k again (a part may have got no pixel)
    lut = np.zeros(count + 1, np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[out]


def assign_cores(cores: npt.NDArray[np.int32], dets: list[Detection], margin: float) -> list[int]:
    """For each core 1..n, the index of the detection that confirms it, or -1: among the
    detections whose centre lies in the core's box grown by ``margin`` of its size, or whose box
    holds the core's centroid, the nearest (distance in box heights and widths). Several cores of
    one detection are parts of one vertebra."""
    n = int(cores.max())
    if n == 0:
        return []
    centroids = ndimage.center_of_mass(np.ones_like(cores), cores, np.arange(1, n + 1))
    owner = []
    for sl, (cy, cx) in zip(ndimage.find_objects(cores, max_label=n), centroids, strict=True):
        best, best_d = -1, np.inf
        if sl is not None:
            for k, d in enumerate(dets):
                y, x = int(round(d.cy)), int(round(d.cx))
                holds = abs(cy - d.cy) <= d.height / 2 and abs(cx - d.cx) <= d.width / 2
                if not (holds or in_grown(sl, y, x, margin)):
                    continue
                dist = _offset((cy, cx), d)
                if dist < best_d:
                    best, best_d = k, dist
        owner.append(best)
    first: dict[int, int] = {}  # detection -> its nearest core
    for p in sorted(range(n), key=lambda p: _offset(centroids[p], dets[owner[p]]) if owner[p] >= 0 else 0):
        k = owner[p]
        if k < 0:
            continue
        if k not in first:
            first[k] = p
        elif abs(centroids[p][0] - centroids[first[k]][0]) > ROW_SHARE * dets[k].height:
            owner[p] = -1  # another vertebra's core in a tall box, not a part beside the first
    return owner


#: Parts of one vertebra's core lie side by side: a second core of a detection is a part of its
#: vertebra only within this share of the box height, in rows, of the detection's nearest core.
ROW_SHARE = 0.3


def _offset(centroid: tuple[float, float], d: Detection) -> float:
    return ((centroid[0] - d.cy) / d.height) ** 2 + ((centroid[1] - d.cx) / d.width) ** 2


def loose_cores(cores: npt.NDArray[np.int32], owner: list[int], dets: list[Detection],
                config: XrayConfig) -> list[int]:
    """Cores no detection confirms that are still vertebrae: all of them without
    ``drop_unconfirmed``; with it, those of at least ``loose_core_fraction`` of the confirmed
    cores' median area (``edge_core_fraction`` of that near the grid's edge) whose centroid lies
    within ``spine_distance`` of the detections' median box width from the spine's line (a
    parabola through the confirmed detections' centres; the detector misses a vertebra cut by the
    film's edge, or faint at the film's end, more often than the U-Net does)."""
    loose = [p for p, d in enumerate(owner, start=1) if d < 0]
    if not loose or not config.drop_unconfirmed:
        return loose
    if config.loose_core_fraction > 1:
        return []
    n = len(owner)
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(cores), cores, index=index)
    centroids = ndimage.center_of_mass(np.ones_like(cores), cores, index)
    confirmed = sorted({d for d in owner if d >= 0})
    if len(confirmed) < 3:
        return []
    floor = config.loose_core_fraction * float(np.median([a for a, d in zip(areas, owner, strict=True)
                                                          if d >= 0]))
    rows = np.array([dets[k].cy for k in confirmed])
    cols = np.array([dets[k].cx for k in confirmed])
    line = np.polyfit(rows, cols, deg=2 if len(confirmed) >= 5 else 1)
    reach = config.spine_distance * float(np.median([dets[k].width for k in confirmed]))
    boxes = ndimage.find_objects(cores, max_label=n)
    margin = EDGE_SHARE * cores.shape[0]
    kept = []
    for p in loose:
        sl = boxes[p - 1]
        if sl is None:
            continue
        at_edge = (sl[0].start < margin or sl[1].start < margin or sl[0].stop > cores.shape[0] - margin
                   or sl[1].stop > cores.shape[1] - margin)
        cy, cx = centroids[p - 1]
        if (areas[p - 1] >= floor * (config.edge_core_fraction if at_edge else 1.0)
                and abs(cx - float(np.polyval(line, cy))) <= reach):
            kept.append(p)
    return kept


#: A core within this share of the grid's side from its edge belongs to a vertebra the field may
#: cut: its area floor is ``config.edge_core_fraction`` of the others'.
EDGE_SHARE = 0.04


def in_grown(sl: tuple[slice, slice], y: int, x: int, margin: float) -> bool:
    """Whether (y, x) lies in the box ``sl`` grown by ``margin`` of its size on each side."""
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    return (sl[0].start - margin * h <= y < sl[0].stop + margin * h
            and sl[1].start - margin * w <= x < sl[1].stop + margin * w)
