"""Long jobs outside the app's processes: batches queued in the database, run by `spine worker`
processes (SQLite and the real PostgreSQL; real processes, a real HTTP backend on loopback).

`spine predict` (one process) queues a batch, a `spine worker` (another) runs it against the
backend, and this test's session (a third) reads its progress and end from the row; two workers
racing claim each job once; a worker killed with SIGKILL leaves a row that is found failed with
the reason and runs again; SIGTERM ends a worker between two studies. A single study asked for
on a page is queued for the worker too, not predicted in the page's process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import job_queue, job_rows
from db import models as m
from db.prediction_jobs import JobBoard, StoredJob
from db.prediction_runs import RunBoard, StoredRun
from db.session import make_sessionmaker, unit_of_work
from db.workspace import Workspace
from spine_core.errors import ConflictError
from spine_core.inference.protocol import Progress, StudyPrediction
from spine_core.inference.server import create_app
from spine_core.volume import Volume
from tests.backend_helpers import TOKEN, BoneThresholdPredictor, running_server, wait_for
from tests.prediction_helpers import Imported, import_dataset, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]


class SteppedPredictor(BoneThresholdPredictor):
    """Predicts one study per :meth:`allow` (the test decides when each study may end)."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.started = 0
        self._permits = threading.Semaphore(0)

    def allow(self, studies: int = 1) -> None:
        self._permits.release(studies)

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        self.started += 1
        if not self._permits.acquire(timeout=60):
            raise RuntimeError("the test never let this study through")
        return super().predict(volume, progress)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=2)


@pytest.fixture
def imported(dataset: Path, migrated_db_url: str, tmp_path: Path) -> Imported:
    return import_dataset(dataset, migrated_db_url, tmp_path / "var")


@pytest.fixture
def stepped() -> SteppedPredictor:
    return SteppedPredictor()


@pytest.fixture
def backend(stepped: SteppedPredictor) -> Iterator[str]:
    app = create_app(lambda device: stepped, token=TOKEN, device="cpu", queue_wait_s=30)
    with running_server(app) as url:
        yield url


def spine_env(imported: Imported, backend: str) -> dict[str, str]:
    s = imported.ws.settings
    return {**os.environ, "SPINE_DB_URL": s.database_url, "SPINE_DATA_DIR": str(s.data_dir),
            "SPINE_BACKEND_URL": backend, "SPINE_BACKEND_TOKEN": TOKEN, "SPINE_WORKER": "external",
            "SPINE_WORKERS": "1"}


def spine(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "spine_cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout_s: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def row_of(imported: Imported, job_id: int | None) -> m.PredictionJobRow:
    assert job_id is not None
    row = job_rows.get(imported.ws.sessions, job_id)
    assert row is not None
    return row


def only_job_id(imported: Imported) -> int:
    row = job_rows.get_latest(imported.ws.sessions, job_rows.batch_key())
    assert row is not None
    return int(row.id)


def predictions(imported: Imported) -> int:
    with unit_of_work(imported.ws.sessions, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(m.Prediction)) or 0)


def test_a_batch_queued_by_the_cli_runs_in_a_worker_and_is_followed_from_the_database(
    imported: Imported, backend: str, stepped: SteppedPredictor,
) -> None:
    env = spine_env(imported, backend)
    follower = spine(env, "predict", "--actor", "carol", "--wait")  # queues, then follows
    wait_for(lambda: job_rows.get_latest(imported.ws.sessions, job_rows.batch_key()) is not None,
             "the CLI to queue the batch", timeout_s=60)
    job_id = only_job_id(imported)
    queued = JobBoard().current(imported.ws.settings.database_url, imported.ws.sessions)
    assert isinstance(queued, StoredJob) and queued.running  # not over, but nobody runs it
    assert queued.snapshot().queued and "waiting for a worker" in queued.snapshot().summary()
    assert (row_of(imported, job_id).status, row_of(imported, job_id).worker) == ("queued", "")

    worker = spine(env, "worker", "--once", "--poll-s", "0.2")
    try:
        wait_for(lambda: stepped.started == 1, "the worker to send the first study", 60)
        row = row_of(imported, job_id)
        assert row.status == "running" and row.worker.split(":")[1] == str(worker.pid)
        assert (row.owner, row.total, row.done) == ("carol", 2, 0)
        stepped.allow()  # the first study ends; the second waits: progress is in the row
        wait_for(lambda: row_of(imported, job_id).done == 1, "the progress of study 1", 60)
        assert row_of(imported, job_id).status == "running" and predictions(imported) == 1
    finally:
        stepped.allow(2)
    rc, out, err = finish(worker)
    assert rc == 0, err
    assert f"job {job_id}: 2 studies predicted, 0 already predicted" in out
    assert out.strip().splitlines()[-1].endswith("stopped after 1 job")
    row = row_of(imported, job_id)
    assert (row.status, row.done, row.predicted, row.error) == ("done", 2, 2, "")
    assert row.finished_at is not None and row.model == "bone-threshold 1.0"
    assert predictions(imported) == 2
    rc, out, err = finish(follower)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"queued prediction batch {job_id} (2 studies); a `spine worker` runs it"
    assert lines[-1] == "2 studies predicted, 0 already predicted"


def test_a_single_study_asked_for_in_external_mode_is_predicted_by_the_worker(
    imported: Imported, backend: str, stepped: SteppedPredictor,
) -> None:
    env = spine_env(imported, backend)
    url = imported.ws.settings.database_url
    ws = Workspace(imported.ws.settings.with_overrides(worker="external"))
    study = imported.study_ids[0]
    board = RunBoard()  # this test process plays the page's replica
    queued = board.submit(url, ws, BoneThresholdPredictor(), study, actor="alice")
    assert isinstance(queued, StoredRun) and queued.running
    assert queued.snapshot().message == "waiting for a worker" and stepped.started == 0
    with pytest.raises(ConflictError, match="alice already asked for this study's prediction"):
        board.submit(url, ws, BoneThresholdPredictor(), study, actor="bob")
    stepped.allow(1)
    rc, out, err = finish(spine(env, "worker", "--once", "--poll-s", "0.2"))
    assert rc == 0, err
    assert f"job {queued.job_id}: predicting study {study} for alice" in out
    assert f"job {queued.job_id}: prediction stored" in out
    assert queued.wait(30)
    snap = queued.snapshot()
    assert snap.succeeded and snap.prediction_id is not None and stepped.started == 1
    row = row_of(imported, queued.job_id)
    assert (row.kind, row.status, row.study_id) == ("study", "done", study)
    assert row.worker.split(":")[1] != str(os.getpid()) and predictions(imported) == 1
    again = board.current(url, study, ws.sessions)
    assert again is not None and again.snapshot().prediction_id == snap.prediction_id


def test_two_workers_racing_for_one_batch_run_it_once(imported: Imported, backend: str,
                                                      stepped: SteppedPredictor) -> None:
    env = spine_env(imported, backend)
    job_id = job_queue.enqueue(imported.ws.sessions, kind="batch", lock_key="batch", owner="dan",
                               study_ids=imported.study_ids)
    stepped.allow(4)  # enough for both, were both to run it
    workers = [spine(env, "worker", "--once", "--poll-s", "0.1") for _ in range(2)]
    outs = [finish(w) for w in workers]
    assert [rc for rc, _, _ in outs] == [0, 0], [err for _, _, err in outs]
    ran = [out for _, out, _ in outs if f"job {job_id}: predicting 2 studies for dan" in out]
    assert len(ran) == 1, outs
    assert sorted(out.strip().splitlines()[-1][-len("1 job"):] for _, out, _ in outs) == [
        " jobs", "1 job"]  # "stopped after 0 jobs" / "stopped after 1 job"
    assert stepped.started == 2 and predictions(imported) == 2
    assert row_of(imported, job_id).status == "done"


def test_racing_claimers_take_each_queued_job_once(migrated_db_url: str) -> None:
    sessions = make_sessionmaker(migrated_db_url)
    ids = [job_queue.enqueue(sessions, kind="batch", lock_key=f"race:{i}", owner="t",
                             study_ids=[i]) for i in range(40)]
    racers = [subprocess.Popen([sys.executable, "-m", "tests.db.job_claim_child",
                                migrated_db_url], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    claimed = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        claimed.append(json.loads(out.strip().splitlines()[-1]))
    every = [job_id for got in claimed for job_id in got]
    assert sorted(every) == sorted(ids)  # each job once: none twice, none left behind
    with unit_of_work(sessions, readonly=True) as s:
        workers = dict(s.execute(select(m.PredictionJobRow.id, m.PredictionJobRow.worker)).all())
    for racer, got in zip(racers, claimed, strict=True):
        assert all(workers[job_id].split(":")[1] == str(racer.pid) for job_id in got)
    assert job_queue.claim_next(sessions) is None
    sessions.kw["bind"].dispose()


def test_a_killed_worker_s_batch_is_failed_with_the_reason_and_retried(
    imported: Imported, backend: str, stepped: SteppedPredictor,
) -> None:
    env = spine_env(imported, backend)
    url = imported.ws.settings.database_url
    ws = Workspace(imported.ws.settings.with_overrides(worker="external"))
    board = JobBoard()  # this test process plays the app replica
    queued = board.submit(url, ws, BoneThresholdPredictor(), imported.study_ids, actor="alice")
    assert isinstance(queued, StoredJob) and queued.snapshot().queued
    worker = spine(env, "worker", "--poll-s", "0.2")
    try:
        wait_for(lambda: stepped.started == 1, "the worker to send the first study", 60)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        finish(worker)
    stepped.allow(1)  # the backend ends the dead worker's request; nobody stores it
    dead = board.current(url, ws.sessions)
    assert dead is not None and not dead.running and dead.job_id == queued.job_id
    assert dead.snapshot().error.startswith(f"the worker process {worker.pid} on ")
    assert dead.snapshot().error.endswith("is gone")
    assert row_of(imported, queued.job_id).status == "failed"

    again = board.retry(url, ws, BoneThresholdPredictor(), actor="bob")
    assert isinstance(again, StoredJob) and again.snapshot().queued
    stepped.allow(2)
    rc, out, err = finish(spine(env, "worker", "--once", "--poll-s", "0.2"))
    assert rc == 0, err
    assert again.wait(30)
    row = row_of(imported, again.job_id)
    assert (row.status, row.predicted, row.retry_of, row.owner) == ("done", 2, dead.job_id, "bob")
    assert predictions(imported) == 2


def test_sigterm_ends_a_worker_between_two_studies_and_the_batch_resumes(
    imported: Imported, backend: str, stepped: SteppedPredictor,
) -> None:
    env = spine_env(imported, backend)
    url = imported.ws.settings.database_url
    ws = Workspace(imported.ws.settings.with_overrides(worker="external"))
    board = JobBoard()
    queued = board.submit(url, ws, BoneThresholdPredictor(), imported.study_ids, actor="alice")
    worker = spine(env, "worker", "--poll-s", "0.2")
    try:
        wait_for(lambda: stepped.started == 1, "the worker to send the first study", 60)
        worker.send_signal(signal.SIGTERM)
        # the worker's idle main thread runs its handler at once (a flag, nothing to observe
        # from here); only then may the study under way end: stored, and the next not started
        time.sleep(0.5)
        stepped.allow(1)
        rc, out, err = finish(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert rc == 0, err
    assert out.strip().splitlines()[-1].endswith("stopped after 1 job")
    row = row_of(imported, queued.job_id)
    assert (row.status, row.done, row.predicted) == ("stopped", 1, 1)
    assert row.stopped == "the worker was stopped (SIGTERM); run the batch again to resume"
    assert stepped.started == 1 and predictions(imported) == 1

    again = board.retry(url, ws, BoneThresholdPredictor(), actor="alice")
    stepped.allow(1)
    rc, _, err = finish(spine(env, "worker", "--once", "--poll-s", "0.2"))
    assert rc == 0, err
    row = row_of(imported, again.job_id)
    assert (row.status, row.predicted, row.skipped) == ("done", 1, 1)


def test_a_second_batch_is_refused_while_one_waits_and_a_queued_one_stops_at_once(
    migrated_db_url: str,
) -> None:
    sessions = make_sessionmaker(migrated_db_url)
    first = job_queue.enqueue(sessions, kind="batch", lock_key="batch", owner="erin",
                              study_ids=[1, 2])
    with pytest.raises(ConflictError, match="started by erin is waiting for a worker"):
        job_queue.enqueue(sessions, kind="batch", lock_key="batch", owner="fay", study_ids=[1])
    job_queue.cancel(sessions, first)
    row = job_rows.get(sessions, first)
    assert row is not None and (row.status, row.stopped) == (
        "stopped", "stopped before a worker took it up")
    assert job_queue.claim_next(sessions) is None
    job_queue.enqueue(sessions, kind="batch", lock_key="batch", owner="fay", study_ids=[1])
    sessions.kw["bind"].dispose()


def test_bad_worker_settings_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SPINE_DATA_DIR": str(tmp_path / "var")}
    env.pop("SPINE_DB_URL", None)
    rc, out, err = finish(spine(env, "worker", "--poll-s", "0"))
    assert (rc, err) == (2, "error: --poll-s must be a number of seconds above 0, got 0\n")
    rc, out, err = finish(spine({**env, "SPINE_WORKER": "ray"}, "worker", "--once"))
    assert (rc, err) == (2, "error: bad SPINE_* environment variable: SPINE_WORKER must be "
                            "thread or external, not 'ray'\n")
    rc, out, err = finish(spine(env, "predict", "--wait"))
    assert rc == 2 and err.startswith("error: --wait follows a batch queued for `spine worker`")
    assert len(err.splitlines()) == 1


def test_a_worker_whose_queue_breaks_says_so_in_one_line_and_goes_on(
    migrated_db_url: str, tmp_path: Path,
) -> None:
    env = {**os.environ, "SPINE_DB_URL": migrated_db_url, "SPINE_DATA_DIR": str(tmp_path / "var"),
           "SPINE_WORKER": "external"}
    worker = spine(env, "worker", "--poll-s", "0.1")
    try:
        assert worker.stdout is not None
        assert "waiting for jobs" in worker.stdout.readline()
        engine = make_sessionmaker(migrated_db_url).kw["bind"]
        with engine.begin() as conn:  # the job table goes away under the running worker
            conn.exec_driver_sql("DROP TABLE prediction_jobs")
        engine.dispose()
        line = worker.stdout.readline()
        assert line.startswith(("cannot use the database (", "the database refused the job queue ("))
        assert "prediction_jobs" in line and line.rstrip().endswith("looking again in 0.1 s")
        worker.send_signal(signal.SIGTERM)
        rc, out, err = finish(worker, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert rc == 0 and "Traceback" not in err + out, err
    assert out.strip().splitlines()[-1].endswith("stopped after 0 jobs")
