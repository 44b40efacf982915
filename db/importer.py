"""`spine import`: bring a dataset folder (or a CSV) into the database.

Two passes, so the database only ever sees checked studies:

1. *Prepare* each case in parallel worker processes: header-only DICOM pass (or NIfTI header),
   geometry checks, mask alignment through the affines, centroids. Nothing is written.
2. *Record* each prepared case in its own transaction (one study at a time, so an interrupted
   import keeps what it finished and a re-run picks up the rest), then the dataset's CSVs.

Re-importing adds nothing twice: studies and series are keyed by their UIDs, and a series whose
source fingerprint is unchanged is skipped; rows are upserted on those keys, so two imports of one
folder at once leave one copy. A broken case is reported with its reason and skipped.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from db.db_errors import database_refusal
from db.import_keys import insert_for
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.errors import DatasetLayoutError, InputError, SpineError
from spine_core.genant import scheme_for_dataset
from spine_core.io.dicom_scan import SizeLimits
from spine_core.io.genant_csv import FILE_NAME as GRADES_FILE
from spine_core.io.genant_csv import read_grades, subject_key
from spine_core.io.prepare import CaseFailure, PreparedCase, prepare_case
from spine_core.labels import region_of


@dataclass
class ImportReport:
    """What an import did; ``problems`` name every skipped case or refused row."""

    dataset: str = ""
    studies_added: int = 0
    studies_unchanged: int = 0
    masks_added: int = 0
    csv_rows_imported: int = 0
    csv_rows_unchanged: int = 0
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        parts = [
            f"{self.dataset or 'import'}: {self.studies_added} studies added",
            f"{self.studies_unchanged} already imported",
            f"{self.masks_added} masks",
            f"{self.csv_rows_imported} CSV rows imported ({self.csv_rows_unchanged} unchanged)",
        ]
        if self.warnings:
            parts.append(f"{len(self.warnings)} warnings")
        if self.problems:
            parts.append(f"{len(self.problems)} problems (skipped)")
        return ", ".join(parts)


# --- pass 2: record ------------------------------------------------------------------------------


def record_case(session: Session, prepared: PreparedCase, actor: str) -> bool:
    """Write one prepared case; returns False when it was already there unchanged.

    Study, series, mask and centroids are upserted on their unique keys (study and series UIDs,
    one dataset mask per series, a centroid per level and source), and the study row is locked
    before its series is compared: two imports of one study at once leave one copy, and the
    second finds it unchanged.
    """
    ps = prepared.series
    if _unchanged(session, ps.series_uid, ps.fingerprint):
        return False
    now = dt.datetime.now(dt.UTC)
    warnings = [*ps.warnings, *prepared.warnings, *(prepared.mask.warnings if prepared.mask else [])]
    session.execute(insert_for(session, _table(m.Study)).values(
        study_uid=ps.study_uid, dataset=prepared.dataset, call_scheme=scheme_for_dataset(prepared.dataset),
        source_path=prepared.source_path, patient_id=ps.patient_id, description=ps.description,
        imported_by=actor, imported_at=now, status=m.StudyStatus.new.value, n_slices=ps.shape[0],
        has_mask=False, region="", warnings=[], version=1,
    ).on_conflict_do_nothing(index_elements=["study_uid"]))
    study = session.scalars(select(m.Study).where(m.Study.study_uid == ps.study_uid).with_for_update()
                            .execution_options(populate_existing=True)).one()
    if _unchanged(session, ps.series_uid, ps.fingerprint):  # another import wrote it meanwhile
        return False
    series = session.scalars(select(m.Series).where(m.Series.series_uid == ps.series_uid)).first()
    before = None if series is None else {"fingerprint": series.fingerprint}
    study.n_slices = ps.shape[0]
    study.has_mask = prepared.mask is not None
    study.region = region_of(prepared.mask.levels) if prepared.mask is not None else ""
    study.warnings = warnings
    values = {"modality": ps.modality, "source_format": ps.source_format, "source_dir": ps.source_dir,
              "files": ps.files, "shape": list(ps.shape), "affine": ps.affine,
              "instance_numbers": ps.instance_numbers, "fingerprint": ps.fingerprint,
              "warnings": ps.warnings}
    series_table = _table(m.Series)
    series_id = session.execute(insert_for(session, series_table).values(
        study_id=study.id, series_uid=ps.series_uid, created_at=now, **values,
    ).on_conflict_do_update(index_elements=["series_uid"], set_=values)
        .returning(series_table.c.id)).scalar_one()
    session.flush()
    if prepared.mask is not None:
        pm = prepared.mask
        mask_values = {"path": pm.path, "vocabulary": pm.vocabulary, "levels": pm.levels,
                       "fingerprint": pm.fingerprint, "warnings": pm.warnings}
        masks = _table(m.Mask)
        session.execute(insert_for(session, masks).values(
            series_id=series_id, source="dataset", created_at=now, **mask_values,
        ).on_conflict_do_update(index_elements=["series_id"],
                                index_where=masks.c.source == "dataset", set_=mask_values))
    if prepared.centroids:
        centroids = _table(m.Centroid)
        stmt = insert_for(session, centroids)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["study_id", "level", "source"],
            set_={"x": stmt.excluded.x, "y": stmt.excluded.y, "z": stmt.excluded.z},
        ), [{"study_id": study.id, "level": level, "x": x, "y": y, "z": z, "source": "dataset"}
            for level, (x, y, z) in prepared.centroids.items()])
    record(session, actor, "study.import" if before is None else "study.reimport", "study",
           study.study_uid, before,
           {"series": ps.series_uid, "slices": ps.shape[0], "mask": prepared.mask is not None,
            "fingerprint": ps.fingerprint, "warnings": warnings,
            **({"modality": ps.modality, "radiograph": ps.details} if ps.details else {})})
    return True


def _unchanged(session: Session, series_uid: str, fingerprint: str) -> bool:
    stored = session.scalars(select(m.Series.fingerprint).where(m.Series.series_uid == series_uid)).first()
    return stored == fingerprint


def _table(model: type[m.Base]) -> Table:
    return model.__table__  # type: ignore[return-value]


# --- orchestration -------------------------------------------------------------------------------


def _progress_iter(items: Iterator[Any], total: int, enabled: bool, desc: str) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="study")


def import_path(
    path: Path | str,
    settings: Settings | Workspace,
    *,
    actor: str = "cli",
    progress: bool = True,
    on_case: Callable[[str, bool], None] | None = None,
) -> ImportReport:
    """Import a dataset folder or a CSV file; see the module docstring."""
    from db.csv_import import import_csv
    from spine_core.io.layouts import detect_layout, iter_cases

    ws = settings if isinstance(settings, Workspace) else open_workspace(settings)
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root} does not exist; give a dataset folder or a CSV file")
    report = ImportReport()
    if root.is_file() and root.suffix.lower() == ".csv":
        report.dataset = "csv"
        _import_csvs(ws, [root], actor, report, import_csv)
        return report

    layout = detect_layout(root)
    report.dataset = layout.kind
    layout_notes: list[str] = []
    cases = list(iter_cases(root, warnings=layout_notes))
    report.warnings.extend(layout_notes)
    if not cases:
        raise DatasetLayoutError(f"{root}: recognised as {layout.kind} but it holds no cases")
    workers = max(1, ws.settings.workers)
    prepare = functools.partial(prepare_case, store_dir=ws.settings.data_dir / "masks",
                                limits=SizeLimits.from_settings(ws.settings))
    results: Iterator[PreparedCase | CaseFailure]
    if workers == 1 or len(cases) == 1:
        results = map(prepare, cases)
        pool = None
    else:
        pool = cf.ProcessPoolExecutor(max_workers=workers)
        results = pool.map(prepare, cases, chunksize=1)
    case_studies: dict[str, str] = {}  # case id -> StudyInstanceUID, for the grades file
    try:
        for result in _progress_iter(results, len(cases), progress, f"import {layout.kind}"):
            if isinstance(result, CaseFailure):
                report.problems.append(f"case {result.case_id}: {result.reason}")
                if on_case:
                    on_case(result.case_id, False)
                continue
            try:
                with ws.sessions.begin() as session:
                    added = record_case(session, result, actor)
            except SpineError as exc:
                report.problems.append(f"case {result.case_id}: {exc}")
                continue
            except (IntegrityError, DataError) as exc:  # one bad study never stops the others
                report.problems.append(f"case {result.case_id}: "
                                       f"{database_refusal(exc, 'this study')}")
                continue
            case_studies[result.case_id] = result.series.study_uid
            if added:
                report.studies_added += 1
                report.masks_added += int(result.mask is not None)
            else:
                report.studies_unchanged += 1
            report.warnings.extend(f"case {result.case_id}: {w}" for w in result.series.warnings)
            if on_case:
                on_case(result.case_id, True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _import_csvs(ws, dataset_csvs(root), actor, report, import_csv)
    if (root / GRADES_FILE).is_file():
        _import_grades(ws, root / GRADES_FILE, case_studies, actor, report)
    return report


def _import_grades(ws: Workspace, path: Path, case_studies: Mapping[str, str], actor: str,
                   report: ImportReport) -> None:
    """The dataset's Genant grades (``genant_grades.csv``) onto the studies of its cases; bad rows
    and subjects without a study are named, the rest stored."""
    from db.grades import store_dataset_grades

    rows, problems = read_grades(path)
    report.problems.extend(problems)
    by_key = {subject_key(case): uid for case, uid in case_studies.items()}
    per_study: dict[str, dict[str, tuple[int, str | None]]] = {}
    for row in rows:
        uid = by_key.get(subject_key(row.subject))
        if uid is None:
            report.problems.append(f"{path.name} line {row.line}: subject {row.subject!r} is not a "
                                   "case of this folder; its grade was not imported")
            continue
        per_study.setdefault(uid, {})[row.level] = (row.grade, row.morphology)
    for uid, grades in per_study.items():
        with ws.sessions.begin() as session:
            study = session.scalars(select(m.Study).where(m.Study.study_uid == uid)).one()
            report.csv_rows_imported += store_dataset_grades(session, study.id, grades, actor)


def dataset_csvs(root: Path) -> list[Path]:
    """Label/box CSVs at the top of a dataset folder whose columns we know (others are ignored)."""
    from db.csv_import import detect_csv_kind

    found = []
    for path in sorted(root.glob("*.csv")):
        try:
            detect_csv_kind(path)
        except InputError:
            continue
        found.append(path)
    return found


def _import_csvs(ws: Workspace, paths: list[Path], actor: str, report: ImportReport,
                 import_csv: Callable[..., Any]) -> None:
    from db.csv_import import CSV_ORDER, READER_KINDS, detect_csv_kind

    kinds = sorted(((detect_csv_kind(p), p) for p in paths), key=lambda kp: CSV_ORDER.index(kp[0]))
    readers_changed = False
    for kind, csv_path in kinds:
        with ws.sessions.begin() as session:
            outcome = import_csv(session, csv_path, actor, kind)
        report.csv_rows_imported += outcome.imported
        report.csv_rows_unchanged += outcome.unchanged
        report.problems.extend(outcome.problems)
        readers_changed |= kind in READER_KINDS and outcome.imported > 0
    if readers_changed:
        _after_readers_import(ws, actor, report)


def _after_readers_import(ws: Workspace, actor: str, report: ImportReport) -> None:
    """Imported readers' work counts as submitted: update study status, then check disputes."""
    from db.annotations import update_reading_status
    from db.disputes import refresh_all

    with ws.sessions.begin() as session:
        for study_id in session.scalars(select(m.Study.id).where(m.Study.status == m.StudyStatus.new.value)):
            update_reading_status(session, study_id)
        results = refresh_all(session, ws.settings, actor=actor)
    opened = sum(len(r.opened) for r in results)
    if opened:
        report.warnings.append(f"{opened} disputes opened for the committee")
