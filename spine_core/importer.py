"""`spine import`: bring a dataset folder (or a CSV) into the database.

Two passes, so the database only ever sees checked studies:

1. *Prepare* each case in parallel worker processes: header-only DICOM pass (or NIfTI header),
   geometry checks, mask alignment through the affines, centroids. Nothing is written.
2. *Record* each prepared case in its own transaction (one study at a time, so an interrupted
   import keeps what it finished and a re-run picks up the rest), then the dataset's CSVs.

Re-importing adds nothing twice: studies and series are keyed by their UIDs, and a series whose
source fingerprint is unchanged is skipped. A broken case is reported with its reason and skipped.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from spine_core.config import Settings
from spine_core.errors import DatasetLayoutError, InputError, SpineError
from spine_core.labels import VOCABULARIES, level_name
from spine_core.volume import Volume
from spine_core.workspace import Workspace, open_workspace


@dataclass
class PreparedSeries:
    """A checked image series, ready to be recorded (plain data: crosses process boundaries)."""

    study_uid: str
    series_uid: str
    source_format: str
    source_dir: str
    files: list[str]
    shape: tuple[int, int, int]
    affine: list[list[float]]
    instance_numbers: list[int]
    fingerprint: str
    modality: str = "CT"
    patient_id: str = ""
    description: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedMask:
    path: str
    vocabulary: str
    levels: list[str]
    fingerprint: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedCase:
    case_id: str
    dataset: str
    source_path: str
    series: PreparedSeries
    mask: PreparedMask | None = None
    centroids: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CaseFailure:
    case_id: str
    reason: str


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


# --- pass 1: prepare (no database) --------------------------------------------------------------


def _geometry_volume(series: PreparedSeries) -> Volume:
    """A voxel-free stand-in with the series' grid (for mask alignment checks)."""
    return Volume(np.broadcast_to(np.int16(0), series.shape), np.asarray(series.affine))


def prepare_case(case: Any, store_dir: Path) -> PreparedCase | CaseFailure:
    """Read and check one case (runs in a worker process); derived masks go to ``store_dir``."""
    try:
        return _prepare(case, store_dir)
    except SpineError as exc:
        return CaseFailure(case.case_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the import
        return CaseFailure(case.case_id, f"{type(exc).__name__}: {exc}")


def _prepare(case: Any, store_dir: Path) -> PreparedCase:
    if case.image_format == "dicom":
        series = _prepare_dicom(Path(case.image_path), case)
    else:
        series = _prepare_nifti(Path(case.image_path), case)
    prepared = PreparedCase(case.case_id, case.dataset, str(case.image_path), series)
    if case.mask_paths:
        prepared.mask = _prepare_mask(case, series, store_dir)
    if getattr(case, "centroid_path", None):
        from spine_core.io.verse import read_centroids

        centroids = read_centroids(Path(case.centroid_path), _geometry_volume(series))
        prepared.centroids = {level_name(c.level_id): tuple(map(float, c.lps)) for c in centroids.centroids}
        prepared.warnings.extend(centroids.warnings)
    return prepared


def _prepare_dicom(folder: Path, case: Any) -> PreparedSeries:
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.dicom import plan_series, scan_dicom_tree

    scan = scan_dicom_tree(folder)
    if not scan.series:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in scan.skipped[:3])
        raise InputError(f"{folder}: no DICOM image series found" + (f" ({reasons})" if reasons else ""))
    # The CT image series with the most slices is the one to annotate.
    candidates = sorted(scan.series, key=lambda s: (s.modality != "CT", -s.n_frames))
    chosen = candidates[0]
    plan = plan_series(chosen)
    files = [str(Path(p).relative_to(folder)) for p in plan.files]
    warnings = list(plan.warnings)
    if len(scan.series) > 1:
        warnings.append(f"{len(scan.series) - 1} other series in the folder were not imported")
    return PreparedSeries(
        study_uid=chosen.study_uid, series_uid=chosen.series_uid, source_format="dicom",
        source_dir=str(folder.resolve()), files=files, shape=plan.shape,
        affine=plan.affine.tolist(), instance_numbers=list(plan.instance_numbers),
        fingerprint=fingerprint_files(plan.files), modality=chosen.modality,
        patient_id=chosen.patient_id, description=chosen.description, warnings=warnings,
    )


def _prepare_nifti(path: Path, case: Any) -> PreparedSeries:
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.nifti import load_nifti

    volume = load_nifti(path)
    uid = _nifti_uid(case.dataset, case.case_id)
    return PreparedSeries(
        study_uid=uid, series_uid=f"{uid}.1", source_format="nifti",
        source_dir=str(path.resolve()), files=[], shape=volume.shape,
        affine=volume.affine.tolist(), instance_numbers=list(range(1, volume.shape[0] + 1)),
        fingerprint=fingerprint_files([path]), description=path.name,
        warnings=list(volume.meta.get("warnings", [])),
    )


def _nifti_uid(dataset: str, case_id: str) -> str:
    """A stable identifier for a NIfTI case (no DICOM UID exists): dataset + case id."""
    digest = int(hashlib.sha1(f"{dataset}/{case_id}".encode()).hexdigest()[:24], 16)
    return f"2.25.{digest}"


def _prepare_mask(case: Any, series: PreparedSeries, store_dir: Path) -> PreparedMask:
    """Check the case's mask against the series grid; per-class masks are combined and stored."""
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.nifti import save_nifti

    geometry = _geometry_volume(series)
    aligned = case.load_mask(geometry)
    levels = [level_name(int(v)) for v in aligned.levels]
    if case.mask_format == "per_class" or case.vocabulary is None:
        store_dir.mkdir(parents=True, exist_ok=True)
        path = store_dir / f"{series.series_uid}.mask.nii.gz"
        save_nifti(geometry.with_array(np.asarray(aligned.array, dtype=np.uint8)), path)
        vocabulary = "canonical"
    else:
        path = Path(case.mask_paths[0])
        vocabulary = _vocabulary_key(case.vocabulary)
    return PreparedMask(str(path.resolve()), vocabulary, levels, fingerprint_files([path]),
                        list(aligned.warnings))


def _vocabulary_key(vocabulary: Any) -> str:
    for key, known in VOCABULARIES.items():
        if known is vocabulary or known.name == vocabulary.name:
            return key
    raise InputError(f"unknown label vocabulary {vocabulary.name}")


# --- pass 2: record ------------------------------------------------------------------------------


def record_case(session: Session, prepared: PreparedCase, actor: str) -> bool:
    """Write one prepared case; returns False when it was already there unchanged."""
    ps = prepared.series
    study = session.scalars(select(m.Study).where(m.Study.study_uid == ps.study_uid)).first()
    series = session.scalars(select(m.Series).where(m.Series.series_uid == ps.series_uid)).first()
    if series is not None and series.fingerprint == ps.fingerprint:
        return False
    warnings = [*ps.warnings, *prepared.warnings, *(prepared.mask.warnings if prepared.mask else [])]
    if study is None:
        study = m.Study(study_uid=ps.study_uid, dataset=prepared.dataset,
                        source_path=prepared.source_path, patient_id=ps.patient_id,
                        description=ps.description, imported_by=actor)
        session.add(study)
    before = None if series is None else {"fingerprint": series.fingerprint}
    study.n_slices = ps.shape[0]
    study.has_mask = prepared.mask is not None
    study.warnings = warnings
    session.flush()
    if series is None:
        series = m.Series(study_id=study.id, series_uid=ps.series_uid)
        session.add(series)
    series.modality = ps.modality
    series.source_format = ps.source_format
    series.source_dir = ps.source_dir
    series.files = ps.files
    series.shape = list(ps.shape)
    series.affine = ps.affine
    series.instance_numbers = ps.instance_numbers
    series.fingerprint = ps.fingerprint
    series.warnings = ps.warnings
    session.flush()
    if prepared.mask is not None:
        pm = prepared.mask
        mask = session.scalars(
            select(m.Mask).where(m.Mask.series_id == series.id, m.Mask.source == "dataset")
        ).first()
        if mask is None:
            mask = m.Mask(series_id=series.id, source="dataset")
            session.add(mask)
        mask.path, mask.vocabulary, mask.levels = pm.path, pm.vocabulary, pm.levels
        mask.fingerprint, mask.warnings = pm.fingerprint, pm.warnings
    for level, (x, y, z) in prepared.centroids.items():
        row = session.scalars(
            select(m.Centroid).where(m.Centroid.study_id == study.id, m.Centroid.level == level,
                                     m.Centroid.source == "dataset")
        ).first()
        if row is None:
            session.add(m.Centroid(study_id=study.id, level=level, x=x, y=y, z=z, source="dataset"))
        else:
            row.x, row.y, row.z = x, y, z
    session.flush()
    record(session, actor, "study.import" if before is None else "study.reimport", "study",
           study.study_uid, before,
           {"series": ps.series_uid, "slices": ps.shape[0], "mask": prepared.mask is not None,
            "fingerprint": ps.fingerprint, "warnings": warnings})
    return True


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
    from spine_core.csv_import import import_csv
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
    cases = list(iter_cases(root))
    if not cases:
        raise DatasetLayoutError(f"{root}: recognised as {layout.kind} but it holds no cases")
    workers = max(1, ws.settings.workers)
    prepare = functools.partial(prepare_case, store_dir=ws.settings.data_dir / "masks")
    results: Iterator[PreparedCase | CaseFailure]
    if workers == 1 or len(cases) == 1:
        results = map(prepare, cases)
        pool = None
    else:
        pool = cf.ProcessPoolExecutor(max_workers=workers)
        results = pool.map(prepare, cases, chunksize=1)
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
    return report


def dataset_csvs(root: Path) -> list[Path]:
    """Label/box CSVs at the top of a dataset folder whose columns we know (others are ignored)."""
    from spine_core.csv_import import detect_csv_kind

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
    from spine_core.csv_import import CSV_ORDER, READER_KINDS, detect_csv_kind

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
