"""A radiograph study through the predictor protocol: the ensemble's vertebrae as a
:class:`~spine_core.inference.protocol.StudyPrediction` on the study's one-slice grid.

The mask holds the counted level ids (unlabelled vertebrae stay 0); each vertebra is a box on
slice 0 whose ``level`` is its label (None when no reference was found) and whose ``score`` is
its detection score. Radiographs get no fracture probabilities: ``level_probabilities`` is empty
and the patient probability NaN, "not predicted" (stored as none, never read as "no fracture").
"""

from __future__ import annotations

import math
import time

import numpy as np

from spine_core.errors import InputError
from spine_core.inference.protocol import ModelInfo, PredictedBox, StudyPrediction
from spine_core.inference.xray.model import FilmPrediction, XrayModel
from spine_core.progress import Progress
from spine_core.volume import Volume


def film_of(volume: Volume) -> np.ndarray:
    """The film of a one-slice radiograph volume (rows, columns; bone bright as the reader made it).

    Raises:
        InputError: a volume with more than one slice.
    """
    if volume.shape[0] != 1:
        raise InputError(f"a radiograph is one image; this volume has {volume.shape[0]} slices")
    return np.asarray(volume.array[0])


def boxes_of(pred: FilmPrediction) -> list[PredictedBox]:
    """One box per vertebra on slice 0, head to feet."""
    return [PredictedBox(0, *v.box, score=v.score, level=v.level) for v in pred.vertebrae]


def predict_radiograph(model: XrayModel, volume: Volume, info: ModelInfo,
                       progress: Progress | None = None, device: str = "cpu") -> StudyPrediction:
    """The ensemble's prediction of one radiograph volume."""
    report = progress or (lambda _f, _m: None)
    t0 = time.perf_counter()
    report(0.0, "finding and labelling vertebrae on the film")
    pred = model.predict(film_of(volume))
    report(1.0, "done" if pred.region else pred.note)
    timings = {"radiograph_" + k: v for k, v in pred.timings.items()}
    timings["total"] = time.perf_counter() - t0
    return StudyPrediction(model=info, mask=pred.mask[None], level_probabilities={},
                           patient_probability=math.nan, boxes=boxes_of(pred), timings=timings,
                           device=device)
