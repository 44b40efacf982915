"""`spine import dicomweb`: studies from a PACS into the database, through the file import.

Each study found by QIDO-RS is retrieved by WADO-RS into the managed folder
``<data_dir>/pacs/<StudyInstanceUID>/`` (UIDs checked before they name files; complete or not
there at all), then imported exactly as a folder of DICOM files is (:func:`db.importer.import_path`:
sorting, geometry checks, fingerprints). A study that fails is named and the others continue; its
retrieved files are removed unless an earlier import of them is recorded. Re-running skips studies
already retrieved and imported unchanged, so an interrupted run resumes.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from db import models as m
from db.importer import import_path
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import SpineError
from spine_core.io import dicomweb as dw


@dataclass
class PacsImportReport:
    url: str = ""
    found: int = 0
    retrieved: int = 0
    already_retrieved: int = 0
    instances: int = 0
    studies_added: int = 0
    studies_unchanged: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        parts = [f"{self.url}: {self.found} studies found", f"{self.retrieved} retrieved "
                 f"({self.instances} instances)", f"{self.already_retrieved} already retrieved",
                 f"{self.studies_added} added", f"{self.studies_unchanged} already imported"]
        if self.problems:
            parts.append(f"{len(self.problems)} failed")
        return ", ".join(parts)


def pacs_root(settings: Settings) -> Path:
    """The managed folder that retrieved studies live in."""
    return settings.data_dir / "pacs"


def _workspace(settings: Settings | Workspace) -> Workspace:
    return settings if isinstance(settings, Workspace) else open_workspace(settings)


def _imported(ws: Workspace, study_uid: str) -> bool:
    with ws.sessions() as session:
        return session.scalars(select(m.Study.id).where(m.Study.study_uid == study_uid)).first() is not None


def import_dicomweb(
    settings: Settings | Workspace,
    url: str | None = None,
    *,
    study_uids: Sequence[str] = (),
    patient_id: str | None = None,
    modality: str | None = None,
    since: str | dt.date | None = None,
    actor: str = "cli",
    progress: bool = True,
    on_study: Callable[[str, bool, str], None] | None = None,
    on_instance: Callable[[str], None] | None = None,
) -> PacsImportReport:
    """Search, retrieve and import; see the module docstring. For a screen's progress,
    ``on_instance(uid)`` is called after each instance retrieved and ``on_study(uid, ok, note)``
    after each study."""
    ws = _workspace(settings)
    config = dw.config_from_settings(ws.settings, url)
    client = dw.make_client(config)
    report = PacsImportReport(url=config.url)
    studies, problems = dw.search_studies(client, config, study_uids=study_uids, patient_id=patient_id,
                                          modality=modality, since=since)
    report.problems.extend(problems)
    report.found = len(studies)
    root = pacs_root(ws.settings)
    root.mkdir(parents=True, exist_ok=True)
    modalities = (modality.upper(),) if modality else dw.IMAGE_MODALITIES
    total = sum(s.n_instances or 0 for s in studies) or None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="instance", desc="retrieve", disable=not progress)
    try:
        for summary in studies:
            uid = summary.study_uid
            bar.set_postfix_str(uid[-24:])

            def step(n: int, uid: str = uid) -> None:
                bar.update(n)
                if on_instance is not None:
                    on_instance(uid)

            ok, note = _one_study(ws, client, config, summary, root, modalities, actor, report, step)
            if on_study is not None:
                on_study(uid, ok, note)
    finally:
        bar.close()
    return report


def _one_study(ws: Workspace, client: object, config: dw.PacsConfig, summary: dw.StudySummary,
               root: Path, modalities: Sequence[str], actor: str, report: PacsImportReport,
               step: Callable[[int], object]) -> tuple[bool, str]:
    uid = summary.study_uid
    was_imported = _imported(ws, uid)
    try:
        got = dw.retrieve_study(client, config, uid, root, modalities=modalities, on_instance=step)
    except SpineError as exc:
        text = str(exc)
        report.problems.append(text if text.startswith(f"study {uid}") else f"study {uid}: {text}")
        return False, text
    if got.already_there:
        report.already_retrieved += 1
    else:
        report.retrieved += 1
        report.instances += got.n_instances
    report.warnings.extend(f"study {uid}: series {s} not retrieved" for s in got.skipped_series)
    try:
        result = import_path(got.folder, ws, actor=actor, progress=False)
        failure = "; ".join(result.problems)
        if not failure and result.studies_added + result.studies_unchanged == 0:
            failure = "no image series could be imported"
    except SpineError as exc:
        failure = str(exc)
    if failure:
        if not was_imported and not _imported(ws, uid):
            shutil.rmtree(got.folder, ignore_errors=True)  # nothing half-imported stays behind
        report.problems.append(f"study {uid}: {failure}")
        return False, failure
    report.studies_added += result.studies_added
    report.studies_unchanged += result.studies_unchanged
    report.warnings.extend(f"study {uid}: {w}" for w in result.warnings)
    return True, "added" if result.studies_added else "already imported"


@dataclass(frozen=True)
class PacsStudyRow:
    """A study on the PACS, for the case browser."""

    study_uid: str
    patient_id: str
    study_date: str
    description: str
    modalities: str
    n_series: int | None
    n_instances: int | None
    imported: bool


#: Studies asked of the PACS per listing (a hospital PACS holds far more: narrow by patient or date).
LIST_LIMIT = 500


def list_pacs_studies(settings: Settings | Workspace, *, only_new: bool = True,
                      patient_id: str | None = None, since: str | dt.date | None = None,
                      limit: int = LIST_LIMIT) -> list[PacsStudyRow]:
    """Studies on the configured PACS (``SPINE_DICOMWEB_URL``), newest first, marked imported or
    not; with ``only_new`` only those not imported yet. The PACS is asked for at most ``limit``
    studies matching ``patient_id`` and ``since``."""
    ws = _workspace(settings)
    config = dw.config_from_settings(ws.settings)
    client = dw.make_client(config)
    studies, _ = dw.search_studies(client, config, patient_id=patient_id or None, since=since or None,
                                   limit=limit)
    studies.sort(key=lambda s: (s.study_date, s.study_uid), reverse=True)
    with ws.sessions() as session:
        known = set(session.scalars(select(m.Study.study_uid).where(
            m.Study.study_uid.in_([s.study_uid for s in studies]))))
    rows = [PacsStudyRow(s.study_uid, s.patient_id, s.study_date, s.description, "/".join(s.modalities),
                         s.n_series, s.n_instances, s.study_uid in known) for s in studies]
    return [r for r in rows if not (only_new and r.imported)]
