"""Vertebra labels on films: matching two readers' boxes by position and finding a labelling
shifted by one level (no shift, +1, -1, partial, a missing vertebra)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from spine_core.boxes import Box
from spine_core.errors import InputError
from spine_core.film_labels import (
    compare_labels,
    film_level,
    level_step,
    match_boxes,
    shown_level,
    union_by_label,
)

CERVICAL = ["C2", "C3", "C4", "C5", "C6", "C7"]


def _column(reader: str, labels: Sequence[str | None], *, dx: float = 0.0, dy: float = 0.0) -> list[Box]:
    """One box per vertebra, stacked head to feet (40 px high, 4 px apart)."""
    return [Box(0, 100 + dx, 50 + 44 * i + dy, 60, 40, reader, lab, f"{reader}{i}")
            for i, lab in enumerate(labels)]


def test_film_level_spellings_and_refusals() -> None:
    assert film_level("c5") == "C5"
    assert film_level("S1") == film_level("sacrum") == "S"
    assert shown_level("S") == "S1"
    for bad in ("Co", "X9", "L7", ""):
        with pytest.raises(InputError):
            film_level(bad)


def test_level_steps_cross_regions_and_transitional_vertebrae() -> None:
    assert level_step("C7", "T1") == 1
    assert level_step("T12", "L1") == 1  # T13 only counts when a reader names it
    assert level_step("T12", "T13") == 1 and level_step("T13", "L1") == 1
    assert level_step("L5", "S") == 1 and level_step("L6", "S") == 1
    assert level_step("C4", "C3") == -1


def test_no_shift() -> None:
    a = _column("r1", CERVICAL)
    b = _column("r2", CERVICAL, dx=3, dy=2)
    result = compare_labels("r1", a, "r2", b)
    assert len(result.pairs) == 6 and result.unmatched_a == result.unmatched_b == 0
    assert result.label_agreement == 1.0
    assert result.mean_iou is not None and 0.7 < result.mean_iou < 1.0
    assert result.shift is None and result.describe() == ""


def test_shift_by_one_below() -> None:
    a = _column("r1", ["C3", "C4", "C5", "C6"])
    b = _column("r2", ["C4", "C5", "C6", "C7"], dy=1)
    result = compare_labels("Reader 1", a, "Reader 2", b)
    assert result.shift == 1 and result.shifted == 4
    assert result.label_agreement == 0.0
    assert result.describe() == ("Reader 2's labels are one level below Reader 1's on 4 "
                                 "vertebrae (of 4 matched)")


def test_shift_by_one_above() -> None:
    a = _column("r1", ["L2", "L3", "L4", "L5", "S"])
    b = _column("r2", ["L1", "L2", "L3", "L4", "L5"])
    result = compare_labels("r1", a, "r2", b)
    assert result.shift == -1 and result.shifted == 5
    assert "one level above" in result.describe()


def test_partial_shift_needs_three_quarters() -> None:
    # 3 of 4 shifted (75 %): a labelling shift
    a = _column("r1", ["C3", "C4", "C5", "C6"])
    b = _column("r2", ["C4", "C5", "C6", "C6"])
    assert compare_labels("r1", a, "r2", b).shift == 1
    # 2 of 4 shifted: separate disagreements, no labelling shift
    b = _column("r2", ["C4", "C5", "C5", "C6"])
    result = compare_labels("r1", a, "r2", b)
    assert result.shift is None and result.label_agreement == 0.5


def test_a_missing_vertebra_is_unmatched_not_shifted() -> None:
    a = _column("r1", ["C3", "C4", "C5", "C6"])
    b = [box for box in _column("r2", ["C4", "C5", "C6", "C7"]) if box.level != "C5"]
    result = compare_labels("r1", a, "r2", b)
    assert len(result.pairs) == 3 and result.unmatched_a == 1 and result.unmatched_b == 0
    assert result.shift == 1 and result.shifted == 3


def test_one_pair_is_never_a_shift_and_unlabelled_boxes_do_not_count() -> None:
    a = _column("r1", ["C3", None])
    b = _column("r2", ["C4", "C5"])
    result = compare_labels("r1", a, "r2", b)
    assert len(result.pairs) == 2 and len(result.labelled_pairs) == 1
    assert result.shift is None


def test_match_is_by_position_each_box_once() -> None:
    a = _column("r1", ["C3", "C4"])
    far = [Box(0, 400, 400, 30, 30, "r2", "C3", "far")]
    assert match_boxes(a, far) == []
    b = _column("r2", ["C3", "C4"], dy=10)  # each r2 box overlaps two r1 boxes
    pairs = match_boxes(a, b)
    assert [(p.a.level, p.b.level) for p in pairs] == [("C3", "C3"), ("C4", "C4")]


def test_union_per_label_never_merges_neighbours() -> None:
    a = _column("r1", ["C3", "C4"])
    b = _column("r2", ["C3", "C4"], dy=8)  # r2's C3 overlaps r1's C4 too
    unions = union_by_label([*a, *b])
    assert list(unions) == ["C3", "C4"]
    c3 = unions["C3"]
    assert len(c3) == 1 and c3[0].n_readers == 2
    assert (c3[0].y, c3[0].height) == (50, 48)
