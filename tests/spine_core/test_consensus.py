"""Box geometry, union ground truth and agreement statistics."""

from __future__ import annotations

import math
import random

import pytest

from spine_core.adjudication import LevelCall
from spine_core.boxes import Box
from spine_core.consensus import (
    fleiss_kappa,
    iou,
    krippendorff_alpha_nominal,
    level_agreement,
    member_ious,
    overlaps,
    percent_agreement,
    reader_performance,
    self_overlaps,
    union_boxes,
    validate_box,
)
from spine_core.errors import InputError
from spine_core.metrics import UndefinedMetricWarning

F, N, U = LevelCall.fractured, LevelCall.not_fractured, LevelCall.unsure


def extent(u) -> tuple[float, float, float, float]:
    return (u.x, u.y, u.width, u.height)


# ---------------------------------------------------------------- geometry


def test_iou_and_overlap() -> None:
    a = Box(0, 0, 0, 10, 10, reader="a")
    b = Box(0, 5, 0, 10, 10, reader="b")
    assert iou(a, b) == pytest.approx(50 / 150)
    assert iou(a, a) == 1.0
    assert overlaps(a, b)
    touching = Box(0, 10, 0, 10, 10)
    assert not overlaps(a, touching) and iou(a, touching) == 0.0
    other_slice = Box(1, 0, 0, 10, 10)
    assert not overlaps(a, other_slice) and iou(a, other_slice) == 0.0


def test_validate_box_names_box_and_limits() -> None:
    ok = Box(5, 10, 20, 30, 40, reader="alice", id=7)
    assert validate_box(ok, rows=512, cols=512, n_slices=60) is ok
    with pytest.raises(InputError, match=r"box #7 of reader alice on slice 5 .*must be positive"):
        validate_box(Box(5, 10, 20, 0, 40, "alice", id=7), 512, 512, 60)
    with pytest.raises(InputError, match=r"outside the 512×256 image \(x from 0 to 512, y from 0 to 256"):
        validate_box(Box(5, 500, 20, 30, 40, "alice", id=7), rows=256, cols=512, n_slices=60)
    with pytest.raises(InputError, match="outside"):
        validate_box(Box(0, -1, 0, 5, 5), 512, 512, 60)
    with pytest.raises(InputError, match=r"slice 60 does not exist, the series has 60 slices \(0 to 59\)"):
        validate_box(Box(60, 10, 20, 30, 40), 512, 512, 60)
    with pytest.raises(InputError, match="finite"):
        validate_box(Box(0, math.nan, 0, 5, 5), 512, 512, 60)


# ---------------------------------------------------------------- union


def test_transitive_chain_becomes_one_box() -> None:
    a = Box(0, 0, 0, 10, 10, reader="a")
    b = Box(0, 8, 0, 10, 10, reader="b")
    c = Box(0, 16, 2, 10, 10, reader="c")
    assert not overlaps(a, c)
    (u,) = union_boxes([a, b, c])
    assert extent(u) == (0, 0, 26, 12)
    assert u.readers == ("a", "b", "c") and u.n_readers == 3
    assert set(u.members) == {a, b, c}


def test_non_overlapping_boxes_stay_as_they_are() -> None:
    a = Box(0, 0, 0, 10, 10, reader="a")
    far = Box(0, 100, 100, 5, 7, reader="b")
    touching = Box(0, 10, 0, 10, 10, reader="c")
    unions = union_boxes([a, far, touching])
    assert [extent(u) for u in unions] == [(0, 0, 10, 10), (10, 0, 10, 10), (100, 100, 5, 7)]
    assert all(len(u.members) == 1 for u in unions)


def test_same_reader_overlaps_stay_separate_findings() -> None:
    a1 = Box(0, 0, 0, 10, 10, reader="a", id=1)
    a2 = Box(0, 5, 5, 10, 10, reader="a", id=2)
    unions = union_boxes([a1, a2])
    assert [extent(u) for u in unions] == [(0, 0, 10, 10), (5, 5, 10, 10)]
    assert self_overlaps([a1, a2, Box(0, 50, 50, 5, 5, reader="a")]) == [(a1, a2)]


def test_same_reader_boxes_join_through_another_reader() -> None:
    a1 = Box(0, 0, 0, 10, 10, reader="a")
    a2 = Box(0, 12, 0, 10, 10, reader="a")
    b = Box(0, 8, 2, 6, 4, reader="b")  # overlaps both of a's boxes
    (u,) = union_boxes([a1, a2, b])
    assert extent(u) == (0, 0, 22, 10)
    assert u.readers == ("a", "b")


def test_min_iou_setting() -> None:
    a = Box(0, 0, 0, 10, 10, reader="a")
    b = Box(0, 5, 0, 10, 10, reader="b")  # IoU 1/3
    assert len(union_boxes([a, b])) == 1
    assert len(union_boxes([a, b], min_iou=0.3)) == 1
    assert len(union_boxes([a, b], min_iou=1 / 3)) == 1
    assert len(union_boxes([a, b], min_iou=0.5)) == 2
    with pytest.raises(InputError, match="min_iou 1.5"):
        union_boxes([a, b], min_iou=1.5)


def test_different_slices_never_merge() -> None:
    a = Box(3, 0, 0, 10, 10, reader="a")
    b = Box(4, 0, 0, 10, 10, reader="b")
    unions = union_boxes([b, a])
    assert [u.slice_index for u in unions] == [3, 4]


def test_output_is_deterministic_whatever_the_input_order() -> None:
    boxes = [
        Box(1, 0, 0, 10, 10, "a"), Box(1, 8, 0, 10, 10, "b"), Box(1, 40, 40, 4, 4, "b"),
        Box(0, 30, 5, 6, 6, "c"), Box(0, 31, 6, 6, 6, "a"), Box(2, 0, 50, 3, 3, "a"),
    ]
    expected = union_boxes(boxes)
    shuffled = boxes[:]
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        again = union_boxes(shuffled)
        assert again == expected
        assert [u.members for u in again] == [u.members for u in expected]
    assert [(u.slice_index, u.x) for u in expected] == [(0, 30), (1, 0), (1, 40), (2, 0)]


def test_union_needs_readers() -> None:
    with pytest.raises(InputError, match="has no reader"):
        union_boxes([Box(0, 0, 0, 5, 5)])


def test_union_level_and_member_ious() -> None:
    a = Box(0, 0, 0, 10, 10, reader="a", level="C2")
    b = Box(0, 8, 0, 10, 10, reader="b", level="C2")
    c = Box(0, 16, 0, 10, 10, reader="c", level="C3")
    (pair,) = union_boxes([a, b])
    assert pair.level == "C2"
    assert pair.member_ious() == pytest.approx((100 / 180, 100 / 180))
    (chain,) = union_boxes([a, b, c])
    assert chain.levels == ("C2", "C3") and chain.level is None
    rows = member_ious([chain])
    assert [r[2] for r in rows] == pytest.approx([100 / 260] * 3)


# ---------------------------------------------------------------- agreement

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects,
# 14 raters, 5 categories, P = 0.378, Pe = 0.213, kappa = 0.210.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_textbook_example() -> None:
    assert fleiss_kappa(WIKIPEDIA_FLEISS) == pytest.approx(0.20993, abs=5e-5)
    assert round(fleiss_kappa(WIKIPEDIA_FLEISS), 3) == 0.210


def test_fleiss_kappa_degenerate_is_nan_with_reason() -> None:
    with pytest.warns(UndefinedMetricWarning, match="one category"):
        assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))


def test_fleiss_kappa_rejects_bad_tables() -> None:
    with pytest.raises(InputError, match="same number of raters"):
        fleiss_kappa([[2, 0], [1, 2]])
    with pytest.raises(InputError, match="at least 2 raters"):
        fleiss_kappa([[1, 0], [0, 1]])
    with pytest.raises(InputError, match="whole counts"):
        fleiss_kappa([[1.5, 0.5]])


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5 with missing data; nominal alpha = 0.743.
KRIPP_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_textbook_example() -> None:
    units = list(zip(*KRIPP_OBSERVERS))
    assert round(krippendorff_alpha_nominal(units), 3) == 0.743


def test_krippendorff_alpha_degenerate() -> None:
    with pytest.warns(UndefinedMetricWarning, match="same category"):
        assert math.isnan(krippendorff_alpha_nominal([("a", "a"), ("a", None, "a")]))
    with pytest.warns(UndefinedMetricWarning, match="fewer than two"):
        assert math.isnan(krippendorff_alpha_nominal([("a", None)]))


def test_percent_agreement() -> None:
    assert percent_agreement([("a", "a", "b"), ("c", None, "c")]) == pytest.approx(2 / 4)


STUDY_CALLS = {
    "s1": {"r1": {"C2": F, "C3": N}, "r2": {"C2": F, "C3": N}},
    "s2": {"r1": {"C2": N, "C3": N}, "r2": {"C2": N, "C3": N}},
    "s3": {"r1": {"C2": F, "C3": N}, "r2": {"C2": N, "C3": N}},
    "s4": {"r1": {"C2": N, "C3": N}, "r2": {"C2": N, "C3": N}},
}


def test_level_agreement_by_hand() -> None:
    # C2 table (F, N, U): [2,0,0] [0,2,0] [1,1,0] [0,2,0]. P = 3/4, Pe = (3/8)^2 + (5/8)^2 = 34/64,
    # kappa = (48/64 - 34/64) / (30/64) = 7/15. Alpha: o_FN = o_NF = 1, n_F = 3, n_N = 5, n = 8,
    # alpha = 1 - 7 * 2 / (2 * 3 * 5) = 8/15.
    stats = level_agreement(STUDY_CALLS)
    assert list(stats) == ["C2", "C3"]
    c2 = stats["C2"]
    assert (c2.n_subjects, c2.n_kappa_subjects, c2.n_readers) == (4, 4, 2)
    assert c2.percent_agreement == pytest.approx(3 / 4)
    assert c2.fleiss_kappa == pytest.approx(7 / 15)
    assert c2.alpha == pytest.approx(8 / 15)
    c3 = stats["C3"]  # everyone says not fractured: chance-corrected agreement undefined
    assert c3.percent_agreement == 1.0
    assert math.isnan(c3.fleiss_kappa) and math.isnan(c3.alpha)


def test_level_agreement_unsure_handling() -> None:
    calls = {
        "s1": {"r1": {"C1": F}, "r2": {"C1": U}, "r3": {"C1": F}},
        "s2": {"r1": {"C1": N}, "r2": {"C1": N}, "r3": {"C1": N}},
    }
    as_category = level_agreement(calls)["C1"]
    assert as_category.percent_agreement == pytest.approx(4 / 6)
    as_missing = level_agreement(calls, unsure_as_missing=True)["C1"]
    assert as_missing.percent_agreement == 1.0
    assert as_missing.n_kappa_subjects == 1  # only s2 has three definite calls


def test_reader_performance_against_final_labels() -> None:
    final = {"s1": {"C2": True}, "s2": {"C2": False}, "s3": {"C2": True}, "s4": {"C2": False}}
    calls = {study: {r: dict(levels) for r, levels in by_reader.items()} for study, by_reader in STUDY_CALLS.items()}
    calls["s4"]["r2"]["C2"] = U
    perf = reader_performance(calls, final)
    r1, r2 = perf["r1"], perf["r2"]
    assert (r1.confusion.tp, r1.confusion.tn, r1.confusion.fp, r1.confusion.fn) == (2, 2, 0, 0)
    assert (r1.sensitivity, r1.specificity) == (1.0, 1.0)
    assert (r2.confusion.tp, r2.confusion.fn, r2.confusion.tn, r2.unsure) == (1, 1, 1, 1)
    assert r2.sensitivity == 0.5 and r2.specificity == 1.0
    assert r1.unlabelled == 4  # C3 has no final label
