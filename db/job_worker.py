"""A ``spine worker`` process: runs the jobs queued in the database, outside the app's processes.

:class:`JobWorker` polls the ``prediction_jobs`` table: each poll reaps running jobs whose worker
died (:func:`db.job_rows.reap`: failed, with the reason, so they can be retried) and claims the
oldest queued job (:func:`db.job_queue.claim_next`: two workers never take one job). It runs the
job by its kind: a batch as a :class:`~db.prediction_jobs.PredictionJob`, a single study as a
:class:`~db.prediction_runs.StudyPredictionRun`, a PACS import as a
:class:`~db.pacs_jobs.PacsImportJob`, a training (when the worker was given the command that
trains) as a :class:`~db.training_jobs.TrainingRun`, each of its claimed row, writing the
progress, beating the heartbeat and writing the end or the error into the row; pages read them
from there. :meth:`JobWorker.stop` (the CLI calls it on SIGTERM or Ctrl-C) ends the worker between
two studies (a training at once): the job is stopped with the reason and resumes when run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from db import job_queue, job_rows
from db.db_errors import database_refusal, database_said, is_connection_error
from db.pacs_jobs import PacsImportJob, snapshot_of
from db.prediction_jobs import PredictionJob
from db.prediction_runs import StudyPredictionRun
from db.training_jobs import TrainingRun
from db.workspace import Workspace
from spine_core.inference.protocol import Predictor

log = logging.getLogger(__name__)

#: Default seconds between two looks at the queue.
POLL_S = 2.0
#: The kinds of job a worker runs.
KINDS = (job_rows.BATCH, job_rows.STUDY, job_rows.PACS)
#: Seconds between two looks at the stop flag while the worker is idle.
WAKE_S = 0.2


def _one_line(exc: Exception) -> str:
    """What went wrong with the queue, in one line (no SQL, no traceback)."""
    if isinstance(exc, SQLAlchemyError) and is_connection_error(exc):
        return f"cannot use the database ({database_said(exc)})"
    if isinstance(exc, SQLAlchemyError):
        return database_refusal(exc, "the job queue")
    text = str(exc).strip().splitlines()
    return f"the job queue failed ({type(exc).__name__}: {text[0] if text else ''})"


class JobWorker:
    """Claims and runs queued jobs, one at a time (see the module docstring)."""

    def __init__(self, ws: Workspace, predictor: Predictor, *, poll_s: float = POLL_S,
                 say: Callable[[str], None] = lambda line: None,
                 train_command: Sequence[str] | None = None) -> None:
        """``train_command``: the command line that trains (``spine train``), the job's options
        appended; without it this worker leaves training jobs to another."""
        self.ws = ws
        self.predictor = predictor
        self.poll_s = poll_s
        self.say = say
        self.train_command = list(train_command) if train_command else None
        self.kinds = (*KINDS, job_rows.TRAIN) if self.train_command else KINDS
        self._reason = ""
        self._stopping = False

    def stop(self, reason: str = "the worker was stopped") -> None:
        """End after the study being predicted now. Takes no lock: safe in a signal handler,
        whatever the interrupted thread holds."""
        self._reason = self._reason or reason
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _halt(self) -> str:
        """Why the batch under way must stop after its current study ("" while it goes on)."""
        return f"{self._reason}; run the batch again to resume" if self._stopping else ""

    def _halt_import(self) -> str:
        return f"{self._reason}; run the import again to resume" if self._stopping else ""

    def _halt_training(self) -> str:
        return f"{self._reason}; queue it again to resume from its checkpoint" if self._stopping else ""

    def run_once(self) -> str | None:
        """Reap dead workers' jobs, then claim and run one queued job to its end; the line that
        says how it ended, or None when none was waiting."""
        if self.stopping:
            return None
        for job_id in job_rows.reap(self.ws.sessions):
            self.say(f"job {job_id}: its worker is gone; marked failed")
        row = job_queue.claim_next(self.ws.sessions, kinds=self.kinds)
        if row is None:
            return None
        if row.kind == job_rows.TRAIN and self.train_command:
            self.say(f"job {row.id}: training for {row.owner}: {' '.join(row.params or [])}")
            trained = TrainingRun(self.ws.sessions, row, self.train_command,
                                  halt=self._halt_training).run()
            summary = trained.summary() if trained is not None else "gone"
        elif row.kind == job_rows.PACS:
            pacs = PacsImportJob.of_claimed(self.ws, row, halt=self._halt_import)
            self.say(f"job {row.id}: importing {len(pacs.study_uids)} studies from the PACS "
                     f"for {row.owner}")
            pacs.start().wait()
            ended = job_rows.get(self.ws.sessions, int(row.id))
            summary = snapshot_of(ended).summary() if ended is not None else "gone"
        elif row.kind == job_rows.STUDY:
            run = StudyPredictionRun.of_claimed(self.ws, self.predictor, row)
            self.say(f"job {row.id}: predicting study {run.study_id} for {row.owner}")
            run.start().wait()
            snap = run.snapshot()
            summary = f"failed: {snap.error}" if snap.error else "prediction stored"
        else:
            job = PredictionJob.of_claimed(self.ws, self.predictor, row, halt=self._halt)
            self.say(f"job {row.id}: predicting {len(job.study_ids)} studies for {row.owner}")
            job.start()
            job.wait()
            summary = job.snapshot().summary()
        line = f"job {row.id}: {summary}"
        self.say(line)
        return line

    def run(self, *, once: bool = False) -> int:
        """Run queued jobs until stopped (``once``: until the queue is empty); how many ran."""
        ran = 0
        while not self.stopping:
            try:
                ended = self.run_once()
            except Exception as exc:  # noqa: BLE001 - a database that is away: look again later
                if once:
                    raise
                log.debug("the job queue could not be read", exc_info=True)
                self.say(f"{_one_line(exc)}; looking again in {self.poll_s:g} s")
                ended = None
            if ended is not None:
                ran += 1
                continue
            if once:
                break
            deadline = time.monotonic() + self.poll_s
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(min(WAKE_S, self.poll_s))
        return ran
