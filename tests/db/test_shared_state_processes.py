"""Shared state across real processes on one database (SQLite and the real PostgreSQL): what one
app replica writes, another sees, and a restarted one still knows.

Each "replica" is a separate Python process (tests/db/shared_state_child.py) that opens the
database by URL: a token issued in one signs in through another's cookie route and in a third
started afterwards (a restart), a ticket is redeemed once among all of them, failed sign-ins in
two replicas add up, a batch running in one replica blocks another's and, once its process is
killed, is found failed with the reason and runs again from the survivor; a replica that does not
run a batch reads its progress from the row and stops it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from db import job_rows, users
from db import models as m
from db.prediction_jobs import JobBoard, PredictionJob, StoredJob
from db.session import make_sessionmaker, unit_of_work
from spine_core import job_liveness
from spine_core.errors import ConflictError
from tests.backend_helpers import BoneThresholdPredictor, GatedPredictor, wait_for
from tests.prediction_helpers import Imported, import_dataset, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.db.shared_state_child"


def replica(url: str, *args: str) -> dict[str, Any]:
    """Run one action in a fresh Python process; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", CHILD, url, *args], cwd=ROOT, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_tokens_and_tickets_work_across_replicas_and_a_restart(migrated_db_url: str) -> None:
    sessions = make_sessionmaker(migrated_db_url)
    with unit_of_work(sessions) as s:
        uid = int(users.create_user(s, "reader1", "pass-word-1", "annotator", actor="test").id)
    sessions.kw["bind"].dispose()

    issued = replica(migrated_db_url, "issue", str(uid))  # replica A signs the reader in
    # two replicas race to redeem the one ticket through the real cookie route: one wins
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: replica(migrated_db_url, "redeem", issued["ticket"]),
                                range(2)))
    assert sorted(a["status"] for a in answers) == [204, 403]
    assert [a["cookie"] for a in answers if a["status"] == 204] == [issued["token"]]
    # every process started afterwards (a restart) still knows the cookie's token
    assert replica(migrated_db_url, "resolve", issued["token"]) == {"user_id": uid}
    assert replica(migrated_db_url, "resolve", "forged-token") == {"user_id": None}
    # signing out in one replica signs out everywhere
    replica(migrated_db_url, "revoke", issued["token"])
    assert replica(migrated_db_url, "resolve", issued["token"]) == {"user_id": None}


def test_failed_sign_ins_in_two_replicas_add_up(migrated_db_url: str) -> None:
    keys = ("user:alice", "client:10.1.2.3")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: replica(migrated_db_url, "fail", "5", *keys), range(2)))
    assert replica(migrated_db_url, "failures", "user:alice") == {"failures": 10}
    assert replica(migrated_db_url, "failures", "client:10.1.2.3") == {"failures": 10}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=2)


@pytest.fixture
def imported(dataset: Path, migrated_db_url: str, tmp_path: Path) -> Imported:
    return import_dataset(dataset, migrated_db_url, tmp_path / "var")


def test_a_batch_of_a_killed_replica_is_failed_with_the_reason_and_retried(
    imported: Imported, migrated_db_url: str, tmp_path: Path,
) -> None:
    url = migrated_db_url
    child = subprocess.Popen(
        [sys.executable, "-m", CHILD, url, "hang-batch", str(tmp_path / "var-a"),
         *map(str, imported.study_ids)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        first = json.loads(child.stdout.readline())
        assert first.get("started") or "job_id" in first, first
        board = JobBoard()  # this test process is replica B
        seen = board.current(url, imported.ws.sessions)
        assert seen is not None and seen.running and seen.snapshot().started_by == "replica-a"
        with pytest.raises(ConflictError, match="started by replica-a is running"):
            board.start(url, PredictionJob(imported.ws, BoneThresholdPredictor(),
                                           imported.study_ids, actor="bob"))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    dead = board.current(url, imported.ws.sessions)
    assert dead is not None and not dead.running
    assert f"the worker process {child.pid} on " in dead.snapshot().error
    assert dead.snapshot().error.endswith("is gone")
    again = board.retry(url, imported.ws, BoneThresholdPredictor(), actor="bob")
    assert again.wait(60)
    assert (again.snapshot().predicted, again.snapshot().error) == (len(imported.study_ids), "")
    row = job_rows.get(imported.ws.sessions, int(again.job_id or 0))
    assert row is not None and row.status == "done" and row.retry_of == dead.job_id
    assert row.done == len(imported.study_ids) and row.owner == "bob"


def test_a_silent_worker_on_another_machine_is_found_dead(migrated_db_url: str) -> None:
    sessions = make_sessionmaker(migrated_db_url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=95)
    with unit_of_work(sessions) as s:
        s.add(m.PredictionJobRow(kind="batch", lock_key="batch", study_ids=[1], status="running",
                                 total=1, owner="carol", started_at=old, heartbeat_at=old,
                                 worker="other-machine:4242:abcd"))
        s.add(m.PredictionJobRow(kind="study", lock_key="study:9", study_ids=[], status="running",
                                 owner="dan", worker="other-machine:4243:abcd"))  # beats now
    reaped = job_rows.reap(sessions)
    assert len(reaped) == 1
    row = job_rows.get(sessions, reaped[0])
    assert row is not None and row.status == "failed" and row.error_kind == "worker"
    assert row.error.startswith("the worker other-machine:4242 stopped answering (no heartbeat")
    fresh = job_rows.get_latest(sessions, "study:9")
    assert fresh is not None and fresh.status == "running"
    sessions.kw["bind"].dispose()


def test_another_replica_sees_the_progress_and_stops_the_batch(
    imported: Imported, migrated_db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replica B (a second board: it holds no thread of the batch) reads the progress from the
    row and asks to stop; replica A's worker hears it through its heartbeat."""
    monkeypatch.setattr(job_liveness, "HEARTBEAT_S", 0.05)
    gate = threading.Event()
    a, b = JobBoard(), JobBoard()
    url = migrated_db_url
    job = a.start(url, PredictionJob(imported.ws, GatedPredictor(gate), imported.study_ids,
                                     actor="alice"))
    try:
        wait_for(lambda: job.predictor.started == 1, "the first study to start")
        seen = b.current(url, imported.ws.sessions)
        assert isinstance(seen, StoredJob) and seen.running
        assert (seen.snapshot().started_by, seen.snapshot().total) == ("alice", 2)
        seen.cancel()
        wait_for(job._stop.is_set, "the stop to reach replica A", timeout_s=10)
    finally:
        gate.set()
    assert job.wait(30) and seen.wait(30)
    snap = seen.snapshot()
    assert (snap.done, snap.predicted, snap.stopped) == (1, 1, "stopped on request")
    row = job_rows.get(imported.ws.sessions, int(job.job_id or 0))
    assert row is not None and row.status == "stopped" and row.finished_at is not None
