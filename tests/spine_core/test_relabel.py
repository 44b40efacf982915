"""A reader's renumbering: the named vertebra takes the reader's name, every column vertebra below
it follows consecutively, the sacrum keeps its name; clashes refused."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.errors import InputError
from spine_core.labels import LEVEL_IDS
from spine_core.relabel import apply_relabel, check_relabel, relabel_name, shift_from

WHOLE = [f"T{i}" for i in range(10, 13)] + [f"L{i}" for i in range(1, 6)] + ["S"]


def test_t13_present_shifts_the_lumbar_names_up() -> None:
    assert shift_from(WHOLE, "L1", "T13") == {"L1": "T13", "L2": "L1", "L3": "L2", "L4": "L3",
                                              "L5": "L4"}


def test_l6_renames_the_last_lumbar_only() -> None:
    assert shift_from(WHOLE, "L5", "L6") == {"L5": "L6"}


def test_eleven_thoracic_move_the_names_down_to_l6() -> None:
    assert shift_from(WHOLE, "T12", "L1") == {"T12": "L1", "L1": "L2", "L2": "L3", "L3": "L4",
                                              "L4": "L5", "L5": "L6"}


def test_the_same_name_changes_nothing() -> None:
    assert shift_from(WHOLE, "L2", "L2") == {}
    assert relabel_name("L2", {"L1": "T13"}) == "L2"


def test_refusals_name_the_problem() -> None:
    with pytest.raises(InputError, match="no vertebra labelled L6"):
        shift_from(WHOLE, "L6", "L5")
    with pytest.raises(InputError, match="sacrum"):
        shift_from(WHOLE, "S", "L6")
    with pytest.raises(InputError, match="below L6"):
        shift_from(WHOLE, "L1", "L3")
    with pytest.raises(InputError, match="T11 and T12 would both be named T11"):
        check_relabel(WHOLE, {"T12": "T11"})
    with pytest.raises(InputError, match="not a vertebra level name"):
        check_relabel(WHOLE, {"L1": "X9"})


def test_apply_moves_values_not_voxels() -> None:
    mask = np.array([[LEVEL_IDS["L1"], LEVEL_IDS["L2"], LEVEL_IDS["S"], 0]], dtype=np.uint8)
    out = apply_relabel(mask, shift_from(["L1", "L2", "S"], "L1", "T13"))
    assert out.tolist() == [[LEVEL_IDS["T13"], LEVEL_IDS["L1"], LEVEL_IDS["S"], 0]]
    assert out.dtype == mask.dtype
    assert mask[0, 0] == LEVEL_IDS["L1"]  # the input is untouched
