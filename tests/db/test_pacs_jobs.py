"""Import from the PACS as a job (db.pacs_jobs): a real Orthanc behind the fault-injecting proxy,
real `spine worker` processes, SQLite and the real PostgreSQL (nothing mocked).

A PACS import queued by the app (``SPINE_WORKER=external``) is run by a `spine worker` process:
its progress is in the row while it runs, the study the PACS breaks is named in one line and the
other imported; a second import is refused while one is queued or running, naming who imports. A
worker killed halfway leaves a row found failed with the reason; a retry finishes it, doubling
nothing. With ``SPINE_WORKER=thread`` the app runs the import in a thread of its own, and a stop
asked between two studies ends it there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import job_rows, pacs_jobs
from db import models as m
from db.session import unit_of_work
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import ConflictError
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.backend_helpers import wait_for
from tests.spine_core.io.fault_proxy import FaultProxy, fault_proxy
from tests.spine_core.io.orthanc_server import PASSWORD, USER, Orthanc, orthanc  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (48, 64, 64)
pytestmark = pytest.mark.xdist_group("orthanc")


@pytest.fixture(scope="module")
def studies(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:  # noqa: F811
    out = tmp_path_factory.mktemp("pacs-jobs-phantom")
    write_rsna_dataset(out, 2, 53, shape=SHAPE, workers=1)
    return sorted((out / "train_images").iterdir())


@pytest.fixture()
def pacs(orthanc: Orthanc, studies: list[Path]) -> Iterator[tuple[FaultProxy, str, str]]:  # noqa: F811
    """The two studies on Orthanc behind a fault proxy; (proxy, the one to break, the other)."""
    orthanc.clear()
    orthanc.upload(sorted(f for s in studies for f in s.rglob("*.dcm")))
    with fault_proxy(orthanc.base, orthanc.auth) as proxy:
        yield proxy, studies[0].name, studies[1].name


def _settings(data: Path, proxy: FaultProxy, db_url: str = "", **more: object) -> Settings:
    return Settings(data_dir=data, db_url=db_url, workers=1, dicomweb_url=proxy.dicomweb,
                    dicomweb_user=USER, dicomweb_password=PASSWORD, **more)  # type: ignore[arg-type]


def _worker_env(settings: Settings, timeout_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    return {**env, "SPINE_DB_URL": settings.database_url, "SPINE_DATA_DIR": str(settings.data_dir),
            "SPINE_WORKER": "external", "SPINE_WORKERS": "1",
            "SPINE_DICOMWEB_URL": settings.dicomweb_url, "SPINE_DICOMWEB_USER": USER,
            "SPINE_DICOMWEB_PASSWORD": PASSWORD, "SPINE_DICOMWEB_TIMEOUT_S": str(timeout_s)}


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "spine_cli.main", "worker", "--poll-s", "0.2",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _row(ws: Workspace, job_id: int) -> m.PredictionJobRow:
    row = job_rows.get(ws.sessions, job_id)
    assert row is not None
    return row


def _counts(ws: Workspace) -> tuple[list[str], int]:
    """The imported study UIDs and the number of series rows."""
    with unit_of_work(ws.sessions, readonly=True) as s:
        uids = sorted(s.scalars(select(m.Study.study_uid)))
        series = int(s.scalar(select(func.count()).select_from(m.Series)) or 0)
    return uids, series


def test_a_worker_imports_two_studies_naming_the_broken_one_with_progress_in_the_row(
        pacs: tuple[FaultProxy, str, str], migrated_db_url: str, tmp_path: Path) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "series", "hang")  # the first study hangs: the row shows it under way
    settings = _settings(tmp_path / "var", proxy, migrated_db_url, worker="external")
    ws = open_workspace(settings)
    job_id = pacs_jobs.submit(ws, [bad, good], actor="alice")
    queued = _row(ws, job_id)
    assert (queued.kind, queued.status, queued.worker, queued.total) == ("pacs", "queued", "", 2)
    assert queued.study_ids == [bad, good]
    with pytest.raises(ConflictError, match="a PACS import started by alice is waiting for a "
                                            "worker; wait for it to finish or stop it first"):
        pacs_jobs.submit(ws, [good], actor="bob")

    worker = _worker(_worker_env(settings, 3.0), "--once")
    try:
        wait_for(lambda: _row(ws, job_id).message.startswith(f"study 1 of 2, {bad}"),
                 "the worker to start on the first study", 60)
        running = _row(ws, job_id)
        assert running.status == "running" and running.worker.split(":")[1] == str(worker.pid)
        assert running.done == 0 and running.problems == []
        thread_ws = Workspace(settings.with_overrides(worker="thread"))
        with pytest.raises(ConflictError, match=r"a PACS import started by alice is running "
                                                r"\(0 of 2 studies done\)"):
            pacs_jobs.submit(thread_ws, [good], actor="bob")
        out, err = worker.communicate(timeout=180)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert f"job {job_id}: importing 2 studies from the PACS for alice" in out
    assert f"job {job_id}: 1 studies imported, 0 already imported, 1 failed" in out
    row = _row(ws, job_id)
    assert (row.status, row.done, row.predicted, row.failures, row.error) == ("done", 2, 1, 1, "")
    failed, imported = row.problems
    assert failed.startswith(f"failed study {bad}") and "did not answer within 3 s" in failed
    assert "\n" not in failed and "Traceback" not in failed and PASSWORD not in failed
    assert imported == f"imported study {good} ({SHAPE[0]} instances)"
    assert _counts(ws) == ([good], 1)
    snap = pacs_jobs.current(ws.sessions)
    assert snap is not None and not snap.running and snap.lines == (failed, imported)


def test_a_killed_worker_s_import_fails_with_the_reason_and_a_retry_doubles_nothing(
        pacs: tuple[FaultProxy, str, str], migrated_db_url: str, tmp_path: Path) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "series", "hang")  # the second study hangs: the worker dies on it
    settings = _settings(tmp_path / "var", proxy, migrated_db_url, worker="external")
    ws = open_workspace(settings)
    env = _worker_env(settings, 60.0)
    job_id = pacs_jobs.submit(ws, [good, bad], actor="alice")
    worker = _worker(env)
    try:
        wait_for(lambda: _row(ws, job_id).message.startswith(f"study 2 of 2, {bad}"),
                 "the first study to be imported and the second to start", 120)
        assert _row(ws, job_id).done == 1
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=60)
    snap = pacs_jobs.current(ws.sessions)  # reaps: the worker's process is gone
    assert snap is not None and snap.job_id == job_id and snap.status == "failed"
    assert snap.error.startswith(f"the worker process {worker.pid} on ")
    assert snap.error.endswith("is gone")
    assert snap.lines == (f"imported study {good} ({SHAPE[0]} instances)",)

    proxy.rules = []
    again = pacs_jobs.retry(ws, actor="bob")
    rc = subprocess.run([sys.executable, "-m", "spine_cli.main", "worker", "--once", "--poll-s",
                         "0.2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert rc.returncode == 0, rc.stderr
    row = _row(ws, again)
    assert (row.status, row.retry_of, row.owner, row.predicted, row.skipped) == (
        "done", job_id, "bob", 1, 1)
    assert row.problems == [f"study {good} was already imported",
                            f"imported study {bad} ({SHAPE[0]} instances)"]
    assert _counts(ws) == (sorted([bad, good]), 2)  # each study and series once
    pacs_dir = settings.data_dir / "pacs"
    assert sorted(p.name for p in pacs_dir.iterdir() if p.name != ".partial") == sorted([bad, good])
    assert len(list(pacs_dir.glob(f"{good}/**/*.dcm"))) == SHAPE[0]


def test_thread_mode_imports_in_the_app_process_on_sqlite(pacs: tuple[FaultProxy, str, str],
                                                          tmp_path: Path) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "wado", 500)
    ws = open_workspace(_settings(tmp_path / "var", proxy))
    assert ws.settings.database_url.startswith("sqlite") and not ws.settings.external_worker
    job_id = pacs_jobs.submit(ws, [good, bad], actor="carol")
    row = _row(ws, job_id)
    assert row.status in ("running", "done") and row.worker.split(":")[1] == str(os.getpid())
    wait_for(lambda: not _row(ws, job_id).status == "running", "the import to end", 120)
    row = _row(ws, job_id)
    assert (row.status, row.done, row.predicted, row.failures) == ("done", 2, 1, 1)
    assert row.problems[0] == f"imported study {good} ({SHAPE[0]} instances)"
    assert row.problems[1].startswith(f"failed study {bad}") and "HTTP 500" in row.problems[1]
    assert _counts(ws) == ([good], 1)


def test_a_stop_ends_the_import_between_two_studies(pacs: tuple[FaultProxy, str, str],
                                                    tmp_path: Path) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "series", "hang")
    ws = open_workspace(_settings(tmp_path / "var", proxy, dicomweb_timeout_s=2.0))
    job_id = pacs_jobs.submit(ws, [bad, good], actor="carol")
    wait_for(lambda: _row(ws, job_id).message.startswith(f"study 1 of 2, {bad}"),
             "the first study to start", 60)
    pacs_jobs.stop(ws, job_id)
    deadline = time.monotonic() + 60
    while _row(ws, job_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    row = _row(ws, job_id)
    assert (row.status, row.done) == ("stopped", 1)
    assert row.stopped == "stopped on request; run the import again to resume"
    assert _counts(ws) == ([], 0)  # the second study was not started
