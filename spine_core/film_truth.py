"""The final truth of a radiograph from its readers' vertebra boxes: labels (the committee's
chosen labelling applied), the union per label, a label map, and COCO's run-length masks.

* :func:`adopt_labelling` — every reader's boxes labelled as the chosen reader labels them: a box
  matched by position to one of the chosen reader's takes its label; an unmatched box of a reader
  whose labels were shifted is moved back by that shift;
* :func:`truth_map` — a label map (canonical level ids, uint8) of the final boxes: inside each box
  the vertebra's pixels of the film's mask when it has one (the mask's own numbering replaced by
  the readers'), else the whole box;
* :func:`rle_encode` / :func:`rle_decode` — COCO's uncompressed run-length encoding (column-major
  runs starting with background), as ``pycocotools`` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.boxes import Box
from spine_core.consensus import UnionBox
from spine_core.film_labels import compare_labels, moved_level, union_by_label
from spine_core.labels import LEVEL_IDS


def adopt_labelling(by_reader: Mapping[str, Sequence[Box]], chosen: str | None) -> list[Box]:
    """Every reader's boxes, relabelled to ``chosen``'s labelling (None: as they are)."""
    if chosen is None or chosen not in by_reader:
        return [b for boxes in by_reader.values() for b in boxes]
    out = list(by_reader[chosen])
    for reader, boxes in by_reader.items():
        if reader == chosen:
            continue
        comparison = compare_labels(chosen, by_reader[chosen], reader, boxes)
        matched = {id(p.b): p.a.level for p in comparison.pairs}
        for box in boxes:
            if id(box) in matched and matched[id(box)]:
                out.append(replace(box, level=matched[id(box)]))
            elif comparison.shift and box.level:
                out.append(replace(box, level=moved_level(box.level, -comparison.shift)))
            else:
                out.append(box)
    return out


def final_film_boxes(by_reader: Mapping[str, Sequence[Box]], chosen: str | None = None,
                     *, min_iou: float = 0.0) -> list[tuple[str, UnionBox]]:
    """(label, union box) of the film's final truth, head to feet."""
    unions = union_by_label(adopt_labelling(by_reader, chosen), min_iou=min_iou)
    return [(label, u) for label, group in unions.items() for u in group]


def truth_map(shape: tuple[int, int], boxes: Sequence[tuple[str, UnionBox]],
              mask: npt.NDArray[np.integer] | None = None) -> npt.NDArray[np.uint8]:
    """A ``rows × cols`` label map of the final boxes (canonical ids; 0 background)."""
    out = np.zeros(shape, dtype=np.uint8)
    for label, box in boxes:
        region = _region(box, shape)
        if mask is None:
            out[region] = LEVEL_IDS[label]
            continue
        inside = np.asarray(mask)[region]
        values, counts = np.unique(inside[inside > 0], return_counts=True)
        if values.size:  # the vertebra the box outlines: the mask's largest label inside it
            target = out[region]
            target[inside == values[np.argmax(counts)]] = LEVEL_IDS[label]
    return out


def _region(box: UnionBox | Box, shape: tuple[int, int]) -> tuple[slice, slice]:
    rows, cols = shape
    y0, x0 = max(int(np.floor(box.y)), 0), max(int(np.floor(box.x)), 0)
    y1 = min(int(np.ceil(box.y + box.height)), rows)
    x1 = min(int(np.ceil(box.x + box.width)), cols)
    return slice(y0, y1), slice(x0, x1)


def rle_encode(binary: npt.ArrayLike) -> dict[str, Any]:
    """COCO uncompressed RLE of a 2-D boolean mask: ``{"size": [h, w], "counts": [...]}``."""
    arr = np.asarray(binary, dtype=bool)
    flat = arr.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0])))) if flat.size else np.zeros(0)
    edges = np.concatenate(([0], changes, [flat.size])) if flat.size else np.array([0, 0])
    counts = np.diff(edges).astype(int).tolist()
    if counts and counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [int(arr.shape[0]), int(arr.shape[1])], "counts": counts}


def rle_decode(rle: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """The boolean mask of a COCO uncompressed RLE."""
    rows, cols = (int(v) for v in rle["size"])
    flat = np.zeros(rows * cols, dtype=bool)
    pos, value = 0, False
    for run in rle["counts"]:
        flat[pos:pos + int(run)] = value
        pos += int(run)
        value = not value
    return flat.reshape((rows, cols), order="F")
