"""The Models page through Streamlit's AppTest, on a real imported phantom dataset (SQLite and
PostgreSQL) and a real inference backend on loopback (the threshold model of
``tests.backend_helpers``): backend status line, "Predict all" in the background with its
progress and failures, and the metrics of the stored predictions."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db import models as m
from db.model_metrics import PATIENT, classification_metrics, gather
from db.prediction_jobs import JOBS
from db.session import unit_of_work
from pages.parts.common import SignedInUser, workspace
from spine_core.inference.server import create_app
from tests.backend_helpers import (
    TOKEN,
    BoneThresholdPredictor,
    GatedPredictor,
    free_port,
    running_server,
)
from tests.prediction_helpers import Imported, import_dataset, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
ADMIN = SignedInUser(1, "admin", "Admin", "admin")
VIEWER = SignedInUser(2, "vic", "Vic", "viewer")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=3, seed=11)


@dataclass
class Scene:
    imported: Imported
    monkeypatch: pytest.MonkeyPatch

    def use_backend(self, url: str) -> None:
        self.monkeypatch.setenv("SPINE_BACKEND_URL", url)
        self.monkeypatch.setenv("SPINE_BACKEND_TOKEN", TOKEN)
        workspace.clear()

    @property
    def job_key(self) -> str:
        return self.imported.ws.settings.database_url

    def predictions(self) -> int:
        with unit_of_work(self.imported.ws.sessions, readonly=True) as s:
            return int(s.scalar(select(func.count()).select_from(m.Prediction)) or 0)


@pytest.fixture
def scene(dataset: Path, migrated_db_url: str, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    source = tmp_path / "ds"
    shutil.copytree(dataset, source)  # a test may break one study's files
    imported = import_dataset(source, migrated_db_url, tmp_path / "var")
    monkeypatch.setenv("SPINE_DB_URL", migrated_db_url)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path / "var"))
    workspace.clear()
    yield Scene(imported, monkeypatch)
    job = JOBS.current(imported.ws.settings.database_url)
    if job is not None:
        job.cancel()
        job.wait(30)
    workspace.clear()


def page(user: SignedInUser) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "models.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = user
    return at.run()


def button(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type
    return next(b for b in at.button if b.label == label)


def texts(at: AppTest) -> str:
    kinds = ("success", "warning", "error", "info", "caption", "markdown", "text")
    parts = [e.value for kind in kinds for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    return next(str(x.value) for x in at.metric if x.label == label)


def frame_with(at: AppTest, column: str):  # noqa: ANN201 - a pandas DataFrame
    """The table on the page that has ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def wait_for_batch(scene: Scene) -> None:
    job = JOBS.current(scene.job_key)
    assert job is not None and job.wait(60), "the prediction batch did not finish"


def test_predict_all_then_metrics_against_the_final_labels(scene: Scene) -> None:
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, device="cpu")
    with running_server(app) as url:
        scene.use_backend(url)
        viewer = page(VIEWER)
        assert not viewer.exception, viewer.exception
        assert f"backend at {url}: ready" in viewer.success[0].value
        assert "No model has predicted any study yet" in texts(viewer)
        # viewers only read
        assert not [b for b in viewer.button if b.label.startswith("Predict all")]

        at = page(ADMIN)
        button(at, "Predict all 3 studies").click().run()
        wait_for_batch(scene)
        at.run()
    assert not at.exception, at.exception
    assert "Last batch (started by admin, model bone-threshold 1.0): 3 studies predicted, " \
           "0 already predicted" in texts(at)
    assert scene.predictions() == 3
    picker = at.selectbox(key="models_version")
    assert picker.format_func(picker.value) == "bone-threshold 1.0 · 3 studies predicted"

    # the page shows what db.model_metrics computes from the same rows
    with unit_of_work(scene.imported.ws.sessions, readonly=True) as s:
        version_id = s.scalars(select(m.ModelVersion.id)).one()
        cls = classification_metrics(gather(s, version_id))
    assert cls.n_labelled == 3
    assert metric(at, "With final labels") == "3"
    shown_loss = metric(at, "RSNA weighted log loss")
    assert shown_loss == ("—" if cls.n_scored == 0 else f"{cls.log_loss:.3f}")
    assert {c.proto.id for c in at.get("plotly_chart")} and len(at.get("plotly_chart")) >= 2
    assert metric(at, "Identification rate") != "—"

    # the threshold slider: at 0 every case is called fractured -> sensitivity 1 where defined
    at.slider(key="models_threshold").set_value(0.0).run()
    table = frame_with(at, "Target")
    patient = table[table["Target"] == "Patient"].iloc[0]
    assert patient["FN"] == 0 and patient["TN"] == 0
    roc = cls.roc[PATIENT]
    assert patient["Fractured"] + patient["Intact"] == roc.n_pos + roc.n_neg
    levels = frame_with(at, "Level")
    assert list(levels.columns) == ["Level", "Fractured", "Intact", "AUC", "Dice", "Identified"]
    assert "C1" in set(levels["Level"]) and levels["Level"].is_unique


def test_a_running_batch_is_seen_by_others_and_failures_are_listed(scene: Scene) -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    broken = scene.imported.uids[scene.imported.study_ids[1]]
    with unit_of_work(scene.imported.ws.sessions, readonly=True) as s:
        series = s.scalars(select(m.Series).join(m.Study).where(m.Study.study_uid == broken)).one()
        first_file = Path(series.source_dir) / series.files[0]
    first_file.unlink()  # this study's files changed since import: it must fail, the rest go on
    app = create_app(lambda device: predictor, token=TOKEN, device="cpu")
    with running_server(app) as url:
        scene.use_backend(url)
        at = page(ADMIN)
        button(at, "Predict all 3 studies").click().run()
        other = page(SignedInUser(3, "ada", "Ada", "adjudicator"))
        assert not other.exception, other.exception
        progress = other.get("progress")
        assert progress and "started by admin" in progress[0].proto.text
        assert button(other, "Predict all 3 studies").disabled
        gate.set()
        wait_for_batch(scene)
        at.run()
    assert not at.exception, at.exception
    assert "2 studies predicted, 0 already predicted, 1 failed" in texts(at)
    failed = "\n".join(t.value for t in at.text)
    assert f"study {broken}:" in failed and "missing" in failed
    assert scene.predictions() == 2


def test_an_unreachable_backend_is_said_plainly(scene: Scene) -> None:
    scene.use_backend(f"http://127.0.0.1:{free_port()}")
    at = page(ADMIN)
    assert not at.exception, at.exception
    assert "unreachable" in at.warning[0].value
    button(at, "Predict all 3 studies").click().run()
    wait_for_batch(scene)
    at.run()
    errors = "\n".join(e.value for e in at.error)
    assert "could not run" in errors and "unreachable" in errors
    assert scene.predictions() == 0
