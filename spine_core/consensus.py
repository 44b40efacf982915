"""Box geometry, the union ground truth of several readers' boxes, and agreement statistics.

Boxes are :class:`spine_core.boxes.Box`: pixels of one stored axial slice, ``x`` = column and
``y`` = row of the top-left corner, ``width``/``height`` in pixels, ``slice_index`` the position of
the slice in the series (the Volume's a0 index). A box covers ``[x, x + width) × [y, y + height)``.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import numpy.typing as npt

from spine_core.adjudication import LevelCall, Reader, craniocaudal_key, parse_call
from spine_core.boxes import Box
from spine_core.errors import InputError
from spine_core.metrics import Confusion, UndefinedMetricWarning

# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def validate_box(box: Box, rows: int, cols: int, n_slices: int) -> Box:
    """Check that ``box`` has a positive size and lies inside a ``rows × cols`` image of a series
    of ``n_slices`` slices; returns the box.

    Raises:
        InputError: naming the box and the limits it breaks.
    """
    what = box.describe()
    values = (box.x, box.y, box.width, box.height)
    if not all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in values):
        raise InputError(f"{what}: coordinates must be finite numbers; draw the box again")
    if box.width <= 0 or box.height <= 0:
        raise InputError(
            f"{what}: width and height must be positive (a box needs an area); draw it again"
        )
    if box.x < 0 or box.y < 0 or box.x2 > cols or box.y2 > rows:
        raise InputError(
            f"{what} lies outside the {cols}×{rows} image (x from 0 to {cols}, y from 0 to "
            f"{rows}, top-left corner at the origin); draw it inside the image"
        )
    if int(box.slice_index) != box.slice_index or not 0 <= box.slice_index < n_slices:
        raise InputError(
            f"{what}: slice {box.slice_index} does not exist, the series has {n_slices} slices "
            f"(0 to {n_slices - 1})"
        )
    return box


def intersection_area(a: Box, b: Box) -> float:
    """Area shared by two boxes of the same slice (0 for different slices or mere contact)."""
    if a.slice_index != b.slice_index:
        return 0.0
    w = min(a.x2, b.x2) - max(a.x, b.x)
    h = min(a.y2, b.y2) - max(a.y, b.y)
    return w * h if w > 0 and h > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 for boxes on different slices."""
    inter = intersection_area(a, b)
    if inter == 0.0:
        return 0.0
    return inter / (a.area + b.area - inter)


def overlaps(a: Box, b: Box) -> bool:
    """True when the boxes share a positive area on the same slice (touching edges do not)."""
    return intersection_area(a, b) > 0.0


# --------------------------------------------------------------------------------------------
# Union of readers' boxes
# --------------------------------------------------------------------------------------------


def _box_key(box: Box) -> tuple[str, float, float, float, float, str]:
    return (str(box.reader), box.x, box.y, box.width, box.height, str(box.id))


@dataclass(frozen=True)
class UnionBox:
    """The smallest box enclosing a group of boxes of one slice, with the boxes it came from."""

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    members: tuple[Box, ...] = field(compare=False)

    @property
    def readers(self) -> tuple[Reader, ...]:
        """Distinct readers of the members, sorted."""
        return tuple(sorted({b.reader for b in self.members if b.reader is not None}, key=str))

    @property
    def n_readers(self) -> int:
        return len(self.readers)

    @property
    def levels(self) -> tuple[str, ...]:
        """Distinct levels the members were assigned, head to feet."""
        return tuple(sorted({b.level for b in self.members if b.level}, key=craniocaudal_key))

    @property
    def level(self) -> str | None:
        """The level when all labelled members agree on one, else None."""
        return self.levels[0] if len(self.levels) == 1 else None

    def as_box(self) -> Box:
        """The union as a plain :class:`Box` (no reader)."""
        return Box(self.slice_index, self.x, self.y, self.width, self.height, None, self.level)

    def member_ious(self) -> tuple[float, ...]:
        """IoU of each member with the union box (1.0 for a box that stayed alone)."""
        union = self.as_box()
        return tuple(iou(b, union) for b in self.members)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _linked(a: Box, b: Box, min_iou: float) -> bool:
    if min_iou == 0.0:
        return overlaps(a, b)
    return iou(a, b) >= min_iou


def union_boxes(boxes: Iterable[Box], *, min_iou: float = 0.0) -> list[UnionBox]:
    """Union ground truth: merge overlapping boxes of different readers, slice by slice.

    Two boxes of *different* readers on the same slice are linked when they overlap (any positive
    area when ``min_iou == 0``, else IoU >= ``min_iou``). Linked boxes form groups transitively
    (A~B and B~C puts A, B, C in one group, even if A and C do not touch); each group becomes the
    smallest box enclosing all its members, the RSNA rule of keeping the largest extent. A box
    linked to nothing stays as it is. Boxes of different slices never merge.

    Same reader: two boxes one reader drew on one slice are two findings of that reader and are
    not linked to each other, even when they overlap. The union reconciles *different* readers'
    views of a finding; it does not rewrite one reader's own annotation (a reader who meant one
    region draws one box). They still end in one group when another reader's box overlaps both,
    since that reader saw one finding spanning the two. :func:`self_overlaps` lists such pairs so
    they can be shown to the reader.

    Output is deterministic: sorted by slice, then y, x, height, width; members by reader, x, y.

    Raises:
        InputError: ``min_iou`` outside [0, 1] or a box without reader.
    """
    if not 0.0 <= float(min_iou) <= 1.0:
        raise InputError(f"min_iou {min_iou} must lie in [0, 1] (0: any overlap merges boxes)")
    by_slice: dict[int, list[Box]] = defaultdict(list)
    for box in boxes:
        if box.reader is None:
            raise InputError(
                f"{box.describe()} has no reader: the union merges boxes of different readers"
            )
        by_slice[int(box.slice_index)].append(box)

    out: list[UnionBox] = []
    for slice_index, members in by_slice.items():
        members = sorted(members, key=_box_key)
        groups = _UnionFind(len(members))
        for i, j in combinations(range(len(members)), 2):
            a, b = members[i], members[j]
            if str(a.reader) != str(b.reader) and _linked(a, b, float(min_iou)):
                groups.union(i, j)
        grouped: dict[int, list[Box]] = defaultdict(list)
        for i, box in enumerate(members):
            grouped[groups.find(i)].append(box)
        for group in grouped.values():
            x0 = min(b.x for b in group)
            y0 = min(b.y for b in group)
            x1 = max(b.x2 for b in group)
            y1 = max(b.y2 for b in group)
            out.append(UnionBox(slice_index, x0, y0, x1 - x0, y1 - y0, tuple(group)))
    out.sort(
        key=lambda u: (u.slice_index, u.y, u.x, u.height, u.width, [_box_key(b) for b in u.members])
    )
    return out


def self_overlaps(boxes: Iterable[Box]) -> list[tuple[Box, Box]]:
    """Pairs of overlapping boxes drawn by the same reader on the same slice (for review)."""
    by_key: dict[tuple[str, int], list[Box]] = defaultdict(list)
    for box in boxes:
        by_key[(str(box.reader), int(box.slice_index))].append(box)
    pairs: list[tuple[Box, Box]] = []
    for key in sorted(by_key):
        for a, b in combinations(sorted(by_key[key], key=_box_key), 2):
            if overlaps(a, b):
                pairs.append((a, b))
    return pairs


def member_ious(unions: Iterable[UnionBox]) -> list[tuple[Box, UnionBox, float]]:
    """Every member box with its union box and their IoU (how much each reader's box covers the
    consensus extent)."""
    return [(b, u, v) for u in unions for b, v in zip(u.members, u.member_ious())]


# --------------------------------------------------------------------------------------------
# Agreement statistics
# --------------------------------------------------------------------------------------------


def _undefined(reason: str) -> float:
    warnings.warn(reason, UndefinedMetricWarning, stacklevel=3)
    return math.nan


def fleiss_kappa(ratings: npt.ArrayLike) -> float:
    """Fleiss' kappa of a ``subjects × categories`` table of counts (each row: how many raters put
    that subject in each category; every row sums to the same number of raters n >= 2).

    ``kappa = (P - Pe) / (1 - Pe)`` with ``P`` the mean pairwise agreement per subject and ``Pe``
    the sum of squared category proportions (Fleiss 1971).

    Degenerate case: when every rating falls in one category, ``Pe = 1`` and kappa is 0/0. It
    returns NaN with an :class:`UndefinedMetricWarning` rather than 1.0: chance-corrected
    agreement cannot be measured without variation (a batch of normal studies all called normal
    says nothing about whether readers would agree on fractures). Show raw agreement instead.

    Raises:
        InputError: not a 2-D table of non-negative integer counts with equal row sums >= 2.
    """
    table = np.asarray(ratings, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise InputError(
            f"ratings must be a non-empty subjects × categories table, got shape {table.shape}"
        )
    if np.any(table < 0) or np.any(table != np.round(table)):
        raise InputError("ratings must be non-negative whole counts of raters per category")
    n_per_subject = table.sum(axis=1)
    n = n_per_subject[0]
    if not np.all(n_per_subject == n):
        raise InputError(
            "every subject must be rated by the same number of raters for Fleiss' kappa "
            f"(row sums: {sorted(set(n_per_subject.astype(int).tolist()))}); use "
            "krippendorff_alpha_nominal for missing ratings"
        )
    if n < 2:
        raise InputError(f"Fleiss' kappa needs at least 2 raters per subject, got {int(n)}")
    p_subject = (np.sum(table**2, axis=1) - n) / (n * (n - 1))
    p_bar = float(p_subject.mean())
    p_cat = table.sum(axis=0) / table.sum()
    p_e = float(np.sum(p_cat**2))
    if 1.0 - p_e <= 1e-12:
        return _undefined(
            "Fleiss' kappa is undefined: every rating falls in one category, so chance agreement "
            "is 1 (raw agreement is 100%)"
        )
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable | None]]) -> float:
    """Krippendorff's alpha for nominal data with missing values.

    ``units``: one row per unit (subject), one entry per rater, None (or NaN) where a rater gave
    no value. Units with fewer than two values are not pairable and are skipped. Computed from the
    coincidence matrix: ``alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k``
    (Krippendorff, "Computing Krippendorff's alpha-reliability", 2011).

    NaN with an :class:`UndefinedMetricWarning` when fewer than two pairable values exist or all
    values are equal (expected disagreement 0; see :func:`fleiss_kappa` for why not 1.0).
    """
    coincidences: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None and not (isinstance(v, float) and math.isnan(v))]
        m = len(values)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidences[(values[i], values[j])] += 1.0 / (m - 1)
    totals: dict[Hashable, float] = defaultdict(float)
    for (c, _), value in coincidences.items():
        totals[c] += value
    n = sum(totals.values())
    if n < 2:
        return _undefined("Krippendorff's alpha is undefined: fewer than two pairable values")
    observed = sum(v for (c, k), v in coincidences.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return _undefined(
            "Krippendorff's alpha is undefined: all values are the same category (no expected "
            "disagreement)"
        )
    return 1.0 - (n - 1) * observed / expected


def percent_agreement(units: Iterable[Sequence[Hashable | None]]) -> float:
    """Share of agreeing rater pairs over all pairable units (missing values skipped)."""
    agree = pairs = 0
    for unit in units:
        values = [v for v in unit if v is not None]
        for a, b in combinations(values, 2):
            pairs += 1
            agree += a == b
    if pairs == 0:
        return _undefined("percent agreement is undefined: no unit has two ratings")
    return agree / pairs


@dataclass(frozen=True)
class LevelAgreement:
    """Agreement of the readers on one level across studies.

    ``fleiss_kappa`` uses the studies rated by the largest number of readers (``n_kappa_subjects``
    of them; Fleiss needs equal raters per subject); ``alpha`` uses every study with two or more
    calls. NaN values mean undefined (see :func:`fleiss_kappa`).
    """

    level: str
    n_subjects: int
    n_kappa_subjects: int
    n_readers: int
    percent_agreement: float
    fleiss_kappa: float
    alpha: float


def level_agreement(
    calls: Mapping[Hashable, Mapping[Reader, Mapping[str, LevelCall | str]]],
    *,
    unsure_as_missing: bool = False,
) -> dict[str, LevelAgreement]:
    """Per-level agreement across readers from their calls: ``calls[study][reader][level]``.

    Categories are fractured / not fractured / unsure; with ``unsure_as_missing`` an unsure call is
    treated as no rating (agreement on the definite calls only). Levels come out head to feet.
    """
    categories = [c for c in LevelCall if not (unsure_as_missing and c is LevelCall.unsure)]
    per_level: dict[str, list[list[LevelCall]]] = defaultdict(list)
    readers_per_level: dict[str, set[str]] = defaultdict(set)
    for study in calls.values():
        by_level: dict[str, list[LevelCall]] = defaultdict(list)
        for reader, levels in study.items():
            for level, raw in levels.items():
                call = parse_call(raw)
                if unsure_as_missing and call is LevelCall.unsure:
                    continue
                by_level[level].append(call)
                readers_per_level[level].add(str(reader))
        for level, values in by_level.items():
            per_level[level].append(values)

    out: dict[str, LevelAgreement] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for level in sorted(per_level, key=craniocaudal_key):
            units = [u for u in per_level[level] if len(u) >= 2]
            if units:
                full = max(len(u) for u in units)
                complete = [u for u in units if len(u) == full]
                table = [[u.count(c) for c in categories] for u in complete]
                kappa = fleiss_kappa(table)
            else:
                complete, kappa = [], math.nan
            out[level] = LevelAgreement(
                level=level,
                n_subjects=len(units),
                n_kappa_subjects=len(complete),
                n_readers=len(readers_per_level[level]),
                percent_agreement=percent_agreement(units) if units else math.nan,
                fleiss_kappa=kappa,
                alpha=krippendorff_alpha_nominal(units),
            )
    return out


@dataclass(frozen=True)
class ReaderPerformance:
    """One reader's definite calls against the final labels; unsure calls are counted apart and
    left out of sensitivity and specificity."""

    reader: Reader
    confusion: Confusion
    unsure: int
    unlabelled: int

    @property
    def sensitivity(self) -> float:
        return self.confusion.sensitivity

    @property
    def specificity(self) -> float:
        return self.confusion.specificity


def reader_performance(
    calls: Mapping[Hashable, Mapping[Reader, Mapping[str, LevelCall | str]]],
    final: Mapping[Hashable, Mapping[str, bool]],
    *,
    readers: Collection[Reader] | None = None,
) -> dict[Reader, ReaderPerformance]:
    """Sensitivity/specificity of each reader's level calls against the final labels.

    ``calls[study][reader][level]``; ``final[study][level]``. Calls on levels without a final
    label are counted in ``unlabelled`` and otherwise ignored.
    """
    counts: dict[Reader, dict[str, int]] = defaultdict(
        lambda: {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "unsure": 0, "unlabelled": 0}
    )
    for study, by_reader in calls.items():
        truth = final.get(study, {})
        for reader, levels in by_reader.items():
            if readers is not None and reader not in readers:
                continue
            c = counts[reader]
            for level, raw in levels.items():
                call = parse_call(raw)
                if level not in truth or truth[level] is None:
                    c["unlabelled"] += 1
                elif call is LevelCall.unsure:
                    c["unsure"] += 1
                else:
                    said, real = call is LevelCall.fractured, bool(truth[level])
                    c[("t" if said == real else "f") + ("p" if said else "n")] += 1
    return {
        reader: ReaderPerformance(
            reader, Confusion(c["tp"], c["fp"], c["tn"], c["fn"]), c["unsure"], c["unlabelled"]
        )
        for reader, c in sorted(counts.items(), key=lambda item: str(item[0]))
    }
