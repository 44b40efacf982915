"""Simulated readers: each reader's fracture boxes and per-level calls, for consensus demos.

A reader copies the ground-truth boxes with a few pixels of jitter on every edge, sometimes skips
a slice (mostly at the ends of a fracture), now and then misses a whole fracture, and sometimes
draws a spurious box run on an intact level. A reader calls a level fractured exactly when they
drew a box on it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt

from spine_core.boxes import Box
from spine_core.labels import CERVICAL, LEVEL_IDS

P_MISS_FRACTURE = 0.08
P_SKIP_SLICE = 0.06
P_SKIP_END_SLICE = 0.3
P_SPURIOUS = 0.15
JITTER_PX = 1.5


def reader_names(n: int) -> tuple[str, ...]:
    return tuple(f"reader{i}" for i in range(1, n + 1))


def _jitter(rng: np.random.Generator, box: Box, shape: tuple[int, int], reader: str) -> Box:
    x0, y0 = box.x + rng.normal(0, JITTER_PX), box.y + rng.normal(0, JITTER_PX)
    x1 = box.x + box.width + rng.normal(0, JITTER_PX)
    y1 = box.y + box.height + rng.normal(0, JITTER_PX)
    x0, x1 = float(np.clip(min(x0, x1 - 2), 0, shape[1] - 2)), float(np.clip(x1, 2, shape[1]))
    y0, y1 = float(np.clip(min(y0, y1 - 2), 0, shape[0] - 2)), float(np.clip(y1, 2, shape[0]))
    return Box(box.slice_index, round(x0, 2), round(y0, 2), round(max(x1 - x0, 2.0), 2),
               round(max(y1 - y0, 2.0), 2), reader=reader, level=box.level)


def _spurious(rng: np.random.Generator, labels: npt.NDArray[np.uint8], level: str,
              reader: str) -> list[Box]:
    lid = LEVEL_IDS[level]
    slices = np.flatnonzero((labels == lid).any(axis=(1, 2)))
    if slices.size < 4:
        return []
    k0 = int(rng.integers(slices[slices.size // 4], slices[3 * slices.size // 4] + 1))
    run = int(rng.integers(2, 6))
    out: list[Box] = []
    frac = rng.uniform(0.25, 0.45, 2)
    pos = rng.uniform(0, 1, 2)
    for k in range(k0, min(k0 + run, labels.shape[0])):
        rows, cols = np.nonzero(labels[k] == lid)
        if rows.size == 0:
            break
        h = (rows.max() - rows.min() + 1) * frac[0]
        w = (cols.max() - cols.min() + 1) * frac[1]
        y = rows.min() + pos[0] * (rows.max() - rows.min() + 1 - h)
        x = cols.min() + pos[1] * (cols.max() - cols.min() + 1 - w)
        out.append(_jitter(rng, Box(k, float(x), float(y), float(w), float(h), level=level),
                           labels.shape[1:], reader))
    return out


def simulate_readers(
    rng: np.random.Generator,
    truth: Sequence[Box],
    labels: npt.NDArray[np.uint8],
    n_readers: int = 3,
    present: Collection[str] | None = None,
) -> tuple[tuple[Box, ...], dict[str, dict[str, int]]]:
    """Each reader's boxes and calls (reader -> level -> 0/1 for C1–C7).

    ``present`` names the levels in the labels (computed from them when None).
    """
    by_level: dict[str, list[Box]] = {}
    for b in sorted(truth, key=lambda b: (b.level, b.slice_index)):
        by_level.setdefault(b.level or "?", []).append(b)
    if present is None:
        present = [lv for lv in CERVICAL if (labels == LEVEL_IDS[lv]).any()]
    present = [lv for lv in CERVICAL if lv in present]
    boxes: list[Box] = []
    calls: dict[str, dict[str, int]] = {}
    for reader in reader_names(n_readers):
        mine: list[Box] = []
        for level_boxes in by_level.values():
            if rng.random() < P_MISS_FRACTURE:
                continue
            ends = {level_boxes[0].slice_index, level_boxes[-1].slice_index}
            for b in level_boxes:
                at_end = b.slice_index in ends and len(level_boxes) > 2
                p_skip = P_SKIP_END_SLICE if at_end else P_SKIP_SLICE
                if rng.random() < p_skip:
                    continue
                mine.append(_jitter(rng, b, labels.shape[1:], reader))
        if rng.random() < P_SPURIOUS:
            intact = [lv for lv in present if lv not in by_level]
            if intact:
                mine += _spurious(rng, labels, intact[int(rng.integers(len(intact)))], reader)
        drawn = {b.level for b in mine}
        calls[reader] = {lv: int(lv in drawn) for lv in CERVICAL}
        boxes += mine
    return tuple(boxes), calls
