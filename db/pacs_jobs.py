"""Import from the PACS as a job (``kind='pacs'`` in ``prediction_jobs``), outside the page run.

:func:`submit` starts the import of chosen StudyInstanceUIDs: in a :class:`PacsImportJob` thread
of this process, or (``SPINE_WORKER=external``) queued for a ``spine worker``
(:mod:`db.job_worker`), which runs the same :class:`PacsImportJob`. One PACS import at a time per
database (the lock key :func:`db.job_rows.pacs_key`): a second one is refused, naming who imports.

The row is the job's only state: ``study_ids`` the chosen UIDs (strings), ``total`` their count,
``done``/``predicted``/``skipped``/``failures`` the studies ended, imported, found already imported
and failed, ``message`` the study under way with its instance count, ``problems`` one result line
per ended study, in order (a failed one reads ``failed study UID: why``), and the end or the error.
Each study is imported on its own by :func:`db.pacs.import_dicomweb` (a failed one is named, the
others go on; an imported one is skipped when run again), so a retry doubles nothing. The job
stops between two studies when asked (:func:`db.job_queue.cancel`) or when its worker stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import job_queue, job_rows
from db import models as m
from db.pacs import import_dicomweb
from db.workspace import Workspace
from spine_core.errors import ConflictError, InputError, SpineError

log = logging.getLogger(__name__)

#: Seconds between two progress writes while instances arrive.
SAVE_EVERY_S = 0.5


def _named(uid: str, text: str) -> str:
    """``text`` as one line naming the study."""
    line = " ".join(text.split())
    return line if line.startswith(f"study {uid}") else f"study {uid}: {line}"


def import_one(ws: Workspace, uid: str, actor: str,
               on_instance: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Import one study from the PACS; (outcome, the line that says how it went), the outcome
    being ``imported``, ``already`` or ``failed``."""
    try:
        report = import_dicomweb(ws, study_uids=[uid], actor=actor, progress=False,
                                 on_instance=on_instance)
    except SpineError as exc:
        return "failed", f"failed {_named(uid, str(exc))}"
    if report.problems:
        return "failed", "failed " + "; ".join(_named(uid, p) for p in report.problems)
    if report.found == 0:
        return "failed", f"failed study {uid}: not found on the PACS"
    if report.studies_added:
        return "imported", f"imported study {uid} ({report.instances} instances)"
    return "already", f"study {uid} was already imported"


@dataclass(frozen=True)
class PacsSnapshot(job_rows.RowStatus):
    """A PACS import as its row has it."""

    job_id: int
    status: str
    owner: str
    total: int
    done: int
    imported: int
    already: int
    failed: int
    message: str
    lines: tuple[str, ...]
    error: str
    stopped: str
    study_uids: tuple[str, ...]

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 1.0

    def summary(self) -> str:
        if self.error:
            return f"the PACS import failed: {self.error}"
        if self.queued:
            return f"waiting for a worker to start it ({self.total} studies)"
        text = (f"{self.imported} studies imported, {self.already} already imported"
                + (f", {self.failed} failed" if self.failed else ""))
        if self.running:
            return f"{self.done} of {self.total} studies done ({self.message}): {text}"
        return f"{text}; {self.stopped}" if self.stopped else text


def snapshot_of(row: m.PredictionJobRow) -> PacsSnapshot:
    return PacsSnapshot(
        job_id=int(row.id), status=row.status, owner=row.owner, total=row.total, done=row.done,
        imported=row.predicted, already=row.skipped, failed=row.failures, message=row.message,
        lines=tuple(str(p) for p in row.problems), error=row.error, stopped=row.stopped,
        study_uids=tuple(str(u) for u in row.study_ids),
    )


def current(sessions: sessionmaker[Session]) -> PacsSnapshot | None:
    """The running or last ended PACS import of this database (one whose worker died is found
    failed, with the reason)."""
    row = job_rows.latest(sessions, job_rows.pacs_key())
    return None if row is None else snapshot_of(row)


class PacsImportJob:
    """One PACS import run by this process, in a daemon thread (see the module docstring)."""

    def __init__(self, ws: Workspace, study_uids: Sequence[str], *, actor: str,
                 retry_of: int | None = None) -> None:
        self.ws = ws
        self.study_uids = [str(u) for u in study_uids]
        self.actor = actor
        self.retry_of = retry_of
        self.job_id: int | None = None
        self._stop = threading.Event()
        self._halt: Callable[[], str] = lambda: ""
        self._ended = threading.Event()
        self._saved_at = 0.0
        self._thread = threading.Thread(target=self.run, name="spine-pacs-import", daemon=True)

    @classmethod
    def of_claimed(cls, ws: Workspace, row: m.PredictionJobRow, *,
                   halt: Callable[[], str] = lambda: "") -> PacsImportJob:
        """The import of a row this process already claimed (a ``spine worker``); not started.
        A non-empty ``halt()`` stops it between two studies, with that reason."""
        job = cls(ws, [str(u) for u in row.study_ids], actor=row.owner, retry_of=row.retry_of)
        job.job_id = int(row.id)
        job._halt = halt
        return job

    def claim(self) -> int:
        """Take the database's PACS import slot (a running row).

        Raises:
            ConflictError: an import is queued or running (the message says whose).
        """
        self.job_id = job_rows.claim(self.ws.sessions, kind=job_rows.PACS,
                                     lock_key=job_rows.pacs_key(), owner=self.actor,
                                     study_ids=self.study_uids, retry_of=self.retry_of)
        return self.job_id

    def start(self) -> PacsImportJob:
        if self.job_id is None:
            self.claim()
        self._thread.start()
        threading.Thread(target=self._beat, name="spine-pacs-heartbeat", daemon=True).start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the import to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _save(self, force: bool = True, **values: Any) -> None:
        """Write ``values`` into the row (progress is best effort: a failed write is logged)."""
        now = time.monotonic()
        if self.job_id is None or (not force and now - self._saved_at < SAVE_EVERY_S):
            return
        self._saved_at = now
        try:
            job_rows.save(self.ws.sessions, self.job_id, **values)
        except Exception:  # noqa: BLE001 - the studies are stored; the row catches up later
            log.exception("could not save the progress of PACS import %s", self.job_id)

    def _beat(self) -> None:
        """Beat the row's heartbeat until the import ends; stop when asked from any replica."""
        job_rows.keep_beating(self.ws.sessions, lambda: self.job_id, self._ended, self._stop,
                              "PACS import")

    def _why_stop(self) -> str:
        """Why the import must stop before its next study ("" while it goes on): the worker
        stops, or someone asked (the row is looked at now, not at the next heartbeat)."""
        halt = self._halt()
        if halt:
            return halt
        if not self._stop.is_set() and self.job_id is not None:
            try:
                if job_rows.beat(self.ws.sessions, self.job_id):
                    self._stop.set()
            except Exception:  # noqa: BLE001 - the heartbeat thread looks again
                log.warning("could not read the stop flag of PACS import %s", self.job_id,
                            exc_info=True)
        return "stopped on request; run the import again to resume" if self._stop.is_set() else ""

    def run(self) -> None:
        """Import the studies one by one, writing progress and the end into the row."""
        total = len(self.study_uids)
        counts = {"imported": 0, "already": 0, "failed": 0}
        lines: list[str] = []
        error = stopped = ""
        try:
            for n, uid in enumerate(self.study_uids, start=1):
                stopped = self._why_stop()
                if stopped:
                    break
                here = f"study {n} of {total}, {uid}"
                got = 0

                def tick(_uid: str, here: str = here) -> None:
                    nonlocal got
                    got += 1
                    self._save(force=False, message=f"{here}: {got} instances retrieved"[:256])

                self._save(message=f"{here}: retrieving"[:256])
                outcome, line = import_one(self.ws, uid, self.actor, on_instance=tick)
                counts[outcome] += 1
                lines.append(line)
                self._save(done=len(lines), fraction=len(lines) / total, problems=list(lines),
                           predicted=counts["imported"], skipped=counts["already"],
                           failures=counts["failed"], message=f"{here}: {outcome}"[:256])
        except Exception as exc:  # noqa: BLE001 - the thread must end with a message, not silently
            log.exception("PACS import %s failed", self.job_id)
            error = f"unexpected {type(exc).__name__}: {exc}"
        status = job_rows.FAILED if error else job_rows.STOPPED if stopped else job_rows.DONE
        self._save(status=status, finished_at=dt.datetime.now(dt.UTC), error=error,
                   stopped=stopped, message=status)
        self._ended.set()


def submit(ws: Workspace, study_uids: Sequence[str], *, actor: str,
           retry_of: int | None = None) -> int:
    """Import ``study_uids`` from the PACS in the background: in a thread of this process, or
    queued for a ``spine worker`` when ``ws.settings.external_worker``; the job's id.

    Raises:
        ConflictError: a PACS import is queued or running (the message says whose).
        InputError: no study chosen.
    """
    uids = [str(u).strip() for u in study_uids if str(u).strip()]
    if not uids:
        raise InputError("choose at least one study to import")
    if ws.settings.external_worker:
        return job_queue.enqueue(ws.sessions, kind=job_rows.PACS, lock_key=job_rows.pacs_key(),
                                 owner=actor, study_ids=uids, retry_of=retry_of)
    job = PacsImportJob(ws, uids, actor=actor, retry_of=retry_of).start()
    assert job.job_id is not None  # claimed by start()
    return job.job_id


def retry(ws: Workspace, *, actor: str) -> int:
    """Run the last PACS import again (studies it imported are found already imported); its id.

    Raises:
        ConflictError: it is still running, or there is none.
    """
    last = current(ws.sessions)
    if last is None:
        raise ConflictError("there is no PACS import to run again")
    if last.running:
        raise ConflictError(f"the PACS import started by {last.owner} is still running")
    return submit(ws, last.study_uids, actor=actor, retry_of=last.job_id)


def stop(ws: Workspace, job_id: int) -> None:
    """Stop the import after the study under way (a queued one stops at once)."""
    job_queue.cancel(ws.sessions, job_id)
