"""A tiny real dataset and a few broken predictors for the prediction and model-metrics tests.

The dataset is written by :func:`spine_core.phantom.rsna_layout.write_rsna_dataset` (real DICOM, NIfTI
segmentations, RSNA CSVs) and imported with :func:`db.importer.import_path` into the
database under test. The predictors wrap :class:`tests.backend_helpers.BoneThresholdPredictor`
(a real threshold + connected-component model) and break it in one precise way each.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import InputError
from spine_core.inference.protocol import ModelInfo, Progress, StudyPrediction
from spine_core.volume import Volume
from tests.backend_helpers import BoneThresholdPredictor

#: Smallest shape the phantom generator accepts (fast to write, load and predict).
TINY_SHAPE = (48, 64, 64)


def write_tiny_dataset(folder: Path, n_studies: int = 3, seed: int = 7) -> Path:
    """An RSNA-layout phantom dataset of ``n_studies`` small studies in ``folder``."""
    from spine_core.phantom.rsna_layout import write_rsna_dataset

    write_rsna_dataset(folder, n_studies=n_studies, seed=seed, shape=TINY_SHAPE, workers=1)
    return folder


@dataclass
class Imported:
    ws: Workspace
    study_ids: list[int]
    uids: dict[int, str]


def import_dataset(dataset: Path, db_url: str, data_dir: Path) -> Imported:
    """Import ``dataset`` into ``db_url`` (predictions and caches under ``data_dir``)."""
    settings = Settings(data_dir=data_dir, db_url=db_url, workers=1)
    report = import_path(dataset, settings, actor="test", progress=False)
    assert report.studies_added >= 1, report.problems
    ws = open_workspace(settings)
    with unit_of_work(ws.sessions, readonly=True) as s:
        rows = s.execute(select(m.Study.id, m.Study.study_uid).order_by(m.Study.id)).all()
    return Imported(ws, [int(i) for i, _ in rows], {int(i): str(u) for i, u in rows})


def prediction_files(data_dir: Path) -> list[Path]:
    """Every file under the predictions folder (temporary files included)."""
    root = data_dir / "predictions"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class WrongShapePredictor(BoneThresholdPredictor):
    """Returns a mask one slice short of the volume."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        result = super().predict(volume, progress)
        result.mask = np.ascontiguousarray(result.mask[:-1])
        return result


class OutOfRangePredictor(BoneThresholdPredictor):
    """Returns a level probability of 1.5."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        result = super().predict(volume, progress)
        result.level_probabilities["C2"] = 1.5
        return result


class BadLabelPredictor(BoneThresholdPredictor):
    """Returns a mask holding the value 200 (not a level id)."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        result = super().predict(volume, progress)
        mask = np.array(result.mask, dtype=np.int32)
        mask[mask == 1] = 200
        result.mask = mask
        return result


class MidwayFailurePredictor(BoneThresholdPredictor):
    """Reports progress, then fails the way a model bug would."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_seen: list[str] = []

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        if progress is not None:
            progress(0.5, "segmenting")
        self.progress_seen.append("segmenting")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class UnstorableCardPredictor(BoneThresholdPredictor):
    """A valid prediction whose model card holds a date (not JSON): the database write fails
    after the mask file was written."""

    def info(self) -> ModelInfo:
        return ModelInfo("bone-threshold", "card-bug", {"trained_on": dt.date(2024, 1, 1)})


class FailsOnStudyPredictor(BoneThresholdPredictor):
    """Refuses the studies whose UIDs are in ``fail_uids`` (an InputError, as a model would)."""

    def __init__(self, fail_uids: set[str], version: str = "1.0") -> None:
        super().__init__()
        self.fail_uids = fail_uids
        self.version = version

    def info(self) -> ModelInfo:
        return ModelInfo("bone-threshold", self.version, {"task": "test"})

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        if volume.meta.get("study_uid") in self.fail_uids:
            raise InputError(f"study {volume.meta['study_uid']} has no bone above 200 HU")
        return super().predict(volume, progress)
