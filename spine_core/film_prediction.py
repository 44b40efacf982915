"""A radiograph's prediction in words and against its readers' final truth.

The radiograph ensemble (:mod:`spine_core.inference.xray`) answers one box per vertebra on the
film's one slice, each with its counted label (None when no reference vertebra was found) and
its detection score; it gives no fracture probability. Here:

* :func:`predicted_vertebrae` — those boxes head to feet; :func:`labels_span` and
  :func:`film_prediction_line` say what was found ("23 vertebrae found, 15 labelled C3–S1");
  :func:`vertebra_rows` is the table a page shows;
* :func:`score_film` — the prediction against the film's final truth (the readers' union box per
  vertebra and label, :mod:`spine_core.film_truth`): the truth vertebrae the model found (a
  predicted box of IoU at least :data:`FOUND_MIN_IOU`, each box matched once, best first) and how
  many of those it labelled as the readers did; :func:`pool_scores` sums films.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spine_core.boxes import Box
from spine_core.consensus import UnionBox
from spine_core.errors import SpineError
from spine_core.film_labels import film_level, match_boxes, shown_level
from spine_core.inference.protocol import PredictedBox

#: A predicted box finds a truth vertebra at this box IoU or more (the usual detection threshold).
FOUND_MIN_IOU = 0.5


def _canonical(level: str | None) -> str | None:
    if not level:
        return None
    try:
        return film_level(level)
    except SpineError:  # a label no film box can have: kept as given
        return str(level)


def predicted_vertebrae(boxes: Iterable[PredictedBox]) -> list[PredictedBox]:
    """The predicted vertebrae of a film (its slice 0), head to feet (top edge, then left)."""
    return sorted((b for b in boxes if b.slice_index == 0 and b.width > 0 and b.height > 0),
                  key=lambda b: (b.y, b.x))


def labels_span(boxes: Iterable[PredictedBox]) -> str:
    """'C3–S1' from the highest to the lowest labelled vertebra; '' when none is labelled."""
    labelled = [shown_level(b.level) for b in predicted_vertebrae(boxes) if b.level]
    if not labelled:
        return ""
    return labelled[0] if len(labelled) == 1 else f"{labelled[0]}–{labelled[-1]}"


def film_prediction_line(boxes: Sequence[PredictedBox]) -> str:
    """What the model found on a film, in words (no fracture probability: it gives none)."""
    found = predicted_vertebrae(boxes)
    if not found:
        return "no vertebra found"
    labelled = [b for b in found if b.level]
    n = len(found)
    line = f"{n} vertebra{'e' if n != 1 else ''} found"
    if not labelled:
        return line + ", none labelled (no reference vertebra found to count from)"
    line += f", {len(labelled)} labelled {labels_span(found)}"
    unlabelled = n - len(labelled)
    if unlabelled:
        line += f"; {unlabelled} without a label"
    return line


def vertebra_rows(boxes: Sequence[PredictedBox]) -> list[dict[str, object]]:
    """One row per predicted vertebra, head to feet: its label ('—' without), detection score
    and box in pixels."""
    return [{"Vertebra": shown_level(b.level) if b.level else "—",
             "Detection score": round(float(b.score), 3),
             "Box (x, y, width, height)": f"{b.x:.0f}, {b.y:.0f}, {b.width:.0f}, {b.height:.0f}"}
            for b in predicted_vertebrae(boxes)]


@dataclass(frozen=True)
class FilmScore:
    """One film's (or, pooled, many films') prediction against the final truth.

    Attributes:
        n_truth: vertebrae in the readers' final truth.
        found: truth vertebrae matched by a predicted box (IoU >= :data:`FOUND_MIN_IOU`).
        labelled_right: found vertebrae whose predicted label is the readers' label.
        iou_sum: the summed IoU of the found pairs (for the mean over films).
        n_predicted: predicted vertebrae.
    """

    n_truth: int
    found: int
    labelled_right: int
    iou_sum: float
    n_predicted: int

    @property
    def detection_rate(self) -> float:
        """Share of truth vertebrae found (NaN without truth)."""
        return self.found / self.n_truth if self.n_truth else math.nan

    @property
    def labelling_accuracy(self) -> float:
        """Share of found vertebrae labelled as the readers did (NaN when none was found)."""
        return self.labelled_right / self.found if self.found else math.nan

    @property
    def mean_iou(self) -> float:
        """Mean box IoU of the found vertebrae (NaN when none was found)."""
        return self.iou_sum / self.found if self.found else math.nan


def score_film(predicted: Sequence[PredictedBox], truth: Sequence[tuple[str, UnionBox]],
               *, min_iou: float = FOUND_MIN_IOU) -> FilmScore:
    """The prediction of one film against its final truth ``(label, union box)`` (see module)."""
    ours = [Box(0, b.x, b.y, b.width, b.height, level=_canonical(b.level))
            for b in predicted_vertebrae(predicted)]
    theirs = [Box(0, u.x, u.y, u.width, u.height, level=_canonical(label)) for label, u in truth]
    pairs = match_boxes(theirs, ours, min_iou=min_iou)
    right = sum(1 for p in pairs if p.a.level and p.a.level == p.b.level)
    return FilmScore(len(theirs), len(pairs), right, sum(p.iou for p in pairs), len(ours))


def pool_scores(scores: Iterable[FilmScore]) -> FilmScore:
    """Many films' scores summed (rates over all their vertebrae)."""
    items = list(scores)
    return FilmScore(sum(s.n_truth for s in items), sum(s.found for s in items),
                     sum(s.labelled_right for s in items), sum(s.iou_sum for s in items),
                     sum(s.n_predicted for s in items))
