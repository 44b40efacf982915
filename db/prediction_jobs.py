"""Batch prediction in a background thread, one batch per database at a time.

A page starts a :class:`PredictionJob` on the process-wide :data:`JOBS` board and polls its
:meth:`~PredictionJob.snapshot`; the batch goes on when the user leaves the page or reloads it,
and a second user sees the running batch instead of starting another one on the same studies.
Every study is stored on its own by :func:`db.predictions.predict_many` (a stopped or failed batch
keeps what it finished; running again resumes).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from db.predictions import BatchReport, predict_many
from db.workspace import Workspace
from spine_core.errors import ConflictError, SpineError
from spine_core.inference.protocol import Predictor

log = logging.getLogger(__name__)

#: A batch gives up after this many failures in a row (e.g. a backend that went down).
MAX_FAILURES_IN_A_ROW = 5


@dataclass(frozen=True)
class JobSnapshot:
    """The state of a batch at one moment (a copy: safe to read from any thread)."""

    total: int
    done: int = 0
    predicted: int = 0
    skipped: int = 0
    failed: int = 0
    problems: tuple[str, ...] = ()
    model: str = ""
    started_by: str = ""
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    running: bool = True
    error: str = ""  # the batch could not run at all (e.g. the models failed to load)
    stopped: str = ""  # why it ended early

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def summary(self) -> str:
        if self.error:
            return f"prediction failed: {self.error}"
        text = (f"{self.predicted} studies predicted, {self.skipped} already predicted"
                + (f", {self.failed} failed" if self.failed else ""))
        if self.running:
            return f"{self.done} of {self.total} studies done: {text}"
        return f"{text}; {self.stopped}" if self.stopped else text


class PredictionJob:
    """One batch of studies predicted in a daemon thread (see the module docstring)."""

    def __init__(self, ws: Workspace, predictor: Predictor, study_ids: Sequence[int], *,
                 actor: str, replace: bool = False) -> None:
        self.ws = ws
        self.predictor = predictor
        self.study_ids = [int(i) for i in study_ids]
        self.actor = actor
        self.replace = replace
        self._lock = threading.Lock()
        self._state = JobSnapshot(total=len(self.study_ids), started_by=actor)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spine-predict-batch", daemon=True)

    def start(self) -> PredictionJob:
        self._thread.start()
        return self

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._state

    def cancel(self) -> None:
        """Stop after the study being predicted now (it is still stored)."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the batch to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self.snapshot().running

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]

    def _on_study(self, study_id: int, outcome: str) -> None:
        with self._lock:
            s = self._state
            self._state = replace(
                s, done=s.done + 1,
                predicted=s.predicted + (outcome == "predicted"),
                skipped=s.skipped + (outcome == "skipped"),
                failed=s.failed + (outcome == "failed"),
            )

    def _run(self) -> None:
        report = BatchReport()
        error = ""
        try:
            info = self.predictor.info()  # loads local models / asks the backend: fail once, early
            self._update(model=f"{info.name} {info.version}")
            report = predict_many(
                self.ws, self.predictor, self.study_ids, actor=self.actor, replace=self.replace,
                on_study=self._on_study, should_stop=self._stop.is_set,
                max_consecutive_failures=MAX_FAILURES_IN_A_ROW,
            )
        except SpineError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the thread must end with a message, not silently
            log.exception("prediction batch failed")
            error = f"unexpected {type(exc).__name__}: {exc}"
        self._update(running=False, finished_at=dt.datetime.now(dt.UTC), error=error,
                     problems=tuple(report.problems), stopped=report.stopped)


class JobBoard:
    """The batches of this process, by database URL: at most one running per database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, PredictionJob] = {}

    def current(self, key: str) -> PredictionJob | None:
        """The running or last finished batch of this database in this process."""
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: str, job: PredictionJob) -> PredictionJob:
        """Start ``job`` unless a batch is still running on this database.

        Raises:
            ConflictError: one is running (its snapshot says who started it and how far it is).
        """
        with self._lock:
            running = self._jobs.get(key)
            if running is not None and running.running:
                s = running.snapshot()
                raise ConflictError(
                    f"a prediction batch started by {s.started_by} is running ({s.done} of "
                    f"{s.total} studies done); wait for it to finish or stop it first"
                )
            self._jobs[key] = job.start()
            return job


#: The board of this process (the Streamlit server shares it between sessions).
JOBS = JobBoard()
