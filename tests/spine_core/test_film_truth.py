"""The final truth of a film: the committee's labelling adopted by every reader's boxes, the union
per label, the label map inside the boxes (from the film's mask when it has one), COCO RLE."""

from __future__ import annotations

import numpy as np

from spine_core.boxes import Box
from spine_core.film_labels import moved_level
from spine_core.film_truth import adopt_labelling, final_film_boxes, rle_decode, rle_encode, truth_map
from spine_core.labels import LEVEL_IDS


def _column(reader: str, labels: list[str], dy: float = 0.0) -> list[Box]:
    return [Box(0, 10, 10 + 30 * i + dy, 20, 25, reader, lab, f"{reader}{i}")
            for i, lab in enumerate(labels)]


def test_moved_level() -> None:
    assert moved_level("C7", 1) == "T1" and moved_level("L1", -1) == "T12"
    assert moved_level("S", 1) is None and moved_level("C1", -1) is None


def test_the_chosen_labelling_is_adopted_and_unions_per_label() -> None:
    r1 = _column("r1", ["C3", "C4", "C5"])
    r2 = _column("r2", ["C4", "C5", "C6", "C7"], dy=2)  # one box more, below r1's last
    by_reader = {"r1": r1, "r2": r2}
    adopted = adopt_labelling(by_reader, "r1")
    assert sorted(b.level or "" for b in adopted if b.reader == "r2") == ["C3", "C4", "C5", "C6"]
    final = final_film_boxes(by_reader, "r1")
    assert [label for label, _ in final] == ["C3", "C4", "C5", "C6"]
    assert [u.n_readers for _, u in final] == [2, 2, 2, 1]
    # undecided: each reader's own labels
    assert [label for label, _ in final_film_boxes(by_reader)] == ["C3", "C4", "C4", "C5", "C5",
                                                                    "C6", "C7"]


def test_truth_map_from_the_mask_inside_each_box_or_the_whole_box() -> None:
    mask = np.zeros((60, 40), dtype=np.uint8)
    mask[12:33, 12:28] = LEVEL_IDS["C4"]  # the mask numbers it C4; the readers say C3
    final = final_film_boxes({"r1": [Box(0, 10, 10, 20, 25, "r1", "C3", 1)]})
    labels = truth_map((60, 40), final, mask)
    assert set(np.unique(labels)) == {0, LEVEL_IDS["C3"]}
    assert (labels == LEVEL_IDS["C3"]).sum() == (mask > 0).sum()
    plain = truth_map((60, 40), final)
    assert (plain == LEVEL_IDS["C3"]).sum() == 20 * 25


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(3)
    for binary in (np.zeros((4, 5), bool), np.ones((4, 5), bool), rng.random((9, 7)) > 0.4):
        rle = rle_encode(binary)
        assert rle["size"] == list(binary.shape) and sum(rle["counts"]) == binary.size
        assert np.array_equal(rle_decode(rle), binary)
