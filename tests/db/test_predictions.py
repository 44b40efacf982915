"""The predictions store on a real imported phantom dataset, SQLite and PostgreSQL: a prediction is
stored whole (row, mask file on the study's grid, audit entry) or not at all; batches resume;
`spine predict` runs end to end against a real backend server."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from db import models as m
from db.prediction_jobs import JobBoard, PredictionJob
from db.predictions import existing_prediction, latest_prediction, predict_many, predict_study
from db.session import unit_of_work
from db.studies import open_image
from spine_core.errors import ConflictError, PredictionError
from spine_core.inference.protocol import Progress, StudyPrediction
from spine_core.inference.server import create_app
from spine_core.io.nifti import load_nifti
from spine_core.volume import Volume
from tests.backend_helpers import (
    TOKEN,
    BoneThresholdPredictor,
    GatedPredictor,
    running_server,
    wait_for,
)
from tests.prediction_helpers import (
    BadLabelPredictor,
    FailsOnStudyPredictor,
    Imported,
    MidwayFailurePredictor,
    OutOfRangePredictor,
    UnstorableCardPredictor,
    WrongShapePredictor,
    import_dataset,
    prediction_files,
    write_tiny_dataset,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=3)


@pytest.fixture
def imported(dataset: Path, migrated_db_url: str, tmp_path: Path) -> Imported:
    return import_dataset(dataset, migrated_db_url, tmp_path / "var")


def _count(imported: Imported, model: type) -> int:
    with unit_of_work(imported.ws.sessions, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_a_prediction_is_stored_whole(imported: Imported) -> None:
    ws, study_id = imported.ws, imported.study_ids[0]
    predictor = BoneThresholdPredictor()
    row = predict_study(ws, predictor, study_id, actor="alice")
    assert row is not None and row.id is not None
    with unit_of_work(ws.sessions, readonly=True) as s:
        series = s.scalars(select(m.Series).where(m.Series.study_id == study_id)).one()
        s.expunge(series)
        stored = s.get(m.Prediction, row.id)
        version = s.get(m.ModelVersion, stored.model_version_id)
        audit = s.scalars(select(m.AuditEntry)
                          .where(m.AuditEntry.action == "prediction.store")).all()
        assert latest_prediction(s, study_id).id == row.id
    volume = open_image(ws, series)
    expected = predictor.predict(volume)
    # the row holds what the model said, with canonical level names
    assert (version.name, version.version) == ("bone-threshold", "1.0")
    assert version.card == {"threshold_hu": 200, "dense_hu": 700, "task": "test"}
    assert stored.level_probabilities == pytest.approx(expected.level_probabilities)
    assert stored.patient_probability == pytest.approx(expected.patient_probability)
    assert len(stored.boxes) == len(expected.boxes)
    assert stored.backend == "local (cpu)" and stored.created_by == "alice"
    assert {"load_s", "threshold"} <= set(stored.timings)
    # the mask file lies on the series grid and holds the model's labels voxel for voxel
    mask = load_nifti(stored.mask_path)
    assert mask.shape == volume.shape
    assert np.allclose(mask.affine, np.asarray(series.affine), atol=1e-4)
    assert np.array_equal(np.asarray(mask.array), expected.mask)
    folder = ws.settings.data_dir.resolve() / "predictions" / "bone-threshold-1.0"
    assert Path(stored.mask_path).parent == folder
    assert [a.actor for a in audit] == ["alice"] and audit[0].entity_id == str(study_id)


@pytest.mark.parametrize("predictor, message", [
    (WrongShapePredictor(), "mask of shape (47, 64, 64) for a volume of (48, 64, 64)"),
    (OutOfRangePredictor(), "probability of C2 = 1.5, outside [0, 1]"),
    (BadLabelPredictor(), "level ids are 0 (background) to 28"),
], ids=["wrong-shape", "probability-out-of-range", "mask-value-not-a-level"])
def test_a_bad_answer_stores_nothing(imported: Imported, predictor: BoneThresholdPredictor,
                                     message: str) -> None:
    with pytest.raises(PredictionError) as err:
        predict_study(imported.ws, predictor, imported.study_ids[0], actor="alice")
    assert message in str(err.value) and "nothing was stored" in str(err.value)
    assert _count(imported, m.Prediction) == 0 and _count(imported, m.ModelVersion) == 0
    assert prediction_files(imported.ws.settings.data_dir) == []


class _NoFracturePredictor(BoneThresholdPredictor):
    """Segments, scores no fracture: the patient probability is NaN, "not predicted" (as the
    radiograph ensemble and MONAI Label segmentations answer)."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        result = super().predict(volume, progress)
        return dataclasses.replace(result, level_probabilities={}, patient_probability=math.nan)


def test_a_model_that_scores_no_fracture_stores_no_patient_probability(imported: Imported) -> None:
    """Never a number a page could show as "no fracture": the row holds none."""
    row = predict_study(imported.ws, _NoFracturePredictor(), imported.study_ids[0], actor="alice")
    assert row is not None
    with unit_of_work(imported.ws.sessions, readonly=True) as s:
        stored = s.get(m.Prediction, row.id)
        assert stored.patient_probability is None and stored.level_probabilities == {}
        assert stored.mask_path


def test_a_predictor_failing_midway_stores_nothing(imported: Imported) -> None:
    predictor = MidwayFailurePredictor()
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="illegal memory access"):
        predict_study(imported.ws, predictor, imported.study_ids[0], actor="alice",
                      progress=lambda f, text: seen.append(text))
    assert seen == ["segmenting"]
    assert _count(imported, m.Prediction) == 0
    assert prediction_files(imported.ws.settings.data_dir) == []


def test_a_failed_database_write_removes_the_new_mask_file(imported: Imported) -> None:
    ws, study_id = imported.ws, imported.study_ids[0]
    with pytest.raises(Exception, match="not JSON serializable"):
        predict_study(ws, UnstorableCardPredictor(), study_id, actor="alice")
    assert _count(imported, m.Prediction) == 0 and _count(imported, m.ModelVersion) == 0
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert not s.scalars(select(m.AuditEntry)
                             .where(m.AuditEntry.action == "prediction.store")).all()
    assert prediction_files(ws.settings.data_dir) == []
    # the study can still be predicted afterwards
    assert predict_study(ws, BoneThresholdPredictor(), study_id, actor="alice") is not None


def test_replace_updates_the_row_and_removes_the_old_mask(imported: Imported) -> None:
    ws, study_id = imported.ws, imported.study_ids[1]
    first = predict_study(ws, BoneThresholdPredictor(), study_id, actor="alice")
    assert predict_study(ws, BoneThresholdPredictor(), study_id, actor="bob") is None  # kept
    second = predict_study(ws, BoneThresholdPredictor(), study_id, actor="bob", replace=True)
    assert first is not None and second is not None
    assert second.id == first.id and second.created_by == "bob"
    assert second.created_at > first.created_at
    assert second.mask_path != first.mask_path
    assert not Path(first.mask_path).exists() and Path(second.mask_path).exists()
    assert prediction_files(ws.settings.data_dir) == [Path(second.mask_path)]
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert existing_prediction(s, study_id, BoneThresholdPredictor().info()).id == first.id
        assert s.scalar(select(func.count()).select_from(m.Prediction)) == 1


def test_predict_many_resumes_reports_failures_and_stops_when_asked(imported: Imported) -> None:
    ws, ids, uids = imported.ws, imported.study_ids, imported.uids
    outcomes: list[tuple[int, str]] = []
    broken = FailsOnStudyPredictor({uids[ids[1]]})
    report = predict_many(ws, broken, ids, actor="cli",
                          on_study=lambda i, o: outcomes.append((i, o)))
    assert (report.predicted, report.skipped) == (2, 0)
    bad = uids[ids[1]]
    assert report.problems == [f"study {bad}: study {bad} has no bone above 200 HU"]
    assert outcomes == [(ids[0], "predicted"), (ids[1], "failed"), (ids[2], "predicted")]
    assert "2 studies predicted, 0 already predicted, 1 failed" == report.summary()

    # resuming with a working model of the same version predicts only the failed study
    resumed = predict_many(ws, FailsOnStudyPredictor(set()), ids, actor="cli")
    assert (resumed.predicted, resumed.skipped, resumed.problems) == (1, 2, [])
    assert _count(imported, m.Prediction) == 3

    # another version: stops between studies when asked, after the first one
    asked: list[int] = []
    stopped = predict_many(ws, FailsOnStudyPredictor(set(), version="2.0"), ids, actor="cli",
                           on_study=lambda i, o: asked.append(i),
                           should_stop=lambda: len(asked) >= 1)
    assert stopped.predicted == 1 and stopped.stopped == "stopped on request"
    assert _count(imported, m.Prediction) == 4


def test_predict_many_survives_a_crashing_model_and_gives_up_after_failures_in_a_row(
        imported: Imported) -> None:
    report = predict_many(imported.ws, MidwayFailurePredictor(), imported.study_ids, actor="cli",
                          max_consecutive_failures=2)
    assert report.predicted == 0 and len(report.problems) == 2
    assert "unexpected RuntimeError: CUDA error" in report.problems[0]
    assert imported.uids[imported.study_ids[0]] in report.problems[0]
    assert report.stopped.startswith("stopped after 2 failures in a row")
    assert _count(imported, m.Prediction) == 0


def _spine(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spine_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_spine_predict_end_to_end_against_a_backend(dataset: Path, tmp_path: Path) -> None:
    """`spine import` then `spine predict` in real processes, the model on a real HTTP backend."""
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, device="cpu")
    with running_server(app) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        env.update(SPINE_DATA_DIR=str(tmp_path / "var"), SPINE_BACKEND_URL=url,
                   SPINE_BACKEND_TOKEN=TOKEN, SPINE_WORKERS="1")
        imported = _spine("import", str(dataset), "--no-progress", env=env)
        # exit 3: the simulated readers' rows are skipped (they are no users here); studies are in
        assert imported.returncode == 3 and "3 studies added" in imported.stdout, imported.stderr
        first = _spine("predict", "--no-progress", "--actor", "carol", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "3 studies predicted, 0 already predicted"
        again = _spine("predict", "--no-progress", env=env)
        assert again.stdout.strip() == "0 studies predicted, 3 already predicted"
        unknown = _spine("predict", "--no-progress", "--study", "1.2.3.4", env=env)
        assert unknown.returncode == 2 and "not imported: 1.2.3.4" in unknown.stderr
        assert "Traceback" not in first.stderr + again.stderr + unknown.stderr
    from db.session import make_sessionmaker

    sessions = make_sessionmaker(f"sqlite:///{tmp_path / 'var' / 'spine.db'}")
    with unit_of_work(sessions, readonly=True) as s:
        first_uid = s.scalars(select(m.Study.study_uid).order_by(m.Study.id)).first()
    # the backend is gone now: one clear line for the study and exit status 3
    down = _spine("predict", "--no-progress", "--replace", "--study", first_uid, env=env)
    assert down.returncode == 3, down.stdout + down.stderr
    assert down.stderr.startswith(f"failed study {first_uid}: ") and "unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr
    with unit_of_work(sessions, readonly=True) as s:
        rows = s.scalars(select(m.Prediction)).all()
        assert len(rows) == 3  # the failed --replace kept the stored prediction
        assert {r.backend for r in rows} == {url} and {r.created_by for r in rows} == {"carol"}
        assert all(Path(r.mask_path).is_file() for r in rows)
    sessions.kw["bind"].dispose()


def test_one_background_batch_per_database(imported: Imported) -> None:
    gate = threading.Event()
    board = JobBoard()
    key = imported.ws.settings.database_url
    first = board.start(key, PredictionJob(imported.ws, GatedPredictor(gate), imported.study_ids,
                                           actor="alice"))
    wait_for(lambda: first.predictor.started == 1, "the first study to start")
    refused = "started by alice is running \\(0 of 3 studies done\\)"
    with pytest.raises(ConflictError, match=refused):
        board.start(key, PredictionJob(imported.ws, BoneThresholdPredictor(), imported.study_ids,
                                       actor="bob"))
    first.cancel()  # stops after the study in progress, which is still stored
    gate.set()
    assert first.wait(30)
    snap = first.snapshot()
    assert (snap.done, snap.predicted, snap.running) == (1, 1, False)
    assert snap.stopped == "stopped on request" and snap.model == "bone-threshold 1.0"
    assert snap.summary() == "1 studies predicted, 0 already predicted; stopped on request"
    assert board.current(key) is first and _count(imported, m.Prediction) == 1
    # finished: the next batch may start, and resumes
    second = board.start(key, PredictionJob(imported.ws, BoneThresholdPredictor(),
                                            imported.study_ids, actor="bob"))
    assert second.wait(30) and (second.snapshot().predicted, second.snapshot().skipped) == (2, 1)
