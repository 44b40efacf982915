"""The Models page with ``SPINE_WORKER=external`` (AppTest, SQLite and PostgreSQL): "Predict all"
only queues the batch; the page shows it waiting, then the progress and end that a real
``spine worker`` process writes into the database; a queued batch stops at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db import job_rows
from db.prediction_jobs import JOBS
from pages.parts.common import SignedInUser, workspace
from spine_core.inference.server import create_app
from tests.backend_helpers import TOKEN, BoneThresholdPredictor, running_server
from tests.prediction_helpers import Imported, import_dataset, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
ADMIN = SignedInUser(1, "admin", "Admin", "admin")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=2, seed=5)


@pytest.fixture
def backend() -> Iterator[str]:
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, device="cpu")
    with running_server(app) as url:
        yield url


@pytest.fixture
def imported(dataset: Path, migrated_db_url: str, tmp_path: Path, backend: str,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Imported]:
    imported = import_dataset(dataset, migrated_db_url, tmp_path / "var")
    for name, value in (("SPINE_DB_URL", migrated_db_url), ("SPINE_DATA_DIR", str(tmp_path / "var")),
                        ("SPINE_BACKEND_URL", backend), ("SPINE_BACKEND_TOKEN", TOKEN),
                        ("SPINE_WORKER", "external"), ("SPINE_WORKERS", "1")):
        monkeypatch.setenv(name, value)
    workspace.clear()
    yield imported
    workspace.clear()


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "models.py"), default_timeout=60)
    at.session_state["user"] = ADMIN
    return at.run()


def button(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type
    return next(b for b in at.button if b.label == label)


def texts(at: AppTest) -> str:
    kinds = ("success", "warning", "error", "info", "caption", "markdown", "text")
    return "\n".join(str(getattr(e, "value", "")) for kind in kinds for e in at.get(kind))


def test_predict_all_is_queued_and_the_page_shows_what_the_worker_writes(
    imported: Imported,
) -> None:
    at = page()
    assert not at.exception, at.exception
    assert "A `spine worker` process runs it." in texts(at)
    button(at, "Predict all 2 studies").click().run()
    assert not at.exception, at.exception
    progress = at.get("progress")
    assert progress and progress[0].proto.text.startswith("waiting for a worker to start it (2 "
                                                          "studies) (started by admin")
    assert button(at, "Predict all 2 studies").disabled
    row = job_rows.get_latest(imported.ws.sessions, job_rows.batch_key())
    assert row is not None and (row.status, row.worker) == ("queued", "")

    worker = subprocess.run([sys.executable, "-m", "spine_cli.main", "worker", "--once"],
                            cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                            timeout=120)
    assert worker.returncode == 0, worker.stderr
    at.run()
    assert not at.exception, at.exception
    assert ("Last batch (started by admin, model bone-threshold 1.0): 2 studies predicted, "
            "0 already predicted") in texts(at)
    assert not button(at, "Predict all 2 studies").disabled


def test_a_queued_batch_stops_at_once(imported: Imported) -> None:
    at = page()
    button(at, "Predict all 2 studies").click().run()
    button(at, "Stop after the current study").click().run()
    at.run()
    assert not at.exception, at.exception
    assert "stopped before a worker took it up" in texts(at)
    job = JOBS.current(imported.ws.settings.database_url, imported.ws.sessions)
    assert job is not None and not job.running
