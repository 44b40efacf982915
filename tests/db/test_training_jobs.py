"""Training as a job: `spine train --queue` (one process) queues it, a `spine worker` (another)
runs the real training in a child process, and this test's session (a third) follows it from the
row (SQLite and the real PostgreSQL). A training that fails says its line; one asked to stop from
another session stops, saved, and resumes from there when queued again; a worker killed with
SIGKILL takes its training with it and the job is found failed with the reason.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import job_rows, training_jobs
from db import models as m
from db.session import make_engine, make_sessionmaker
from spine_cli.main import _training_options
from spine_core.errors import ConflictError
from tests.backend_helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
#: A training of a few iterations on the smallest phantoms (seconds, not the demo's minutes).
SMALL = ["--train-studies", "2", "--val-studies", "1", "--cal-studies", "0", "--shape", "48x64x64",
         "--threads", "1"]
TINY = [*SMALL, "--seg-iterations", "4", "--frac-iterations", "4", "--box-iterations", "4"]
#: One that would run for hours: stopped or killed long before its end.
LONG = [*SMALL, "--seg-iterations", "100000"]


def env_of(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SPINE_DB_URL": db_url, "SPINE_DATA_DIR": str(tmp_path / "var"),
            "SPINE_WORKER": "external", "SPINE_WORKERS": "1"}


def spine(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "spine_cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout_s: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def sessions_of(db_url: str):  # type: ignore[no-untyped-def]
    return make_sessionmaker(make_engine(db_url))


def the_row(sessions, job_id: int) -> m.PredictionJobRow:  # type: ignore[no-untyped-def]
    row = job_rows.get(sessions, job_id)
    assert row is not None
    return row


def pids_training_into(out: Path) -> list[int]:
    """Live processes whose command line writes into ``out`` (the training child)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(out) in cmd and "train" in cmd:
                found.append(int(proc.name))
    return found


def test_a_queued_training_runs_in_a_worker_and_is_followed_from_the_database(
    migrated_db_url: str, tmp_path: Path,
) -> None:
    env = env_of(migrated_db_url, tmp_path)
    sessions = sessions_of(migrated_db_url)
    # queued from another folder: --out is made absolute there, the worker runs elsewhere
    (tmp_path / "shell").mkdir()
    rc, out, err = finish(spine(env, "train", "--queue", "--actor", "mlops", "--out", "models",
                                *TINY, cwd=tmp_path / "shell"))
    assert rc == 0, err
    snap = training_jobs.current(sessions)
    assert snap is not None and snap.queued and snap.owner == "mlops"
    assert out.strip() == (f"queued training {snap.job_id}; a `spine worker` runs it (follow it "
                           "on the Models page; stop it there)")
    assert list(snap.params) == [*TINY, "--out", str(tmp_path / "shell" / "models")]
    assert snap.summary() == "waiting for a worker to start it"
    with pytest.raises(ConflictError, match="a training queued by mlops is waiting for a worker"):
        training_jobs.queue(sessions, TINY, actor="someone")

    worker = spine(env, "worker", "--once", "--poll-s", "0.2")
    seen: set[str] = set()
    while worker.poll() is None:  # follow it from the row, as the Models page does
        now = training_jobs.current(sessions)
        if now is not None:
            seen.add(now.status)
        time.sleep(0.2)
    rc, out, err = finish(worker)
    assert rc == 0, err
    assert "running" in seen, seen
    snap = training_jobs.current(sessions)
    assert snap is not None
    assert (snap.status, snap.error, snap.stopped, snap.fraction) == ("done", "", "", 1.0)
    output = "\n".join(snap.lines)
    assert "seg it 4/4 loss" in output and "fracture it 4/4 loss" in output, output
    assert snap.message.startswith("wrote ") and str(tmp_path / "shell" / "models") in snap.message
    assert f"job {snap.job_id}: the training ended: " in out
    models = tmp_path / "shell" / "models"
    assert (models / "MODEL_CARD.md").is_file(), sorted(p.name for p in models.iterdir())
    assert the_row(sessions, snap.job_id).finished_at is not None


def test_a_training_that_fails_says_its_line(migrated_db_url: str, tmp_path: Path) -> None:
    env = env_of(migrated_db_url, tmp_path)
    sessions = sessions_of(migrated_db_url)
    # passes the queue's own checks; the training refuses phantoms this small
    job_id = training_jobs.queue(sessions, ["--shape", "32x48x48", "--out", str(tmp_path / "o")],
                                 actor="mlops")
    rc, out, err = finish(spine(env, "worker", "--once", "--poll-s", "0.2"))
    assert rc == 0, err
    row = the_row(sessions, job_id)
    assert row.status == "failed"
    assert row.error.startswith("error: phantom shape (32, 48, 48) is too small"), row.error
    assert row.error.endswith("(exit status 2)"), row.error
    assert f"job {job_id}: the training failed: error: phantom shape" in out


def test_a_bad_option_is_refused_before_anything_is_queued(
    migrated_db_url: str, tmp_path: Path,
) -> None:
    env = env_of(migrated_db_url, tmp_path)
    rc, out, err = finish(spine(env, "train", "--queue", "--shape", "abc"))
    assert rc == 2
    assert err.strip() == "error: --shape must be SLICESxROWSxCOLS with each at least 16, got 'abc'"
    assert training_jobs.current(sessions_of(migrated_db_url)) is None


def test_a_training_asked_to_stop_from_another_session_stops(
    migrated_db_url: str, tmp_path: Path,
) -> None:
    env = env_of(migrated_db_url, tmp_path)
    sessions = sessions_of(migrated_db_url)
    out_dir = tmp_path / "long"
    job_id = training_jobs.queue(sessions, [*LONG, "--out", str(out_dir)], actor="mlops")
    worker = spine(env, "worker", "--once", "--poll-s", "0.2")
    try:
        wait_for(lambda: " it " in the_row(sessions, job_id).message,
                 "the training's first iterations", 240)
        assert pids_training_into(out_dir), "the training runs in a child process"
        training_jobs.stop(sessions, job_id)  # as the Models page's button, from any replica
        rc, out, err = finish(worker, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert rc == 0, err
    row = the_row(sessions, job_id)
    assert (row.status, row.stopped, row.error) == ("stopped", "stopped on request", "")
    assert 0 < row.fraction < 1
    wait_for(lambda: not pids_training_into(out_dir), "the training child to end", 20)
    # the stop let the phase end its step and save it (SIGTERM to `spine train`)
    said = [line for line in row.problems if "stopped after iteration" in line]
    assert said and said[-1].startswith("seg: stopped after iteration "), row.problems[-3:]
    step = int(said[-1].split("iteration ")[1].split(",")[0])
    assert (out_dir / "checkpoint" / "ct" / "seg.pt").is_file()

    # resumed (the Models page's button): the same options, on from the next iteration
    again = training_jobs.queue_again(sessions, job_id, actor="mlops")
    worker = spine(env, "worker", "--once", "--poll-s", "0.2")
    try:
        wait_for(lambda: any("resuming at iteration" in line
                             for line in the_row(sessions, again).problems),
                 "the resumed training's first lines", 240)
        training_jobs.stop(sessions, again)
        finish(worker, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    resumed = [line for line in the_row(sessions, again).problems if "resuming at iteration" in line]
    assert resumed[0].startswith(f"seg: resuming at iteration {step + 1} from the checkpoint")


def test_a_killed_worker_takes_its_training_with_it_and_the_job_is_found_failed(
    migrated_db_url: str, tmp_path: Path,
) -> None:
    env = env_of(migrated_db_url, tmp_path)
    sessions = sessions_of(migrated_db_url)
    out_dir = tmp_path / "killed"
    job_id = training_jobs.queue(sessions, [*LONG, "--out", str(out_dir)], actor="mlops")
    worker = spine(env, "worker", "--poll-s", "0.2")
    try:
        wait_for(lambda: the_row(sessions, job_id).status == "running", "the worker to start it",
                 120)
        wait_for(lambda: bool(pids_training_into(out_dir)), "the training child", 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
    wait_for(lambda: not pids_training_into(out_dir), "the orphaned training to end", 20)
    assert job_rows.reap(sessions, lock_key=job_rows.train_key()) == [job_id]
    row = the_row(sessions, job_id)
    assert row.status == "failed"
    assert row.error.startswith(f"the worker process {worker.pid} on ") and \
        row.error.endswith(" is gone"), row.error
    snap = training_jobs.current(sessions)
    assert snap is not None and snap.summary().startswith("the training failed: ")


@pytest.mark.parametrize("given, options", [
    (["train", "--queue", "--out", "m", "--seed", "3"], ["--seed", "3", "--out", "{cwd}/m"]),
    (["--debug", "train", "--out=m", "--queue", "--actor", "x", "--shape", "48x64x64"],
     ["--shape", "48x64x64", "--out", "{cwd}/m"]),
])
def test_the_options_handed_to_the_worker(given: list[str], options: list[str]) -> None:
    args = argparse.Namespace(argv=given, out="m")
    cwd = str(Path.cwd())
    assert _training_options(args) == [o.replace("{cwd}", cwd) for o in options]
