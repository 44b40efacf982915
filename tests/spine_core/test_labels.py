"""Level ids, dataset vocabularies (checked against the datasets' published numbering) and mapping."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.errors import LabelVocabularyError
from spine_core.labels import (
    CRANIOCAUDAL_ORDER,
    CTSPINE1K,
    LEVEL_COLOURS,
    RSNA,
    TOTALSEG_NAMES,
    TOTALSEG_V2_INDEX,
    VERSE,
    level_id,
    level_name,
    present_values,
    totalseg_multilabel_vocabulary,
)


def test_verse_numbering() -> None:
    # VerSe: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum, 27 coccyx, 28 T13
    assert [level_name(i) for i in (1, 7, 8, 19, 20, 24, 25, 26, 27, 28)] == [
        "C1", "C7", "T1", "T12", "L1", "L5", "L6", "S", "Co", "T13"
    ]
    assert level_id("c2") == 2 and level_id("Sacrum") == 26 and level_id("T13") == 28
    with pytest.raises(LabelVocabularyError, match="T14"):
        level_id("T14")
    assert CRANIOCAUDAL_ORDER.index(28) == CRANIOCAUDAL_ORDER.index(19) + 1


def test_dataset_vocabularies() -> None:
    assert RSNA.to_canonical[7] == level_id("C7") and RSNA.to_canonical[19] == level_id("T12")
    assert 20 not in RSNA.to_canonical
    assert CTSPINE1K.to_canonical[25] == level_id("L6") and 26 not in CTSPINE1K.to_canonical
    assert VERSE.to_canonical[28] == level_id("T13")


def test_totalsegmentator_v2_total_class_indices() -> None:
    # class_map["total"] in TotalSegmentator's map_to_binary.py (v2)
    assert TOTALSEG_V2_INDEX[25] == "sacrum" and TOTALSEG_V2_INDEX[26] == "vertebrae_S1"
    assert TOTALSEG_V2_INDEX[27] == "vertebrae_L5" and TOTALSEG_V2_INDEX[31] == "vertebrae_L1"
    assert TOTALSEG_V2_INDEX[32] == "vertebrae_T12" and TOTALSEG_V2_INDEX[43] == "vertebrae_T1"
    assert TOTALSEG_V2_INDEX[44] == "vertebrae_C7" and TOTALSEG_V2_INDEX[50] == "vertebrae_C1"
    vocab = totalseg_multilabel_vocabulary()
    mapped = vocab.canonical(np.array([[[50, 44, 43, 32, 31, 27, 26, 25, 5, 51, 117, 0]]], np.uint8))
    assert mapped.ravel().tolist() == [1, 7, 8, 19, 20, 24, 26, 26, 0, 0, 0, 0]
    with pytest.raises(LabelVocabularyError, match=r"\[118\]"):
        vocab.canonical(np.array([[[118]]], np.uint8))
    assert TOTALSEG_NAMES["vertebrae_L5"] == 24


def test_canonical_mapping_dtypes_and_errors() -> None:
    arr = np.array([[[0, 1, 19], [7, 7, 0]]], np.uint16)
    out = RSNA.canonical(arr)
    assert out.dtype == np.uint8 and out.tolist() == arr.tolist()
    assert RSNA.canonical(np.array([[[True, False]]])).tolist() == [[[1, 0]]]
    with pytest.raises(LabelVocabularyError, match=r"\[-1, 20\].*RSNA"):
        RSNA.canonical(np.array([[[-1, 20, 3]]], np.int16))
    with pytest.raises(LabelVocabularyError, match="NaN"):
        RSNA.canonical(np.array([[[np.nan]]], np.float32))


def test_present_values_matches_unique() -> None:
    rng = np.random.default_rng(0)
    for dtype, lo, hi in ((np.uint8, 0, 30), (np.int16, -5, 300), (np.int32, 0, 200_000)):
        arr = rng.integers(lo, hi, (4, 5, 6)).astype(dtype)
        assert present_values(arr).tolist() == np.unique(arr).tolist()


def test_adjacent_levels_have_distinct_colours() -> None:
    order = [i for i in CRANIOCAUDAL_ORDER if i in LEVEL_COLOURS]
    for a, b in zip(order, order[1:]):
        assert LEVEL_COLOURS[a] != LEVEL_COLOURS[b]


def test_region_of_the_levels_present() -> None:
    from spine_core.labels import region_of

    assert region_of([f"C{i}" for i in range(1, 8)] + ["T1", "T2"]) == "cervical"
    assert region_of(["T10", "T11", "T12", "L1", "L2"]) == "thoracolumbar"
    assert region_of(["C6", "C7", "T1", "T8", "T9"]) == "thoracolumbar"  # a cervicothoracic scan
    assert region_of(["C1", "T12", "L5", "S"]) == "whole"
    assert region_of([]) == "" and region_of(["nonsense"]) == ""
