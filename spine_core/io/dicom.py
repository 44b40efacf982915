"""Read DICOM image series into :class:`~spine_core.volume.Volume` objects.

Header pass, plan, pixel pass:

1. **Header pass** — :func:`scan_dicom_tree` walks a folder tree of any nesting and any file
   names, reads every file's header only (``stop_before_pixels``, a fixed tag list), groups images
   by StudyInstanceUID / SeriesInstanceUID and reports everything it leaves out, with the reason:
   non-DICOM and truncated files, objects without pixels (SR, presentation states...), other
   non-image objects (SEG, RT Dose...), localizers/scouts.
2. **Plan** — :func:`plan_series` sorts the slices by their position along the slice normal
   (never by InstanceNumber or file name), checks the geometry and builds the affine
   (:mod:`spine_core.io.dicom_geometry`), still from headers only.
3. **Pixel pass** — :func:`load_series` decodes the planned frames
   (:mod:`spine_core.io.dicom_pixels`), applying RescaleSlope/Intercept per slice.

This module is the public face; the header pass lives in :mod:`spine_core.io.dicom_scan`.

Geometry problems are never fixed silently: a stack that is still a volume (a gap, uneven spacing,
gantry tilt) loads with a named warning in ``Volume.meta["warnings"]`` (and a code in
``meta["geometry_issues"]``); one that is not (duplicates, mixed grids, one slice, no position)
raises :class:`~spine_core.errors.SeriesGeometryError` saying what is wrong and what to do.
Gantry tilt is kept exactly: the affine's slice column is the real mean step vector, so the
volume is sheared, not resampled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from spine_core.errors import DicomError, SeriesGeometryError, UnsupportedTransferSyntax
from spine_core.io.dicom_geometry import (
    StackGeometry,
    format_orientation,
    same_orientation,
    stack_geometry,
)
from spine_core.io.dicom_pixels import FrameRef, check_decodable, decode_stack
from spine_core.io.dicom_scan import (
    DicomScan,
    FileHeader,
    FrameGeometry,
    SeriesHeaders,
    SkippedFile,
    read_header,
    scan_dicom_tree,
    scan_files,
    split_localizers,
)
from spine_core.volume import Volume

__all__ = [
    "DicomScan", "FileHeader", "FrameGeometry", "SeriesHeaders", "SeriesPlan", "SkippedFile",
    "StackGeometry", "UnsupportedTransferSyntax", "SeriesGeometryError", "check_decodable",
    "load_series", "plan_series", "read_header",
    "scan_dicom_tree", "scan_files", "split_localizers", "stack_geometry",
]

T = TypeVar("T")


def _resolve_series(
    source: SeriesHeaders | Sequence[Path | str] | Path | str, workers: int
) -> tuple[SeriesHeaders, list[str]]:
    """SeriesHeaders for whatever was given, plus warnings about files left out."""
    if isinstance(source, SeriesHeaders):
        return source, []
    if isinstance(source, (str, Path)):
        path = Path(source)
        scan = scan_dicom_tree(path, workers=workers)
        from_folder = path.is_dir()
    else:
        scan = scan_files(source, workers=workers)
        from_folder = False
    warnings = []
    for s in scan.skipped:
        if s.is_error and not from_folder:
            raise DicomError(f"{s.path}: {s.reason}")
        warnings.append(f"skipped file: {s.path.name}: {s.reason}")
    if not scan.series:
        raise DicomError(f"{source}: no DICOM image series found"
                         + (f" ({len(scan.skipped)} file(s) skipped)" if scan.skipped else ""))
    if len(scan.series) > 1:
        listed = "; ".join(f"{s.series_uid} ({s.description or s.modality}, {len(s.files)} files)"
                           for s in scan.series)
        raise DicomError(
            f"{source}: holds {len(scan.series)} series ({listed}); pass one series — use "
            "scan_dicom_tree() and load_series(scan.series[i])"
        )
    return scan.series[0], warnings


def _common(values: Sequence[T], what: str, label: str, names: Sequence[str],
            same: Callable[[T, T], bool], fmt: Callable[[T], str] = str) -> T:
    """The single value of ``values`` (within ``same``), else SeriesGeometryError listing them."""
    groups: list[tuple[T, list[int]]] = []
    for i, v in enumerate(values):
        for rep, members in groups:
            if same(rep, v):
                members.append(i)
                break
        else:
            groups.append((v, [i]))
    if len(groups) == 1:
        return groups[0][0]
    groups.sort(key=lambda g: -len(g[1]))
    parts = []
    for rep, members in groups:
        sample = ", ".join(names[i] for i in members[:3]) + (", ..." if len(members) > 3 else "")
        parts.append(f"{fmt(rep)} in {len(members)} slice(s) ({sample})")
    raise SeriesGeometryError(
        f"{label} mixes {what}: " + "; ".join(parts)
        + ". A volume needs one grid; split the series or remove the odd files"
    )


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))


@dataclass(frozen=True)
class SeriesPlan:
    """A series checked and sorted from its headers alone (no pixel decoded yet).

    Everything :func:`load_series` will return except the voxels: importers use it to record
    shape, affine and slice order cheaply, and to refuse a bad series before decoding it.
    """

    series: SeriesHeaders
    frames: list[FrameRef]  #: per a0 index
    geometry: StackGeometry
    shape: tuple[int, int, int]
    warnings: list[str]
    label: str

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        return self.geometry.affine

    @property
    def files(self) -> list[Path]:
        """The distinct source files in a0 order (one per slice for classic series)."""
        seen: dict[int, None] = {}
        for f in self.frames:
            seen.setdefault(f.file, None)
        return [self.series.headers[i].path for i in seen]

    @property
    def instance_numbers(self) -> list[int | None]:
        """InstanceNumber per a0 index (RSNA's slice_number)."""
        return [self.series.headers[f.file].instance_number for f in self.frames]


def _decode_workers(headers: Sequence[FileHeader]) -> int:
    """Threads worth using for decoding: several only when some files need a codec.

    Native pixel data is a plain copy from the page cache, fastest in one thread; codecs
    (OpenJPEG, CharLS, GDCM) release the GIL for part of their work, so threads help there.
    """
    if all(h.pixel_offset is not None for h in headers):
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def plan_series(
    source: SeriesHeaders | Sequence[Path | str] | Path | str,
    *,
    workers: int = 1,
) -> SeriesPlan:
    """Check and sort a series from its headers: slice order, affine, warnings; no pixels read.

    Args:
        source: as for :func:`load_series`.
        workers: threads for the header pass when ``source`` is files or a folder (pydicom's
            parsing holds the GIL, so more than one pays off only on slow or network storage).

    Raises:
        SeriesGeometryError: fewer than 2 slices, missing ImagePositionPatient/Orientation,
            mixed image sizes, pixel spacings or orientations, duplicate positions.
        UnsupportedTransferSyntax: no installed decoder for the files' transfer syntax.
        DicomError: unreadable or non-image files among explicitly given ones; several series.
    """
    series, warnings = _resolve_series(source, max(1, workers))
    headers = series.headers
    label = f"series {series.series_uid}"
    if series.description:
        label += f" ({series.description})"

    frames = [FrameRef(i, j, g) for i, h in enumerate(headers) for j, g in enumerate(h.frames)]
    names = [_frame_name(headers[f.file], f.frame) for f in frames]
    if len(frames) < 2:
        raise SeriesGeometryError(
            f"{label} has only one slice; a volume needs at least 2 ({names[0] if names else '-'}); "
            "import the folder with all the slices of the series"
        )
    positions: list[tuple[float, float, float]] = []
    orientations: list[tuple[float, float, float, float, float, float]] = []
    missing: list[str] = []
    for name, f in zip(names, frames):
        if f.geom.position is None or f.geom.orientation is None:
            missing.append(name)
        else:
            positions.append(f.geom.position)
            orientations.append(f.geom.orientation)
    if missing:
        raise SeriesGeometryError(
            f"{label}: {len(missing)} slice(s) lack ImagePositionPatient/ImageOrientationPatient "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); without them the "
            "slices cannot be placed in the patient — this is not a cross-sectional image series"
        )
    if any(h.samples_per_pixel != 1 for h in headers):
        raise DicomError(f"{label}: colour images (SamplesPerPixel > 1) are not a CT/MR volume")
    rows, cols = _common([(h.rows, h.columns) for h in headers for _ in h.frames], "image sizes",
                         label, names, lambda a, b: a == b, lambda rc: f"{rc[0]}×{rc[1]}")
    orientation = _common(orientations, "slice orientations", label,
                          names, same_orientation, format_orientation)
    spacing_values = [f.geom.pixel_spacing for f in frames if f.geom.pixel_spacing is not None]
    if len(spacing_values) != len(frames):
        raise SeriesGeometryError(f"{label}: PixelSpacing is missing; the in-plane voxel size "
                                  "is unknown")
    spacing = _common(spacing_values, "pixel spacings", label, names, _close,
                      lambda ps: f"{ps[0]:g}×{ps[1]:g} mm")
    _common([h.bits_allocated for h in headers], "BitsAllocated", label,
            [h.path.name for h in headers], lambda a, b: a == b)
    geo = stack_geometry(positions, orientation, spacing, names, label)
    for ts in sorted({h.transfer_syntax for h in headers}):
        check_decodable(ts, where=f"{label}: ")
    return SeriesPlan(
        series=series,
        frames=[frames[i] for i in geo.order],
        geometry=geo,
        shape=(len(frames), rows, cols),
        warnings=warnings + geo.warnings,
        label=label,
    )


def load_series(
    source: SeriesHeaders | SeriesPlan | Sequence[Path | str] | Path | str,
    *,
    workers: int | None = None,
) -> Volume:
    """Decode one series into a Volume (axes slice/row/column, LPS affine; see spine_core.volume).

    Args:
        source: a :class:`SeriesHeaders` from :func:`scan_dicom_tree`, a :class:`SeriesPlan`,
            the files of one series, or a folder/file holding exactly one series. Files given
            explicitly must all be readable; non-DICOM files in a given folder are skipped with
            a warning.
        workers: threads reading headers and decoding slices. Default: headers in one thread,
            decoding in up to 8 threads when some files are compressed, else one (measured
            fastest; see benchmarks/bench_dicom_read.py).

    Returns:
        int16 HU when every slice's RescaleSlope/Intercept give exact integers within int16,
        else float32 (never float64). ``meta`` holds study_uid, series_uid, modality,
        instance_numbers, frame_numbers, sop_uids, files and positions (all per a0 index),
        warnings, geometry_issues, transfer_syntaxes, rescale, and descriptive tags.

    Raises:
        SeriesGeometryError, UnsupportedTransferSyntax, DicomError: see :func:`plan_series`;
        DicomError also for pixel data that cannot be decoded.
    """
    plan = (source if isinstance(source, SeriesPlan)
            else plan_series(source, workers=workers if workers is not None else 1))
    headers = plan.series.headers
    n_workers = workers if workers is not None else _decode_workers(headers)
    array, rescale_note = decode_stack(headers, plan.frames, n_workers)
    warnings = list(plan.warnings) + ([rescale_note] if rescale_note else [])
    meta = _meta(plan.series, headers, plan.frames, plan.geometry, warnings, array.dtype)
    return Volume(array, plan.geometry.affine, meta)


def _frame_name(h: FileHeader, frame: int) -> str:
    return h.path.name if h.n_frames == 1 else f"{h.path.name}[frame {frame + 1}]"


def _meta(
    series: SeriesHeaders,
    headers: Sequence[FileHeader],
    frames: Sequence[FrameRef],
    geo: StackGeometry,
    warnings: list[str],
    dtype: np.dtype[Any],
) -> dict[str, Any]:
    """JSON-friendly provenance for Volume.meta (lists are per a0 index)."""
    first = headers[frames[0].file]
    tags = dict(first.tags)
    slopes = sorted({f.geom.slope for f in frames})
    inters = sorted({f.geom.intercept for f in frames})
    return {
        "study_uid": series.study_uid,
        "series_uid": series.series_uid,
        "modality": series.modality,
        "patient_id": series.patient_id,
        "series_description": series.description,
        **{k: v for k, v in tags.items() if k not in ("patient_id", "series_description")},
        "instance_numbers": [headers[f.file].instance_number for f in frames],
        "frame_numbers": [f.frame + 1 for f in frames],
        "sop_uids": [headers[f.file].sop_uid for f in frames],
        "files": [str(headers[f.file].path) for f in frames],
        "positions": [list(f.geom.position or ()) for f in frames],
        "transfer_syntaxes": sorted({h.transfer_syntax for h in headers}),
        "photometric": first.photometric,
        "rescale": {"slopes": slopes, "intercepts": inters},
        "dtype": str(dtype),
        "gantry_tilt_deg": round(geo.tilt_deg, 4),
        "max_grid_error_mm": round(geo.max_grid_error_mm, 4),
        "geometry_issues": list(geo.issues),
        "warnings": list(warnings),
    }
