"""Genant grades: thresholds, morphology names, validation messages."""

from __future__ import annotations

import pytest

from spine_core.errors import InputError
from spine_core.genant import (
    GenantError,
    Morphology,
    check_grade,
    grade_from_height_loss,
    height_loss_range,
    parse_morphology,
)


@pytest.mark.parametrize(("loss", "grade"), [
    (0.0, 0), (0.19, 0), (0.20, 1), (0.249, 1), (0.25, 2), (0.39, 2), (0.40, 3), (0.8, 3), (1.0, 3),
])
def test_grade_from_height_loss(loss: float, grade: int) -> None:
    assert grade_from_height_loss(loss) == grade


@pytest.mark.parametrize("loss", [-0.1, 1.5, float("nan")])
def test_height_loss_outside_0_1_is_refused(loss: float) -> None:
    with pytest.raises(GenantError, match="fraction"):
        grade_from_height_loss(loss)


def test_ranges_match_grades() -> None:
    for g in (0, 1, 2, 3):
        lo, hi = height_loss_range(g)
        assert grade_from_height_loss(lo) == g
        assert grade_from_height_loss((lo + hi) / 2) == g


def test_check_grade() -> None:
    check_grade(0, None)
    check_grade(2, Morphology.WEDGE)
    check_grade(3, "Crush")
    check_grade(1, None)
    with pytest.raises(GenantError, match="not one of 0, 1, 2, 3"):
        check_grade(4, "wedge")
    with pytest.raises(GenantError, match="not one of 0, 1, 2, 3"):
        check_grade(True, None)
    with pytest.raises(GenantError, match="grade-0"):
        check_grade(0, "biconcave")
    with pytest.raises(GenantError, match="not one of wedge, biconcave, crush"):
        check_grade(1, "burst")
    err = GenantError("x")
    assert isinstance(err, ValueError) and isinstance(err, InputError)


def test_morphology_is_a_str_enum() -> None:
    assert Morphology("wedge") is Morphology.WEDGE
    assert Morphology.CRUSH == "crush"
    assert parse_morphology("") is None and parse_morphology(" BICONCAVE ") is Morphology.BICONCAVE
