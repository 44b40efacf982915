"""Vertebra labels on a radiograph: match two readers' boxes by position, compare their labels,
and find a labelling shifted by one level (one reader counted from a different vertebra).

On a film every box is one vertebra with the reader's label (C1–C7, T1–T13, L1–L6, S). Two
readers' boxes are matched by position (box IoU, greedily best first, each box at most once).
On the matched pairs:

* **agreement**: the mean IoU of the pairs and the share of pairs with the same label;
* **shift**: how many levels reader B's label lies below reader A's on each pair (+1: B says
  C4 where A says C3). When at least :data:`SHIFT_SHARE` of the pairs are shifted by the same
  one level, the readers disagree on the *counting*, not on each vertebra: one labelling
  dispute, not one disagreement per vertebra.

Level steps are counted on the usual ladder C1…C7, T1…T12, L1…L5, S; T13 and L6 (transitional
vertebrae) join the ladder only for a pair that names them, so T12 → L1 is one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spine_core.boxes import Box
from spine_core.consensus import UnionBox, iou, union_boxes
from spine_core.errors import InputError, LabelVocabularyError
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_NAMES, level_id, level_name

#: Boxes of two readers with at least this IoU may be one vertebra.
MATCH_MIN_IOU = 0.3
#: The share of matched pairs that must be shifted by the same level to call it a labelling shift.
SHIFT_SHARE = 0.75
#: Fewer matched pairs than this never make a labelling shift (one vertebra is a disagreement).
SHIFT_MIN_PAIRS = 2
#: The reference vertebra from which a film is counted, by region of the film.
REFERENCE_LEVELS: dict[str, str] = {"cervical": "C2", "lumbar": "S"}
#: Levels a reader may give a box on a film, head to feet.
FILM_LEVELS: tuple[str, ...] = tuple(LEVEL_NAMES[i] for i in CRANIOCAUDAL_ORDER if LEVEL_NAMES[i] != "Co")

_TRANSITIONAL = ("T13", "L6")


def film_level(text: str) -> str:
    """A film label in canonical spelling ('l3' -> 'L3'; 'S1' and 'sacrum' -> 'S').

    Raises:
        InputError: not a vertebra a box on a film can be (one line, naming what is allowed).
    """
    raw = str(text).strip()
    key = "S" if raw.upper() in ("S1", "SACRUM") else raw
    try:
        name = level_name(level_id(key))
    except LabelVocabularyError:
        raise InputError(f"{text!r} is not a vertebra label: use C1–C7, T1–T13, L1–L6 or S1") from None
    if name not in FILM_LEVELS:
        raise InputError(f"{name} cannot label a vertebra on a film: use C1–C7, T1–T13, L1–L6 or S1")
    return name


def shown_level(name: str) -> str:
    """A level as a radiologist reads it on a film: the sacrum's top vertebra is 'S1'."""
    return "S1" if name == "S" else name


def level_step(a: str, b: str) -> int:
    """How many levels ``b`` lies below ``a`` (negative: above) on the ladder (see module)."""
    na, nb = film_level(a), film_level(b)
    ladder = [lvl for lvl in FILM_LEVELS if lvl not in _TRANSITIONAL or lvl in (na, nb)]
    return ladder.index(nb) - ladder.index(na)


def moved_level(name: str, steps: int) -> str | None:
    """The level ``steps`` below ``name`` on the ladder (negative: above); None past either end."""
    start = film_level(name)
    ladder = [lvl for lvl in FILM_LEVELS if lvl not in _TRANSITIONAL or lvl == start]
    index = ladder.index(start) + int(steps)
    return ladder[index] if 0 <= index < len(ladder) else None


@dataclass(frozen=True)
class MatchedPair:
    """A box of reader A and a box of reader B taken for one vertebra."""

    a: Box
    b: Box
    iou: float

    @property
    def step(self) -> int | None:
        """Levels B's label lies below A's (None when either box has no label)."""
        if not self.a.level or not self.b.level:
            return None
        return level_step(self.a.level, self.b.level)


def match_boxes(a: Iterable[Box], b: Iterable[Box], *, min_iou: float = MATCH_MIN_IOU
                ) -> list[MatchedPair]:
    """Pair reader A's boxes with reader B's by position: best IoU first, each box once, pairs
    below ``min_iou`` left unmatched. Sorted head to feet by A's box (top edge, then left)."""
    left, right = list(a), list(b)
    candidates = sorted(
        ((iou(x, y), i, j) for i, x in enumerate(left) for j, y in enumerate(right)),
        key=lambda c: (-c[0], c[1], c[2]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs: list[MatchedPair] = []
    for value, i, j in candidates:
        if value < min_iou or value == 0.0:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append(MatchedPair(left[i], right[j], value))
    return sorted(pairs, key=lambda p: (p.a.slice_index, p.a.y, p.a.x))


@dataclass(frozen=True)
class LabelComparison:
    """Two readers' labellings of one film compared on their matched boxes."""

    reader_a: str
    reader_b: str
    pairs: tuple[MatchedPair, ...]
    unmatched_a: int
    unmatched_b: int

    @property
    def labelled_pairs(self) -> tuple[MatchedPair, ...]:
        return tuple(p for p in self.pairs if p.step is not None)

    @property
    def mean_iou(self) -> float | None:
        return sum(p.iou for p in self.pairs) / len(self.pairs) if self.pairs else None

    @property
    def label_agreement(self) -> float | None:
        """Share of labelled pairs with the same label (None: nothing to compare)."""
        labelled = self.labelled_pairs
        return sum(p.step == 0 for p in labelled) / len(labelled) if labelled else None

    @property
    def shift(self) -> int | None:
        """+1 or -1 when at least :data:`SHIFT_SHARE` of the labelled pairs (and at least
        :data:`SHIFT_MIN_PAIRS`) are shifted by that one level; else None."""
        labelled = self.labelled_pairs
        if len(labelled) < SHIFT_MIN_PAIRS:
            return None
        for step in (1, -1):
            if sum(p.step == step for p in labelled) >= SHIFT_SHARE * len(labelled):
                return step
        return None

    @property
    def shifted(self) -> int:
        """Pairs shifted by :attr:`shift` (0 without a shift)."""
        return sum(p.step == self.shift for p in self.labelled_pairs) if self.shift else 0

    def describe(self) -> str:
        """One sentence a radiologist reads ('' when there is no shift)."""
        if not self.shift:
            return ""
        where = "below" if self.shift > 0 else "above"
        n = self.shifted
        return (f"{self.reader_b}'s labels are one level {where} {self.reader_a}'s on {n} "
                f"vertebra{'e' if n != 1 else ''} (of {len(self.labelled_pairs)} matched)")


def compare_labels(reader_a: str, boxes_a: Sequence[Box], reader_b: str, boxes_b: Sequence[Box],
                   *, min_iou: float = MATCH_MIN_IOU) -> LabelComparison:
    """Match two readers' boxes of one film and compare their labels."""
    pairs = match_boxes(boxes_a, boxes_b, min_iou=min_iou)
    return LabelComparison(reader_a, reader_b, tuple(pairs), len(boxes_a) - len(pairs),
                           len(boxes_b) - len(pairs))


def union_by_label(boxes: Iterable[Box], *, min_iou: float = 0.0) -> dict[str, list[UnionBox]]:
    """The union of readers' boxes per vertebra label (RSNA rule of
    :func:`spine_core.consensus.union_boxes`, within one label only, so neighbouring vertebrae
    touching at their end plates never merge). Unlabelled boxes are left out."""
    by_label: dict[str, list[Box]] = {}
    for box in boxes:
        if box.level:
            by_label.setdefault(film_level(box.level), []).append(box)
    return {lvl: union_boxes(by_label[lvl], min_iou=min_iou)
            for lvl in sorted(by_label, key=FILM_LEVELS.index)}
