"""Labels counted from the reference vertebra (VertXNet): C2 both ways, S1 upward, none without."""

from __future__ import annotations

import pytest

from spine_core.errors import InputError
from spine_core.inference.xray.counting import count_labels, order_head_to_feet


def test_cervical_counts_from_c2_up_and_down() -> None:
    assert count_labels(9, 1, "C2") == ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2"]


def test_cervical_film_cut_below_c1_starts_at_c2() -> None:
    assert count_labels(4, 0, "C2") == ["C2", "C3", "C4", "C5"]


def test_nothing_above_c1_is_labelled() -> None:
    assert count_labels(4, 2, "C2") == [None, "C1", "C2", "C3"]


def test_lumbar_counts_upward_from_s1() -> None:
    assert count_labels(8, 7, "S") == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S"]


def test_lumbar_counting_never_gives_l6_or_t13() -> None:
    labels = count_labels(12, 11, "S")
    assert "L6" not in labels and "T13" not in labels
    assert labels[-7:] == ["T12", "L1", "L2", "L3", "L4", "L5", "S"]


def test_six_lumbar_vertebrae_above_the_sacrum_are_counted_as_l1_to_l6() -> None:
    # T11, T12 with ribs (lumbar probability low), then six without ribs, then the sacrum
    lumbar = [0.1, 0.2, 0.9, 0.8, 0.9, 0.95, 0.9, 0.7, 0.3]
    assert count_labels(9, 8, "S", lumbar) == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "S"]


def test_five_lumbar_vertebrae_or_a_broken_run_keep_the_typical_count() -> None:
    typical = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S"]
    assert count_labels(9, 8, "S", [0.1, 0.1, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2]) == typical
    # a sixth lumbar-looking vertebra above a rib-bearing one is not part of the run
    assert count_labels(9, 8, "S", [0.1, 0.1, 0.9, 0.4, 0.9, 0.9, 0.9, 0.9, 0.9]) == typical
    # a cervical film never counts lumbar vertebrae
    assert count_labels(4, 1, "C2", [0.9] * 4) == ["C1", "C2", "C3", "C4"]


def test_lumbar_probabilities_must_match_the_vertebrae() -> None:
    with pytest.raises(InputError, match="lumbar probabilities"):
        count_labels(4, 3, "S", [0.9, 0.9])


def test_missing_reference_labels_nothing() -> None:
    assert count_labels(5, None, "C2") == [None] * 5
    assert count_labels(5, None, "S") == [None] * 5


def test_bad_reference_is_refused() -> None:
    with pytest.raises(InputError, match="C2 or S"):
        count_labels(3, 0, "L5")
    with pytest.raises(InputError, match="outside"):
        count_labels(3, 3, "C2")


def test_tilted_spine_is_ordered_head_to_feet() -> None:
    # a spine tilted 30 degrees, given shuffled: the order follows the spine, not the columns
    centres = [(30.0, 117.0), (10.0, 105.0), (50.0, 129.0), (20.0, 111.0), (40.0, 123.0)]
    assert order_head_to_feet(centres) == [1, 3, 0, 4, 2]
