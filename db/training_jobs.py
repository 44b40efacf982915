"""Training as a job (``kind='train'`` in ``prediction_jobs``): queued by ``spine train --queue``,
run by a ``spine worker`` in a child process, followed from the database.

The row is the job's only state: ``params`` the training's command-line options, ``message`` the
last line the training printed (its stage and iteration), ``fraction`` how far the stage under way
is (from its ``it N/M`` lines), ``problems`` its last lines of output (not the metrics JSON it
prints at its end: that is in the model card it writes), and the end: ``error`` the
line it failed with, or ``stopped`` why it was stopped. One training at a time per database (the
lock key :func:`db.job_rows.train_key`).

The worker runs the command it was given (``spine train``) with the options in a child process
(its own CPU threads and memory, all returned when it ends), beats the job's heartbeat meanwhile,
and ends the child (SIGTERM) when someone asks the job to stop, from any replica, or the worker
stops. A worker that dies takes its child with it (Linux's parent-death signal); its job is then
reaped as failed, with the reason, and can be queued again. A training stopped or failed goes on
from its last checkpoint when queued again with the same options (:func:`queue_again`; the
checkpoints are ``spine train``'s, :mod:`spine_core.inference.checkpoint`); ``--fresh`` among the
options starts it anew.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db import job_queue, job_rows
from db import models as m
from spine_core.errors import ConflictError, NotFound

log = logging.getLogger(__name__)

#: A training's progress line: ``<stage> it 120/2000 loss …`` (spine_core's training loop).
ITERATION = re.compile(r"\bit (\d+)/(\d+)\b")
#: Lines of the training's output kept in the row.
KEEP_LINES = 30
#: A line of the metrics JSON the training prints at its end (kept in its model card instead).
JSON_LINE = re.compile(r'^[{}\[\]"]|^[-\d.eE,\s]+$')
#: Seconds between two progress writes while lines arrive.
SAVE_EVERY_S = 1.0
#: Seconds between two looks at the stop flag and the worker's own stop.
WATCH_S = 0.5


@dataclass(frozen=True)
class TrainingSnapshot(job_rows.RowStatus):
    """A training job as its row has it."""

    job_id: int
    status: str
    owner: str
    params: tuple[str, ...]
    message: str
    fraction: float
    lines: tuple[str, ...]
    error: str
    stopped: str
    started_at: dt.datetime
    finished_at: dt.datetime | None

    def summary(self) -> str:
        """How the training stands, in one line."""
        if self.queued:
            return "waiting for a worker to start it"
        if self.status == job_rows.RUNNING:
            return f"training: {self.message}"
        if self.error:
            return f"the training failed: {self.error}"
        if self.stopped:
            return f"the training was stopped: {self.stopped}"
        return f"the training ended: {self.message}"


def snapshot_of(row: m.PredictionJobRow) -> TrainingSnapshot:
    return TrainingSnapshot(
        job_id=int(row.id), status=row.status, owner=row.owner,
        params=tuple(str(p) for p in row.params or ()), message=row.message,
        fraction=float(row.fraction), lines=tuple(str(p) for p in row.problems),
        error=row.error, stopped=row.stopped, started_at=row.started_at,
        finished_at=row.finished_at)


def current(sessions: sessionmaker[Session]) -> TrainingSnapshot | None:
    """The queued, running or last ended training of this database (one whose worker died is
    found failed, with the reason)."""
    row = job_rows.latest(sessions, job_rows.train_key())
    return None if row is None else snapshot_of(row)


def queue(sessions: sessionmaker[Session], params: Sequence[str], *, actor: str) -> int:
    """Queue a training with these command-line options for a ``spine worker``; its id.

    Raises:
        ConflictError: a training is queued or running (the message says whose).
    """
    return job_queue.enqueue(sessions, kind=job_rows.TRAIN, lock_key=job_rows.train_key(),
                             owner=actor, study_ids=[], params=[str(p) for p in params])


def queue_again(sessions: sessionmaker[Session], job_id: int, *, actor: str) -> int:
    """Queue the ended training ``job_id`` again, with its options (it resumes from its
    checkpoint); the new job's id.

    Raises:
        NotFound: no training ``job_id``.
        ConflictError: that training has not ended, or another is queued or running.
    """
    row = job_rows.get(sessions, job_id)
    if row is None or row.kind != job_rows.TRAIN:
        raise NotFound(f"no training job {job_id}")
    if row.status in job_queue.LIVE:
        raise ConflictError(f"training job {job_id} has not ended: stop it first")
    return queue(sessions, [str(p) for p in row.params or ()], actor=actor)


def stop(sessions: sessionmaker[Session], job_id: int) -> None:
    """Stop the training: a queued one at once, a running one at its worker's next heartbeat."""
    job_queue.cancel(sessions, job_id)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: the child gets SIGTERM when the worker dies (PR_SET_PDEATHSIG), never orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


class TrainingRun:
    """One claimed training job, run to its end by :meth:`run` (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], row: m.PredictionJobRow,
                 command: Sequence[str], *, halt: Callable[[], str] = lambda: "") -> None:
        self.sessions = sessions
        self.job_id = int(row.id)
        self.params = [str(p) for p in row.params or ()]
        self.command = [*command, *self.params]
        self._halt = halt
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._saved_at = 0.0
        self.stopped = ""

    def _save(self, force: bool = True, **values: object) -> None:
        """Write ``values`` into the row (progress is best effort: a failed write is logged)."""
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = now
        try:
            job_rows.save(self.sessions, self.job_id, **values)
        except Exception:  # noqa: BLE001 - the next write catches up
            log.exception("could not save the progress of training %s", self.job_id)

    def _watch(self, child: subprocess.Popen[str]) -> None:
        """End the child when the worker stops, or the job was asked to stop from any replica
        (the heartbeat thread sets ``_stop``)."""
        while not self._ended.wait(WATCH_S):
            why = self._halt() or ("stopped on request" if self._stop.is_set() else "")
            if why and child.poll() is None:
                self.stopped = why
                child.terminate()
                return

    def run(self) -> TrainingSnapshot | None:
        """Run the training to its end, writing its progress and end into the row."""
        lines: list[str] = []
        fraction = 0.0
        error = ""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines as they come, not at exit
        try:
            child = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace",
                                     env=env, preexec_fn=_die_with_parent)
        except OSError as exc:
            child = None
            error = f"the training could not start ({exc.strerror or exc})"
        if child is not None:
            threading.Thread(target=job_rows.keep_beating, name="spine-train-heartbeat",
                             args=(self.sessions, lambda: self.job_id, self._ended, self._stop,
                                   "training"), daemon=True).start()
            threading.Thread(target=self._watch, args=(child,), name="spine-train-watch",
                             daemon=True).start()
            self._save(message="started: " + " ".join(self.params)[:240])
            assert child.stdout is not None
            for raw in child.stdout:
                line = " ".join(raw.split())
                if not line or JSON_LINE.match(line):
                    continue
                lines = [*lines[-(KEEP_LINES - 1):], line[:400]]
                it = ITERATION.search(line)
                if it and int(it.group(2)) > 0:
                    fraction = min(1.0, int(it.group(1)) / int(it.group(2)))
                self._save(force=False, message=line[:256], fraction=fraction, problems=lines)
            code = child.wait()
            if code != 0 and not self.stopped:
                said = next((ln for ln in reversed(lines) if ln.lower().startswith("error")),
                            lines[-1] if lines else "")
                error = f"{said} (exit status {code})" if said else f"exit status {code}"
        self._ended.set()
        status = (job_rows.FAILED if error else job_rows.STOPPED if self.stopped
                  else job_rows.DONE)
        self._save(status=status, finished_at=dt.datetime.now(dt.UTC), error=error[:1000],
                   stopped=self.stopped, problems=lines,
                   message=(lines[-1][:256] if lines and status == job_rows.DONE else status),
                   fraction=1.0 if status == job_rows.DONE else fraction)
        row = job_rows.get(self.sessions, self.job_id)
        return None if row is None else snapshot_of(row)
