"""Radiograph predictions of one model version, measured against the readers' final truth.

For every film a model version predicted (:mod:`db.predictions` stores the radiograph ensemble's
boxes, one per vertebra with its counted label, and no fracture probability): what it found in
words, and, where the film has a final truth (:func:`db.film_export.film_truth`: the submitted
readers' union box per vertebra and label, the committee's labelling applied; none while a
labelling dispute is open), the vertebrae it found and how many of those it labelled as the readers
did (:func:`spine_core.film_prediction.score_film`). The Models page shows these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.film_export import film_truth
from db.studies import is_radiograph_series
from spine_core.film_labels import shown_level
from spine_core.film_prediction import FilmScore, film_prediction_line, labels_span, pool_scores, score_film
from spine_core.inference.protocol import PredictedBox


def predicted_boxes(raw: Sequence[Any] | None) -> list[PredictedBox]:
    """A stored prediction's boxes (those an older model wrote unreadably are left out)."""
    out = []
    for item in raw or []:
        try:
            out.append(PredictedBox.from_json(dict(item)))
        except (KeyError, TypeError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class FilmPredictionRow:
    """One predicted film: what the model found, the readers' final labels, the score (None
    without a final truth, ``why`` says so)."""

    study_id: int
    study_uid: str
    found: str
    predicted_labels: str
    truth_labels: str
    score: FilmScore | None
    why: str = ""


@dataclass
class FilmPredictionMetrics:
    """A model version's radiograph predictions (empty ``rows``: it predicted no film)."""

    rows: list[FilmPredictionRow] = field(default_factory=list)

    @property
    def scored(self) -> list[FilmPredictionRow]:
        return [r for r in self.rows if r.score is not None]

    @property
    def pooled(self) -> FilmScore:
        """Every film with a final truth together."""
        return pool_scores(r.score for r in self.scored if r.score is not None)


def film_prediction_metrics(session: Session, model_version_id: int, *,
                            union_min_iou: float = 0.0) -> FilmPredictionMetrics:
    """The films ``model_version_id`` predicted, by StudyInstanceUID, each against its final
    truth (``union_min_iou``: the workspace's union rule, ``Settings.union_min_iou``)."""
    result = FilmPredictionMetrics()
    rows = session.execute(
        select(m.Prediction, m.Study).join(m.Study, m.Study.id == m.Prediction.study_id)
        .where(m.Prediction.model_version_id == model_version_id)
        .order_by(m.Study.study_uid)).all()
    first: dict[int, m.Series] = {}  # each predicted study's primary series, in one query
    for row in session.scalars(
            select(m.Series).join(m.Prediction, m.Prediction.study_id == m.Series.study_id)
            .where(m.Prediction.model_version_id == model_version_id)
            .order_by(m.Series.study_id, m.Series.id)):
        first.setdefault(row.study_id, row)
    for prediction, study in rows:
        series = first.get(study.id)
        if series is None or not is_radiograph_series(series):
            continue
        boxes = predicted_boxes(prediction.boxes)
        truth = film_truth(session, study, union_min_iou)
        if truth is None:
            result.rows.append(FilmPredictionRow(
                study.id, study.study_uid, film_prediction_line(boxes), labels_span(boxes), "",
                None, _why_no_truth(session, study.id)))
            continue
        labels = [shown_level(label) for label, _ in
                  sorted(truth.boxes, key=lambda t: (t[1].y, t[1].x))]  # head to feet
        span = labels[0] if len(labels) == 1 else f"{labels[0]}–{labels[-1]}" if labels else ""
        result.rows.append(FilmPredictionRow(
            study.id, study.study_uid, film_prediction_line(boxes), labels_span(boxes), span,
            score_film(boxes, truth.boxes)))
    return result


def _why_no_truth(session: Session, study_id: int) -> str:
    from db.film_reading import submitted_film_boxes

    if submitted_film_boxes(session, study_id):
        return "its vertebra labelling is disputed"
    return "no reader has submitted it yet"
