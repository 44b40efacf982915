"""`spine worker`, and `spine predict` when long jobs run in a worker (``SPINE_WORKER=external``).

``spine worker`` runs the jobs queued in the database (batches, single studies, PACS imports,
trainings: :class:`db.job_worker.JobWorker`) until SIGTERM or Ctrl-C, which end it between two studies;
``spine predict`` then queues its batch for a worker instead of running it, and with ``--wait``
follows its progress from the database.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from spine_core.config import Settings
from spine_core.errors import InputError

if TYPE_CHECKING:
    from db.workspace import Workspace


def _say(line: str) -> None:
    print(line, flush=True)


def add_worker_parser(add: object) -> None:
    """``spine worker [--once] [--poll-s S]`` (``add`` is build_parser's helper)."""
    from db.job_worker import POLL_S

    p = add("worker", cmd_worker,  # type: ignore[operator]
            "Run the long jobs queued in the database ('predict all' batches, single-study "
            "predictions and PACS imports, queued when SPINE_WORKER=external; trainings queued "
            "by `spine train --queue`) outside the app's processes; SIGTERM or Ctrl-C end it "
            "between two studies (the job resumes when run again; a training is stopped).")
    p.add_argument("--once", action="store_true", help="run the jobs queued now, then exit")
    p.add_argument("--poll-s", type=float, default=POLL_S,
                   help=f"seconds between two looks at the queue (default {POLL_S:g})")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from db.job_worker import JobWorker
    from db.workspace import open_workspace
    from spine_core.inference.select import predictor_from_settings
    from spine_core.job_liveness import worker_id

    if not (math.isfinite(args.poll_s) and args.poll_s > 0):
        raise InputError(f"--poll-s must be a number of seconds above 0, got {args.poll_s:g}")
    ws = open_workspace(settings)
    worker = JobWorker(ws, predictor_from_settings(settings), poll_s=args.poll_s, say=_say,
                       train_command=[sys.executable, "-m", "spine_cli.main", "train"])

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        worker.stop(f"the worker was stopped ({signal.Signals(signum).name})")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _say(f"worker {worker_id()}: waiting for jobs" + (" (once)" if args.once else ""))
    ran = worker.run(once=args.once)
    _say(f"worker {worker_id()}: stopped after {ran} job{'s' * (ran != 1)}")
    return 0


def queue_batch(ws: Workspace, study_ids: Sequence[int], *, actor: str, replace: bool,
                wait: bool) -> int:
    """Queue a batch for a ``spine worker``; with ``wait``, print its progress until it ends.
    The exit status: 0, or 3 when studies failed or the batch did not finish."""
    from db import job_queue, job_rows
    from db.prediction_jobs import snapshot_of

    job_id = job_queue.enqueue(ws.sessions, kind=job_rows.BATCH, lock_key=job_rows.batch_key(),
                               owner=actor, study_ids=study_ids, replace=replace)
    _say(f"queued prediction batch {job_id} ({len(study_ids)} studies); a `spine worker` runs it")
    if not wait:
        return 0
    last = ""
    while True:
        job_rows.reap(ws.sessions, lock_key=job_rows.batch_key())
        row = job_rows.get(ws.sessions, job_id)
        if row is None:
            raise InputError(f"prediction batch {job_id} is gone from the database")
        snap = snapshot_of(row)
        if snap.summary() != last:
            last = snap.summary()
            _say(last)
        if not snap.running:
            break
        time.sleep(0.5)
    for problem in snap.problems:
        print(f"failed {problem}", file=sys.stderr)
    return 0 if not (snap.error or snap.problems or snap.stopped) else 3


def queue_training(ws: Workspace, params: Sequence[str], *, actor: str) -> int:
    """Queue a training with these ``spine train`` options for a ``spine worker``."""
    from db.training_jobs import queue

    job_id = queue(ws.sessions, params, actor=actor)
    _say(f"queued training {job_id}; a `spine worker` runs it (follow it on the Models page; "
         f"stop it there)")
    return 0
