"""Pass 1 of an import: read and check one case's files, write nothing to the database.

Runs in worker processes: header-only DICOM pass (or NIfTI header), geometry checks, mask
alignment through the affines, centroids. Returns plain data that crosses process boundaries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.errors import InputError, SpineError
from spine_core.labels import VOCABULARIES, level_name
from spine_core.volume import Volume


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
    instance_numbers: list[int | None]  # None: the file has no InstanceNumber
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


def _geometry_volume(series: PreparedSeries) -> Volume:
    """A voxel-free stand-in with the series' grid (for mask alignment checks)."""
    return Volume(np.broadcast_to(np.int16(0), series.shape), np.asarray(series.affine))


def prepare_case(case: Any, store_dir: Path) -> PreparedCase | CaseFailure:
    """Read and check one case (runs in a worker process); derived masks go to ``store_dir``."""
    try:
        return _prepare(case, store_dir)
    except SpineError as exc:
        return CaseFailure(case.case_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - worker boundary: any failure is reported for its case
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
        prepared.centroids = {
            level_name(c.level_id): (float(c.lps[0]), float(c.lps[1]), float(c.lps[2]))
            for c in centroids.centroids
        }
        prepared.warnings.extend(centroids.warnings)
    return prepared


def _prepare_dicom(folder: Path, case: Any) -> PreparedSeries:
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.dicom import plan_series, scan_dicom_tree
    from spine_core.io.uids import check_uid

    scan = scan_dicom_tree(folder)
    if not scan.series:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in scan.skipped[:3])
        raise InputError(f"{folder}: no DICOM image series found" + (f" ({reasons})" if reasons else ""))
    # The CT image series with the most slices is the one to annotate.
    candidates = sorted(scan.series, key=lambda s: (s.modality != "CT", -s.n_frames))
    chosen = candidates[0]
    where = f"{folder.name}/{chosen.files[0].name}"  # the scan already skipped files with bad UIDs
    check_uid(chosen.study_uid, "StudyInstanceUID", where)
    check_uid(chosen.series_uid, "SeriesInstanceUID", where)
    plan = plan_series(chosen)
    files = [str(Path(p).relative_to(folder)) for p in plan.files]
    warnings = list(plan.warnings)
    if len(scan.series) > 1:
        warnings.append(f"{len(scan.series) - 1} other series in the folder were not imported")
    refused = [s for s in scan.skipped if not s.reason.startswith(("not an image", "DICOMDIR"))]
    if refused:
        listed = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        warnings.append(f"{len(refused)} file(s) in the folder were left out ({listed}{more}); "
                        "the series may miss slices")
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
