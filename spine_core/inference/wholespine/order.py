"""Anatomical order of vertebra labels: instances ordered head to foot get consecutive levels.

A low-resolution network labels each vertebra, but can be off by one in a long run of similar
levels (mid-thoracic, lumbar). :func:`order_levels` treats each predicted vertebra (a connected
component of one label) as an *instance*, sorts the instances head to foot and chooses, by dynamic
programming (Viterbi), the sequence of levels that

* follows the craniocaudal chain C1 … C7, T1 … T12, (T13), L1 … L5, (L6), S with no gap (one
  level passed over at a cost: a vertebra missed or merged), where T12 → L1 (no T13), T11 → L1
  (11 rib-bearing vertebrae) and L5 → S (no L6) are ordinary steps;
* may start and end at any level (a study sees part of the spine);
* costs the least, an instance's cost for a level being ``-log`` of the network's mean
  probability of that level over its voxels (or its vote share when no probabilities are given),
  weighted by its size relative to half the typical vertebra (fragments count less); dropping
  a fragment and passing over a missed level have costs too.

Strong anchors (C1/C2 and the skull base, the last rib, the sacrum) thus fix the labels of the
whole run. Pure numpy/scipy: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.labels import CRANIOCAUDAL_ORDER

#: The levels a whole-spine labelling uses, head to foot (the coccyx, 27, is not labelled).
CHAIN: tuple[int, ...] = tuple(v for v in CRANIOCAUDAL_ORDER if v != 27)

#: Extra steps besides chain neighbours: T12 -> L1 (no T13), T11 -> L1 (11 ribs), L5 -> S (no L6).
EXTRA_STEPS: frozenset[tuple[int, int]] = frozenset({(19, 20), (18, 20), (24, 26)})


@dataclass(frozen=True)
class Instance:
    """One predicted vertebra: its component id, voxel count, centroid (LPS mm) and label."""

    index: int
    size: int
    centroid: tuple[float, float, float]
    label: int


def allowed_steps(chain: Sequence[int] = CHAIN) -> set[tuple[int, int]]:
    """Pairs (level above, level below) that may be neighbouring instances."""
    steps = {(a, b) for a, b in zip(chain, chain[1:])}
    return steps | {s for s in EXTRA_STEPS if s[0] in chain and s[1] in chain}


def viterbi_levels(
    costs: npt.NDArray[np.float64], chain: Sequence[int] = CHAIN,
    steps: set[tuple[int, int]] | None = None,
    drop_costs: npt.NDArray[np.float64] | None = None,
    skip_cost: float = np.inf,
) -> list[int]:
    """The cheapest consecutive level sequence for instances ordered head to foot.

    ``costs[k, j]`` is the cost of giving instance ``k`` the level ``chain[j]``; ``drop_costs[k]``
    (default: never) that of calling it no vertebra (level 0, e.g. a spurious fragment), which
    leaves the chain where it was; ``skip_cost`` (default: never) that of passing over one level
    (a vertebra the network missed or merged with its neighbour). Returns one level per instance;
    the levels kept strictly descend the chain through ``steps``.
    """
    n, m = costs.shape
    if n == 0:
        return []
    drops = np.full(n, np.inf) if drop_costs is None else np.asarray(drop_costs, dtype=np.float64)
    step_set = allowed_steps(chain) if steps is None else steps
    pos = {lv: j for j, lv in enumerate(chain)}
    preds: list[list[tuple[int, float]]] = [[(pos[a], 0.0) for (a, b) in step_set if b == lv]
                                            for lv in chain]
    if np.isfinite(skip_cost):
        for j in range(2, m):
            preds[j].append((j - 2, float(skip_cost)))
    none = m  # state "no level given yet"
    total = np.full(m + 1, np.inf)
    total[none] = 0.0
    back = np.zeros((n, m + 1), dtype=np.int64)  # previous state of each state
    kept = np.zeros((n, m + 1), dtype=bool)  # whether instance k took the state's level
    for k in range(n):
        nxt = total + drops[k]  # drop instance k: the state stays
        back[k] = np.arange(m + 1)
        for j in range(m):
            best, arg = total[none], none
            for i, extra in preds[j]:
                if total[i] + extra < best:
                    best, arg = total[i] + extra, i
            if best + costs[k, j] < nxt[j]:
                nxt[j] = best + costs[k, j]
                back[k, j] = arg
                kept[k, j] = True
        total = nxt
    state = int(np.argmin(total))
    if not np.isfinite(total[state]):  # more instances than the chain has levels: keep the labels
        return [int(chain[int(np.argmin(costs[k]))]) for k in range(n)]
    out = []
    for k in range(n - 1, -1, -1):
        out.append(int(chain[state]) if kept[k, state] else 0)
        state = int(back[k, state])
    return list(reversed(out))


def reference_size(sized: Sequence[tuple[int, int]]) -> float:
    """The typical size of a vertebra: the median over labels of each label's largest component
    (``sized``: (size, label) pairs), so that many small fragments do not lower it."""
    largest: dict[int, int] = {}
    for size, label in sized:
        largest[label] = max(size, largest.get(label, 0))
    return float(np.median(list(largest.values()))) if largest else 0.0


def instances_of(
    labels: npt.NDArray[np.integer], spacing: Sequence[float], min_fraction: float = 0.15,
) -> tuple[npt.NDArray[np.int32], list[Instance]]:
    """Connected components of each label (26-connected) as instances, head first.

    Components smaller than ``min_fraction`` of :func:`reference_size` are dropped (0 in the
    returned component map). ``labels`` is on a grid whose axis 0 points to the head (the model
    grid, ``S``); the centroid is in voxel units times ``spacing``.
    """
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool)
    comp = np.zeros(labels.shape, dtype=np.int32)
    found: list[tuple[int, int]] = []  # (component id, label)
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False))
    next_id = 1
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        sub = labels[box] == value
        lab, n = ndimage.label(sub, structure=structure)
        view = comp[box]
        view[sub] = lab[sub] + (next_id - 1)
        found += [(next_id + i, value) for i in range(n)]
        next_id += n
    if not found:
        return comp, []
    sizes = np.bincount(comp.ravel(), minlength=next_id)
    ids = np.array([c for c, _ in found])
    centres = ndimage.center_of_mass(np.ones(comp.shape, dtype=np.uint8), comp, ids)
    median = reference_size([(int(sizes[c]), v) for c, v in found])
    sp = np.asarray(spacing, dtype=np.float64)
    out: list[Instance] = []
    for (cid, value), c in zip(found, centres):
        if sizes[cid] < min_fraction * median:
            comp[comp == cid] = 0
            continue
        mm = np.asarray(c) * sp
        out.append(Instance(cid, int(sizes[cid]), (float(mm[0]), float(mm[1]), float(mm[2])), value))
    out.sort(key=lambda inst: -inst.centroid[0])
    return comp, out


def _merge_split(comp: npt.NDArray[np.int32], inst: list[Instance], max_gap_fraction: float,
                 same_label_fraction: float = 0.75) -> list[Instance]:
    """Merge neighbouring instances (head-to-foot order) that are one vertebra: centroids much
    closer than the typical step (a vertebra split between two labels), or pieces of one label
    closer than ``same_label_fraction`` of it (a ring such as C1 broken up on a coarse grid).
    The typical step is measured between instances of at least half the reference size."""
    if len(inst) < 3:
        return inst
    ref = reference_size([(i.size, i.label) for i in inst])
    big_ones = [i for i in inst if i.size >= 0.5 * ref] or inst
    gaps = [abs(a.centroid[0] - b.centroid[0]) for a, b in zip(big_ones, big_ones[1:])]
    typical = float(np.median(gaps)) if gaps else 0.0
    out = [inst[0]]
    for cur in inst[1:]:
        prev = out[-1]
        gap = abs(prev.centroid[0] - cur.centroid[0])
        limit = same_label_fraction if prev.label == cur.label else max_gap_fraction
        if gap < limit * typical:
            big, small = (prev, cur) if prev.size >= cur.size else (cur, prev)
            comp[comp == small.index] = big.index
            total = big.size + small.size
            c = tuple((np.asarray(big.centroid) * big.size + np.asarray(small.centroid) * small.size)
                      / total)
            out[-1] = Instance(big.index, total, (float(c[0]), float(c[1]), float(c[2])), big.label)
        else:
            out.append(cur)
    return out


def mean_probabilities(
    comp: npt.NDArray[np.int32], probs: npt.NDArray[np.floating], channel_levels: Sequence[int]
) -> dict[int, dict[int, float]]:
    """Component id -> level -> mean of ``probs[channel]`` over the component's voxels."""
    fg = comp > 0
    ids = comp[fg]
    if ids.size == 0:
        return {}
    n = int(ids.max()) + 1
    sizes = np.bincount(ids, minlength=n).astype(np.float64)
    present = np.flatnonzero(sizes)
    out: dict[int, dict[int, float]] = {int(c): {} for c in present}
    for ch, level in enumerate(channel_levels):
        if level == 0:
            continue
        sums = np.bincount(ids, weights=np.asarray(probs[ch][fg], dtype=np.float64), minlength=n)
        for c in present:
            out[int(c)][int(level)] = float(sums[c] / sizes[c])
    return out


def order_levels(
    labels: npt.NDArray[np.integer],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    probs: npt.NDArray[np.floating] | None = None,
    channel_levels: Sequence[int] = (),
    *,
    chain: Sequence[int] = CHAIN,
    min_fraction: float = 0.15,
    merge_fraction: float = 0.4,
    drop_cost: float = 12.0,
    skip_cost: float = 3.0,
) -> tuple[npt.NDArray[np.uint8], dict[int, int]]:
    """Relabel a canonical-id label map so its vertebrae follow the anatomical order.

    ``labels`` is on a grid whose axis 0 points to the head, ``spacing`` its voxel size (mm).
    ``probs`` (channels, *labels.shape) are the network's softmax outputs, ``channel_levels`` the
    level of each channel (0: background); ``None`` scores each instance by its own label only (a
    vote). Returns the relabelled map (dropped fragments: 0) and the renaming (old label -> new
    level, for the labels that changed).
    """
    comp, inst = instances_of(labels, spacing, min_fraction)
    inst = _merge_split(comp, inst, merge_fraction)
    if not inst:
        return np.zeros(labels.shape, dtype=np.uint8), {}
    level_probs = (mean_probabilities(comp, probs, channel_levels) if probs is not None else None)
    median = reference_size([(i.size, i.label) for i in inst])
    eps = 1e-4
    costs = np.zeros((len(inst), len(chain)))
    for k, i in enumerate(inst):
        if level_probs is not None and i.index in level_probs:
            p = level_probs[i.index]
            row = np.array([float(p.get(lv, 0.0)) for lv in chain])
        else:
            row = np.array([0.9 if lv == i.label else 0.1 / (len(chain) - 1) for lv in chain])
        costs[k] = -np.log(row + eps) * min(1.0, 2.0 * i.size / median)
    drops = np.array([drop_cost * min(1.0, 2.0 * i.size / median) ** 2 for i in inst])
    levels = viterbi_levels(costs, chain, drop_costs=drops, skip_cost=skip_cost)
    lut = np.zeros(int(comp.max()) + 1, dtype=np.uint8)
    renamed: dict[int, int] = {}
    for i, lv in zip(inst, levels):
        lut[i.index] = lv
        if lv != i.label:
            renamed[i.label] = lv
    return lut[comp], renamed
