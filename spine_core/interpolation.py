"""Key slices and interpolation of one fracture's boxes (the RSNA annotators' method).

RSNA's annotators "draw bounding boxes first on key sections where the fracture pattern reached a
relative maximum or minimum cross-sectional area", then skip to the next such section "and
interpolate the bounding boxes in between". This module is that rule, pure:

* The input is the key boxes of ONE fracture of ONE reader (:class:`~spine_core.boxes.Box`
  values, each on its ``slice_index``: the position of the stored slice in the series sorted
  along the normal, never the DICOM instance number, which may run backwards or be shuffled).
* Two key boxes on the same slice: the later one (later in the given sequence) wins; the others
  are returned as ``superseded`` so the caller can tell the reader.
* For every slice strictly between two consecutive key slices, one box whose corners
  ``x0, y0, x1, y1`` (``x1 = x + width``, ``y1 = y + height``) are each linear in
  ``slice_index`` between the two keys. Nothing is made beyond the outermost keys; fractional
  coordinates are kept (no rounding).
* The level of an interpolated box: the keys' level when both agree, else the level of the
  nearer key (the lower slice's key on a tie); its reader is the keys' reader.

Coordinates are pixels of the stored axial slice ``array[slice_index]`` (see
:mod:`spine_core.boxes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spine_core.boxes import Box
from spine_core.errors import InputError

__all__ = ["Interpolated", "Interpolation", "box_between", "interpolate", "resolve_keys"]


@dataclass(frozen=True)
class Interpolated:
    """One interpolated box and the two key boxes it lies between (``lower.slice_index <
    box.slice_index < upper.slice_index``)."""

    box: Box
    lower: Box
    upper: Box

    @property
    def nearer(self) -> Box:
        """The key nearer to this slice (the lower one on a tie): it gives the level."""
        below = self.box.slice_index - self.lower.slice_index
        above = self.upper.slice_index - self.box.slice_index
        return self.lower if below <= above else self.upper


@dataclass(frozen=True)
class Interpolation:
    """What :func:`interpolate` made of a fracture's key boxes.

    ``keys``: the key boxes in force, by slice index (one per slice); ``superseded``: key boxes
    replaced by a later key on the same slice, in the order given; ``interpolated``: one per
    slice strictly between consecutive keys, by slice index.
    """

    keys: tuple[Box, ...]
    superseded: tuple[Box, ...]
    interpolated: tuple[Interpolated, ...]

    @property
    def boxes(self) -> tuple[Box, ...]:
        """The interpolated boxes alone, by slice index."""
        return tuple(i.box for i in self.interpolated)

    @property
    def all_boxes(self) -> tuple[Box, ...]:
        """Keys and interpolated boxes together, one per slice from the first key to the last."""
        return tuple(sorted((*self.keys, *self.boxes), key=lambda b: b.slice_index))


def resolve_keys(keys: Iterable[Box]) -> tuple[tuple[Box, ...], tuple[Box, ...]]:
    """(keys in force sorted by slice index, superseded keys in input order).

    Of several keys on one slice the last given wins.

    Raises:
        InputError: a key whose slice index is not a whole number, or keys of different readers
            (a fracture is one reader's).
    """
    by_slice: dict[int, Box] = {}
    superseded: list[Box] = []
    readers = set()
    for key in keys:
        if int(key.slice_index) != key.slice_index:
            raise InputError(f"{key.describe()}: the slice index must be a whole number")
        readers.add(key.reader)
        previous = by_slice.get(int(key.slice_index))
        if previous is not None:
            superseded.append(previous)
        by_slice[int(key.slice_index)] = key
    if len(readers) > 1:
        raise InputError(
            "the key boxes of one fracture must all be one reader's, got readers "
            + ", ".join(sorted(str(r) for r in readers))
        )
    return tuple(by_slice[s] for s in sorted(by_slice)), tuple(superseded)


def _lerp(a: float, b: float, k: int, n: int) -> float:
    """The value ``k/n`` of the way from ``a`` to ``b``, written so that whole-number inputs give
    exact results whenever the exact result is a float (and the ends exactly ``a`` and ``b``)."""
    if k == 0:
        return a
    if k == n:
        return b
    return (a * (n - k) + b * k) / n


def box_between(lower: Box, upper: Box, slice_index: int) -> Box:
    """The interpolated box on ``slice_index`` between keys ``lower`` and ``upper`` (any order).

    ``x0, y0, x1, y1`` are linear in the slice index; at a key's own slice the key's corners come
    back. The box carries no id; its reader is the keys' and its level follows the module rule.

    Raises:
        InputError: the two keys are on one slice, or ``slice_index`` is not between them.
    """
    if lower.slice_index > upper.slice_index:
        lower, upper = upper, lower
    n = int(upper.slice_index - lower.slice_index)
    if n == 0:
        raise InputError(f"two keys on slice {lower.slice_index}: nothing lies between them")
    k = int(slice_index - lower.slice_index)
    if not 0 <= k <= n:
        raise InputError(
            f"slice {slice_index} is not between the key slices {lower.slice_index} and "
            f"{upper.slice_index}; nothing is interpolated beyond the outermost keys"
        )
    x0 = _lerp(lower.x, upper.x, k, n)
    y0 = _lerp(lower.y, upper.y, k, n)
    x1 = _lerp(lower.x2, upper.x2, k, n)
    y1 = _lerp(lower.y2, upper.y2, k, n)
    if lower.level == upper.level:
        level = lower.level
    else:
        level = lower.level if k <= n - k else upper.level
    return Box(slice_index=int(slice_index), x=x0, y=y0, width=x1 - x0, height=y1 - y0,
               reader=lower.reader if lower.reader is not None else upper.reader, level=level)


def interpolate(keys: Sequence[Box] | Iterable[Box]) -> Interpolation:
    """Interpolate one fracture's key boxes: see the module docstring for the rule.

    ``keys`` in the order they were made (the later of two keys on one slice wins), in any slice
    order. Fewer than two key slices give no interpolated box.
    """
    effective, superseded = resolve_keys(keys)
    made: list[Interpolated] = []
    for lower, upper in zip(effective, effective[1:]):
        for s in range(lower.slice_index + 1, upper.slice_index):
            made.append(Interpolated(box_between(lower, upper, s), lower, upper))
    return Interpolation(effective, superseded, tuple(made))
