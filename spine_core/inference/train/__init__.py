"""Training of both stages on studies generated on the fly (``spine train``), split by subject:
:mod:`~spine_core.inference.train.data` (labelled phantom studies, segmentation samples, vertebra
crop sets), :mod:`~spine_core.inference.train.loop` (the one training-phase loop both stages
share, with each stage's batches and loss), :mod:`~spine_core.inference.train.settings`
(:class:`TrainSettings`), :mod:`~spine_core.inference.train.model_card` (the model card and
MODEL_CARD.md), :mod:`~spine_core.inference.train.evaluation` (the two-stage pipeline scored on
held-out studies, extra validation and calibration of written weights) and :mod:`~spine_core.inference.train.run`
(the :func:`train` orchestration, whose docstring describes the pipeline, and the CLI;
``python -m spine_core.inference.train`` runs it). Each module imports only modules listed before
it; import the public names from here.
"""

from __future__ import annotations

from spine_core.inference.train.data import (
    CropSet,
    LabelledStudy,
    Log,
    SegSample,
    StudySource,
    natural_prevalence,
    phantom_source,
    prepare_fracture,
    prepare_segmentation,
)
from spine_core.inference.train.evaluation import (
    LevelScores,
    calibrate_weights,
    calibration_summary,
    evaluate,
    extra_validation,
    fit_calibration,
    score_levels,
)
from spine_core.inference.train.loop import (
    PhaseLog,
    segmentation_loss,
    train_fracture,
    train_segmentation,
)
from spine_core.inference.train.model_card import (
    BOX_METRICS,
    BOX_NOTE,
    DISCLAIMER,
    build_card,
    card_markdown,
)
from spine_core.inference.train.run import (
    TrainReport,
    add_arguments,
    main,
    run_from_args,
    settings_from_args,
    stage_configs,
    train,
)
from spine_core.inference.train.settings import TrainSettings

__all__ = [
    # data
    "CropSet",
    "LabelledStudy",
    "Log",
    "SegSample",
    "StudySource",
    "natural_prevalence",
    "phantom_source",
    "prepare_fracture",
    "prepare_segmentation",
    # loop
    "PhaseLog",
    "segmentation_loss",
    "train_fracture",
    "train_segmentation",
    # evaluation
    "LevelScores",
    "calibrate_weights",
    "calibration_summary",
    "evaluate",
    "extra_validation",
    "fit_calibration",
    "score_levels",
    # settings
    "TrainSettings",
    # model card
    "BOX_METRICS",
    "BOX_NOTE",
    "DISCLAIMER",
    "build_card",
    "card_markdown",
    # run
    "TrainReport",
    "add_arguments",
    "main",
    "run_from_args",
    "settings_from_args",
    "stage_configs",
    "train",
]
