"""Pass 1 of an import: read and check one case's files, write nothing to the database.

Runs in worker processes: header-only DICOM pass (or NIfTI header), geometry checks, mask
alignment through the affines, centroids. Returns plain data that crosses process boundaries.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.errors import InputError, SpineError
from spine_core.io.dicom_scan import SizeLimits
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
    #: radiographs: spacing_source, spacing_mm, view, window_source... (recorded in the audit)
    details: dict[str, Any] = field(default_factory=dict)


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


def prepare_case(case: Any, store_dir: Path, limits: SizeLimits | None = None
                 ) -> PreparedCase | CaseFailure:
    """Read and check one case (runs in a worker process); derived masks go to ``store_dir``;
    ``limits``: the size limits of the settings (their defaults when not given)."""
    try:
        return _prepare(case, store_dir, limits or SizeLimits())
    except SpineError as exc:
        return CaseFailure(case.case_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - worker boundary: any failure is reported for its case
        first = next(iter(str(exc).strip().splitlines()), "")
        return CaseFailure(case.case_id, (
            f"{case.image_path}: could not be read ({type(exc).__name__}: {first}); the files may "
            "be damaged or of a kind SpineReview does not read — check them, or report it"))


def _prepare(case: Any, store_dir: Path, limits: SizeLimits) -> PreparedCase:
    if case.image_format == "dicom":
        series = _prepare_dicom(Path(case.image_path), case, limits)
    elif case.image_format == "image":
        from spine_core.io.prepare_radiograph import prepare_image_radiograph

        series = prepare_image_radiograph(Path(case.image_path), case, limits)
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


def _prepare_dicom(folder: Path, case: Any, limits: SizeLimits) -> PreparedSeries:
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.dicom import plan_series, scan_dicom_tree
    from spine_core.io.radiograph import is_radiograph
    from spine_core.io.uids import check_uid

    scan = scan_dicom_tree(folder, limits=limits)
    if not scan.series:
        by_reason: dict[str, list[str]] = {}
        for skipped in scan.skipped:  # one reason once, with the files that gave it
            by_reason.setdefault(skipped.reason, []).append(Path(skipped.path).name)
        reasons = "; ".join(
            f"{', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}: "
            f"{reason}" for reason, names in list(by_reason.items())[:3])
        raise InputError(f"{folder}: no DICOM image series found" + (f" ({reasons})" if reasons else "")
                         + "; import a folder that holds a CT series or a radiograph")
    # The CT image series with the most slices is the one to annotate.
    candidates = sorted(scan.series, key=lambda s: (s.modality != "CT", -s.n_frames))
    chosen = candidates[0]
    where = f"{folder.name}/{chosen.files[0].name}"  # the scan already skipped files with bad UIDs
    check_uid(chosen.study_uid, "StudyInstanceUID", where)
    check_uid(chosen.series_uid, "SeriesInstanceUID", where)
    if is_radiograph(chosen.modality, chosen.headers[0].sop_class_uid):
        from spine_core.io.prepare_radiograph import prepare_dicom_radiograph

        return prepare_dicom_radiograph(folder, scan, chosen, limits)
    plan = plan_series(chosen)
    mib = math.prod(plan.shape) * 2 / 2**20
    if mib > limits.max_series_mb:
        raise InputError(
            f"{where}: series {chosen.series_uid} of {'×'.join(map(str, plan.shape))} voxels needs "
            f"{mib:.0f} MiB decoded, more than the limit of {limits.max_series_mb} MiB "
            "(SPINE_MAX_SERIES_MB); raise the limit if the series is real")
    if any(h.pixel_offset is None for h in chosen.headers):  # compressed: trial-decode, isolated
        from spine_core.io.decode_check import check_pixels_decode

        try:
            check_pixels_decode(plan.files)
        except SpineError as exc:
            raise InputError(f"{folder.name}/{exc}; series {chosen.series_uid} was not "
                             "imported") from None
    files = [str(Path(p).relative_to(folder)) for p in plan.files]
    warnings = list(plan.warnings)
    if len(scan.series) > 1:
        warnings.append(f"{len(scan.series) - 1} other series in the folder were not imported")
    refused = [s for s in scan.skipped if not s.reason.startswith(("not an image", "DICOMDIR"))]
    for skipped in refused:
        if skipped.kind in ("unreadable", "not_image") and _series_of(skipped.path) == chosen.series_uid:
            raise InputError(
                f"{folder.name}/{Path(skipped.path).relative_to(folder)}: {skipped.reason}; it is a "
                f"slice of series {chosen.series_uid}, which was not imported (it would miss that "
                "slice)")
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


def _series_of(path: Path | str) -> str:
    """The SeriesInstanceUID a file left out by the scan claims ('' when even that is unreadable)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["SeriesInstanceUID"])
        return str(ds.get("SeriesInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - a file too broken to say is simply not matched
        return ""


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
        from spine_core.io.safe_paths import inside, output_folder

        path = inside(output_folder(store_dir), f"{series.series_uid}.mask.nii.gz",
                      what="SeriesInstanceUID")
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
