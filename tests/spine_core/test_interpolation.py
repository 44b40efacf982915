"""The key-slice interpolation rule (spine_core.interpolation): corners linear in slice_index
between consecutive keys, nothing beyond the outermost keys, the later key wins on a slice, and
slice_index — never the DICOM instance number — is what the rule runs on."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spine_core.boxes import Box
from spine_core.errors import InputError
from spine_core.interpolation import box_between, interpolate, resolve_keys


def corners(b: Box) -> tuple[float, float, float, float]:
    return (b.x, b.y, b.x2, b.y2)


def test_two_keys_ten_slices_apart_give_exactly_nine_boxes_with_the_linear_values() -> None:
    low = Box(10, x=100.0, y=200.0, width=20.0, height=10.0, reader="r1", level="C5", id=1)
    high = Box(20, x=110.0, y=190.0, width=40.0, height=30.0, reader="r1", level="C5", id=2)
    result = interpolate([low, high])
    assert [b.slice_index for b in result.boxes] == list(range(11, 20))
    assert len(result.boxes) == 9 and result.superseded == ()
    for b in result.boxes:
        k = b.slice_index - 10
        # x0: 100 -> 110, y0: 200 -> 190, x1: 120 -> 150, y1: 210 -> 220, each k/10 of the way
        assert corners(b) == (100.0 + k, 200.0 - k, 120.0 + 3 * k, 210.0 + k)
        assert (b.width, b.height) == (20.0 + 2 * k, 10.0 + 2 * k)
        assert (b.reader, b.level, b.id) == ("r1", "C5", None)
    assert result.keys == (low, high)
    assert [b.slice_index for b in result.all_boxes] == list(range(10, 21))


def test_fractional_coordinates_are_kept() -> None:
    a = Box(0, 0.0, 0.0, 1.0, 1.0)
    b = Box(3, 1.0, 2.0, 1.0, 1.0)
    (s1, s2) = interpolate([a, b]).boxes
    assert corners(s1) == pytest.approx((1 / 3, 2 / 3, 4 / 3, 5 / 3), abs=1e-12)
    assert corners(s2) == pytest.approx((2 / 3, 4 / 3, 5 / 3, 7 / 3), abs=1e-12)
    assert s1.x != round(s1.x)  # not rounded to whole pixels


def test_keys_in_reversed_order_give_the_same_boxes() -> None:
    keys = [Box(4, 10.0, 10.0, 10.0, 10.0), Box(8, 30.0, 14.0, 6.0, 2.0), Box(10, 0.0, 0.0, 4.0, 4.0)]
    forward = interpolate(keys)
    backward = interpolate(list(reversed(keys)))
    assert forward.boxes == backward.boxes
    assert [b.slice_index for b in forward.boxes] == [5, 6, 7, 9]
    assert forward.keys == backward.keys == tuple(keys)


def test_nothing_beyond_the_outermost_keys_and_nothing_from_one_key() -> None:
    keys = [Box(5, 1.0, 1.0, 2.0, 2.0), Box(7, 3.0, 3.0, 2.0, 2.0)]
    result = interpolate(keys)
    assert [b.slice_index for b in result.boxes] == [6]
    assert interpolate([Box(5, 1.0, 1.0, 2.0, 2.0)]).boxes == ()
    assert interpolate([]).boxes == ()
    assert interpolate([Box(5, 1.0, 1.0, 2.0, 2.0), Box(6, 1.0, 1.0, 2.0, 2.0)]).boxes == ()  # adjacent
    with pytest.raises(InputError, match="not between the key slices 5 and 7"):
        box_between(keys[0], keys[1], 8)


def test_keys_on_one_slice_the_later_wins_and_the_other_is_returned_as_superseded() -> None:
    first = Box(10, 0.0, 0.0, 10.0, 10.0, id="first")
    other = Box(20, 10.0, 0.0, 10.0, 10.0, id="other")
    again = Box(10, 5.0, 5.0, 10.0, 10.0, id="again")
    result = interpolate([first, other, again])
    assert result.superseded == (first,)
    assert result.keys == (again, other)
    assert result.boxes[0].x == pytest.approx(5.0 + 0.5)  # from 'again', not 'first'
    keys, superseded = resolve_keys([again, first])
    assert keys == (first,) and superseded == (again,)


def test_levels_of_interpolated_boxes_follow_the_nearer_key() -> None:
    c5 = Box(0, 0.0, 0.0, 4.0, 4.0, level="C5")
    c6 = Box(4, 0.0, 0.0, 4.0, 4.0, level="C6")
    result = interpolate([c5, c6])
    assert [b.level for b in result.boxes] == ["C5", "C5", "C6"]  # slice 2: a tie goes to the lower
    assert [i.nearer for i in result.interpolated] == [c5, c5, c6]


def test_keys_of_two_readers_are_refused() -> None:
    with pytest.raises(InputError, match="one reader's"):
        interpolate([Box(0, 0.0, 0.0, 4.0, 4.0, reader="a"), Box(4, 0.0, 0.0, 4.0, 4.0, reader="b")])


# --- slice_index, not the instance number ---------------------------------------------------------


def _csv_keys(rows: list[tuple[int, float, float, float, float]], numbers: list[int]) -> list[Box]:
    """CSV rows (slice_number, x, y, width, height) -> key boxes on slice_index, as the importer
    maps them: the position of the slice_number in the series' instance numbers."""
    return [Box(numbers.index(n), x, y, w, h) for n, x, y, w, h in rows]


@pytest.mark.parametrize("order", ["ascending", "backwards", "shuffled"])
def test_instance_numbers_running_backwards_or_shuffled_do_not_change_the_result(order: str) -> None:
    n_slices = 30
    numbers = list(range(1, n_slices + 1))
    if order == "backwards":
        numbers.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(numbers)
    # two key slices, 10 stored slices apart, named in the CSV by their slice_number
    k0, k1 = 8, 18
    rows = [(numbers[k0], 100.0, 200.0, 20.0, 10.0), (numbers[k1], 110.0, 190.0, 40.0, 30.0)]
    result = interpolate(_csv_keys(rows, numbers))
    # the same stored slices are filled whatever the numbering: slice_index 9..17
    assert [b.slice_index for b in result.boxes] == list(range(k0 + 1, k1))
    reference = interpolate([Box(k0, 100.0, 200.0, 20.0, 10.0), Box(k1, 110.0, 190.0, 40.0, 30.0)])
    assert result.boxes == reference.boxes
    # and mapped back to slice_numbers they are the instance numbers of those stored slices
    exported = [numbers[b.slice_index] for b in result.boxes]
    assert exported == numbers[k0 + 1:k1]
    if order == "shuffled":
        # interpolating along the instance numbers instead would fill other slices
        lo, hi = sorted((numbers[k0], numbers[k1]))
        assert set(exported) != set(range(lo + 1, hi))
    if order == "backwards":
        assert exported == list(range(numbers[k0] - 1, numbers[k1], -1))


# --- properties ---------------------------------------------------------------------------------

coordinate = st.floats(min_value=0, max_value=500, allow_nan=False, allow_infinity=False)
size = st.floats(min_value=0.5, max_value=200, allow_nan=False, allow_infinity=False)


@st.composite
def key_boxes(draw: st.DrawFn) -> list[Box]:
    slices = draw(st.lists(st.integers(0, 60), min_size=2, max_size=6, unique=True))
    return [Box(s, draw(coordinate), draw(coordinate), draw(size), draw(size)) for s in slices]


@settings(max_examples=200, deadline=None)
@given(key_boxes())
def test_property_one_box_per_slice_between_keys_and_the_ends_reproduce_the_keys(keys: list[Box]) -> None:
    result = interpolate(keys)
    ordered = sorted(keys, key=lambda b: b.slice_index)
    slices = [b.slice_index for b in result.boxes]
    lo, hi = ordered[0].slice_index, ordered[-1].slice_index
    key_slices = {b.slice_index for b in keys}
    assert slices == [s for s in range(lo, hi + 1) if s not in key_slices]
    for a, b in zip(ordered, ordered[1:]):
        assert corners(box_between(a, b, a.slice_index)) == corners(a)
        assert corners(box_between(a, b, b.slice_index)) == corners(b)


@settings(max_examples=200, deadline=None)
@given(key_boxes())
def test_property_each_corner_is_monotone_and_within_its_keys(keys: list[Box]) -> None:
    ordered = sorted(keys, key=lambda b: b.slice_index)
    for a, b in zip(ordered, ordered[1:]):
        series = [a, *(box_between(a, b, s) for s in range(a.slice_index + 1, b.slice_index)), b]
        for i in range(4):
            values = [corners(box)[i] for box in series]
            lo, hi = sorted((values[0], values[-1]))
            assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in values)
            steps = [q - p for p, q in zip(values, values[1:])]
            assert all(d >= -1e-9 for d in steps) or all(d <= 1e-9 for d in steps)
        assert all(box.width > 0 and box.height > 0 for box in series)
