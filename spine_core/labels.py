"""Vertebra levels: one canonical set, the vocabularies of each dataset, names and colours.

The canonical level ids follow VerSe's numbering, which RSNA's 1–19 and CTSpine1K's 1–25 share:
1–7 C1–C7, 8–19 T1–T12, 20–25 L1–L6, 26 sacrum, 27 coccyx, 28 T13. 0 is background.
Every reader of a mask maps the dataset's own values onto these ids through a
:class:`LabelVocabulary` (an unknown value is an error, never silently dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import LabelVocabularyError

#: Canonical id -> level name.
LEVEL_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 7)},
    26: "S",
    27: "Co",
    28: "T13",
}
LEVEL_IDS: dict[str, int] = {name: i for i, name in LEVEL_NAMES.items()}

#: Cervical levels scored in RSNA's train.csv, in column order.
CERVICAL: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 8))

#: Craniocaudal order of the canonical ids (T13 sits between T12 and L1).
CRANIOCAUDAL_ORDER: tuple[int, ...] = (*range(1, 20), 28, *range(20, 28))


def level_name(level_id: int) -> str:
    """Name of a canonical level id ('C2', 'T13'...)."""
    try:
        return LEVEL_NAMES[int(level_id)]
    except KeyError:
        raise LabelVocabularyError(f"{level_id} is not a vertebra level id (1–28)") from None


def level_id(name: str) -> int:
    """Canonical id of a level name, case-insensitive ('c2' -> 2)."""
    key = name.strip().upper().replace("CO", "Co")
    if key == "SACRUM":
        key = "S"
    try:
        return LEVEL_IDS[key]
    except KeyError:
        raise LabelVocabularyError(
            f"'{name}' is not a vertebra level (expected C1–C7, T1–T13, L1–L6, S or Co)"
        ) from None


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _make_colours() -> dict[int, tuple[int, int, int]]:
    """Distinct colours per region, adjacent levels alternate in brightness so borders show."""
    colours: dict[int, tuple[int, int, int]] = {}
    regions = {"C": (0.08, 7), "T": (0.55, 13), "L": (0.33, 6)}
    for lid, name in LEVEL_NAMES.items():
        if name in ("S", "Co"):
            colours[lid] = (230, 200, 60) if name == "S" else (180, 120, 200)
            continue
        region = name[0]
        number = int(name[1:])
        hue0, count = regions[region]
        hue = (hue0 + 0.25 * (number - 1) / max(count - 1, 1)) % 1.0
        value = 1.0 if number % 2 else 0.78
        colours[lid] = _hsv_to_rgb(hue, 0.75, value)
    return colours


#: Canonical id -> RGB colour used by every overlay, legend and 3-D mesh.
LEVEL_COLOURS: dict[int, tuple[int, int, int]] = _make_colours()


def level_colour_hex(level_id: int) -> str:
    r, g, b = LEVEL_COLOURS[int(level_id)]
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(frozen=True)
class LabelVocabulary:
    """How one dataset numbers its labels: dataset value -> canonical level id (0 = background)."""

    name: str
    to_canonical: Mapping[int, int]

    def canonical(self, mask: npt.NDArray[Any], *, source: str = "mask") -> npt.NDArray[np.uint8]:
        """Map a mask of dataset values to canonical ids (uint8), same shape.

        Integer masks are looked up directly (no int64 copy of the volume); float masks are
        accepted when every value is a whole number (some tools store labels as float).

        Raises:
            LabelVocabularyError: naming the values that are not in the vocabulary, or the
                non-integer values of a float mask.
        """
        arr = np.asarray(mask)
        if arr.dtype.kind == "b":
            arr = arr.view(np.uint8)
        elif arr.dtype.kind == "f":
            arr = _whole_numbers(arr, source)
        elif arr.dtype.kind not in "iu":
            raise LabelVocabularyError(f"{source}: label values of type {arr.dtype} are not integers")
        values = present_values(arr)
        unknown = [int(v) for v in values if int(v) != 0 and int(v) not in self.to_canonical]
        if unknown:
            allowed = sorted(self.to_canonical)
            raise LabelVocabularyError(
                f"{source}: label values {unknown[:10]} are not in the {self.name} vocabulary "
                f"(allowed: 0 and {allowed[0]}–{allowed[-1]}); check the dataset type or the file"
            )
        lut = np.zeros(max(int(values.max(initial=0)), 0) + 1, dtype=np.uint8)
        for value, canonical in self.to_canonical.items():
            if value < lut.size:
                lut[value] = canonical
        return lut[arr]


def present_values(mask: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Sorted distinct values of an integer array, counted slab by slab when their range is small."""
    arr = np.asarray(mask)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if arr.dtype.kind not in "iu" or hi - lo > 1 << 16 or arr.ndim == 0:
        return np.unique(arr).astype(np.int64)
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    for slab in arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else (arr,):
        counts += np.bincount(slab.astype(np.int64) - lo, minlength=counts.size)
    return np.flatnonzero(counts).astype(np.int64) + lo


def _whole_numbers(arr: npt.NDArray[np.floating], source: str) -> npt.NDArray[np.integer]:
    """A float label array as the smallest integer type that holds it, if all values are whole."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise LabelVocabularyError(f"{source}: the mask contains NaN or infinite values")
    values = np.unique(arr)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise LabelVocabularyError(
            f"{source}: label values {fractional[:10].tolist()} are not whole numbers; the mask "
            "was resampled with interpolation or is not a label map"
        )
    lo, hi = int(values.min(initial=0)), int(values.max(initial=0))
    for target in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(target)
        if info.min <= lo and hi <= info.max:
            return arr.astype(target)
    raise LabelVocabularyError(f"{source}: label values up to {hi} are too large")


RSNA = LabelVocabulary("RSNA", {i: i for i in range(1, 20)})
VERSE = LabelVocabulary("VerSe", {i: i for i in range(1, 29)})
CTSPINE1K = LabelVocabulary("CTSpine1K", {i: i for i in range(1, 26)})
CANONICAL = VERSE

#: TotalSegmentator's vertebra class names (v2) -> canonical id; other classes map to background.
TOTALSEG_NAMES: dict[str, int] = {
    **{f"vertebrae_C{i}": i for i in range(1, 8)},
    **{f"vertebrae_T{i}": 7 + i for i in range(1, 13)},
    **{f"vertebrae_L{i}": 19 + i for i in range(1, 6)},
    "vertebrae_S1": 26,
    "sacrum": 26,
}

#: TotalSegmentator v2 "total" task class indices of the vertebrae (the multilabel output file).
TOTALSEG_V2_INDEX: dict[int, str] = {
    25: "sacrum",
    26: "vertebrae_S1",
    27: "vertebrae_L5",
    28: "vertebrae_L4",
    29: "vertebrae_L3",
    30: "vertebrae_L2",
    31: "vertebrae_L1",
    32: "vertebrae_T12",
    33: "vertebrae_T11",
    34: "vertebrae_T10",
    35: "vertebrae_T9",
    36: "vertebrae_T8",
    37: "vertebrae_T7",
    38: "vertebrae_T6",
    39: "vertebrae_T5",
    40: "vertebrae_T4",
    41: "vertebrae_T3",
    42: "vertebrae_T2",
    43: "vertebrae_T1",
    44: "vertebrae_C7",
    45: "vertebrae_C6",
    46: "vertebrae_C5",
    47: "vertebrae_C4",
    48: "vertebrae_C3",
    49: "vertebrae_C2",
    50: "vertebrae_C1",
}


def totalseg_multilabel_vocabulary() -> LabelVocabulary:
    """Vocabulary of TotalSegmentator v2's multilabel 'total' output; non-vertebra classes -> 0.

    Non-vertebra organs (1–24, 51–117) are known classes, so they map to background instead of
    raising.
    """
    mapping = {i: 0 for i in range(1, 118)}
    mapping.update({i: TOTALSEG_NAMES[name] for i, name in TOTALSEG_V2_INDEX.items()})
    return LabelVocabulary("TotalSegmentator", mapping)


VOCABULARIES: dict[str, LabelVocabulary] = {
    "canonical": CANONICAL,
    "rsna": RSNA,
    "verse": VERSE,
    "ctspine1k": CTSPINE1K,
    "totalsegmentator": totalseg_multilabel_vocabulary(),
}


#: Regions a study covers (the case browser's filter).
REGIONS: tuple[str, ...] = ("cervical", "thoracolumbar", "whole")


def region_of(levels: Iterable[str]) -> str:
    """The part of the spine a study's levels cover: "whole" (cervical and lumbar or sacrum),
    "cervical" (cervical levels, at most the upper thoracic T1-T5 below them), "thoracolumbar"
    (anything else), or "" when no level is known."""
    names = {str(n) for n in levels if str(n) in LEVEL_IDS}
    if not names:
        return ""
    cervical = any(n.startswith("C") and n != "Co" for n in names)
    lumbar = any(n.startswith("L") or n in ("S", "Co") for n in names)
    lower_thoracic = any(n in {f"T{i}" for i in range(6, 14)} for n in names)
    if cervical and lumbar:
        return "whole"
    if cervical and not lower_thoracic:
        return "cervical"
    return "thoracolumbar"
