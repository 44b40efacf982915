"""A film's predicted vertebrae in words, and scored against the readers' final truth."""

from __future__ import annotations

import math

import pytest

from spine_core.boxes import Box
from spine_core.consensus import UnionBox
from spine_core.film_prediction import (
    film_prediction_line,
    labels_span,
    pool_scores,
    score_film,
    vertebra_rows,
)
from spine_core.inference.protocol import PredictedBox


def _pred(y: float, level: str | None, score: float = 0.9, x: float = 10.0) -> PredictedBox:
    return PredictedBox(0, x, y, 40.0, 20.0, score, level)


def _truth(y: float, level: str, x: float = 10.0) -> tuple[str, UnionBox]:
    box = Box(0, x, y, 40.0, 20.0, "r1", level)
    return level, UnionBox(0, x, y, 40.0, 20.0, (box,))


def test_the_line_says_what_was_found_head_to_feet() -> None:
    boxes = [_pred(90, "S"), _pred(10, "L4"), _pred(50, "L5"), _pred(130, None)]
    assert labels_span(boxes) == "L4–S1"  # the sacrum reads S1 on a film
    assert film_prediction_line(boxes) == "4 vertebrae found, 3 labelled L4–S1; 1 without a label"
    assert film_prediction_line([_pred(10, "C2")]) == "1 vertebra found, 1 labelled C2"
    assert film_prediction_line([_pred(10, None)]).endswith("none labelled (no reference "
                                                            "vertebra found to count from)")
    assert film_prediction_line([]) == "no vertebra found"
    assert [r["Vertebra"] for r in vertebra_rows(boxes)] == ["L4", "L5", "S1", "—"]


def test_a_film_is_scored_on_the_vertebrae_found_and_their_labels() -> None:
    truth = [_truth(10, "L3"), _truth(50, "L4"), _truth(90, "L5"), _truth(130, "S")]
    predicted = [
        _pred(10, "L3"),            # found, right
        _pred(52, "L4"),            # found (IoU 0.82), right
        _pred(90, "L4"),            # found, wrong label
        _pred(130, None, x=45.0),   # IoU 0.07: not found
        _pred(400, "S1"),           # nothing there
    ]
    score = score_film(predicted, truth)
    assert (score.n_truth, score.found, score.labelled_right, score.n_predicted) == (4, 3, 2, 5)
    assert score.detection_rate == 0.75
    assert score.labelling_accuracy == pytest.approx(2 / 3)
    assert score.mean_iou == pytest.approx((1 + 18 / 22 + 1) / 3)
    pooled = pool_scores([score, score_film([], truth)])
    assert (pooled.n_truth, pooled.found, pooled.labelled_right) == (8, 3, 2)
    empty = score_film(predicted, [])
    assert math.isnan(empty.detection_rate) and math.isnan(empty.labelling_accuracy)
