"""Geometry of a DICOM slice stack: orientation groups, sorting along the normal, the affine.

Pure functions over numbers (no file access), so every rule can be tested with plain arrays.
Slices are sorted by their position along the slice normal ``n = row_cosines × column_cosines``
(never by InstanceNumber or file name). The affine comes from
:func:`spine_core.volume.affine_from_dicom` with the **mean step vector** between consecutive
positions as its slice column, so gantry tilt is represented exactly (a sheared grid), not
"fixed" by resampling. Anything irregular is reported by name, never silently corrected:
duplicates raise :class:`~spine_core.errors.SeriesGeometryError`; gaps, uneven spacing, tilt and
off-grid positions become warnings with a machine code in ``StackGeometry.issues``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.errors import SeriesGeometryError
from spine_core.volume import affine_from_dicom

#: Two orientations are the same when no direction cosine differs by more than this (≈0.06°).
ORIENTATION_TOL = 1e-3
#: Two slices closer than this along the normal occupy the same position.
DUPLICATE_TOL_MM = 0.01
#: A step longer than this many median steps means missing slices.
GAP_FACTOR = 1.5
#: A step differing from the median by more than max(abs, rel × median) is "uneven".
UNEVEN_ABS_MM, UNEVEN_REL = 0.01, 0.01
#: The slice step is "tilted" when it leaves the normal by more than both of these.
TILT_MIN_DEG, TILT_MIN_MM = 0.05, 0.05
#: Largest positional error of the regular grid tolerated without an "irregular positions" note.
GRID_TOL_MM = 0.05


def same_orientation(a: Sequence[float], b: Sequence[float]) -> bool:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= ORIENTATION_TOL


def orientation_groups(
    orientations: Sequence[Sequence[float] | None],
) -> list[tuple[tuple[float, ...] | None, list[int]]]:
    """Group indices by orientation (within tolerance), largest group first."""
    groups: list[tuple[tuple[float, ...] | None, list[int]]] = []
    for i, ori in enumerate(orientations):
        for rep, members in groups:
            if (rep is None and ori is None) or (
                rep is not None and ori is not None and same_orientation(rep, ori)
            ):
                members.append(i)
                break
        else:
            groups.append((tuple(ori) if ori is not None else None, [i]))
    groups.sort(key=lambda g: -len(g[1]))
    return groups


def format_orientation(ori: Sequence[float] | None) -> str:
    return "none" if ori is None else "[" + ", ".join(f"{v:.3g}" for v in ori) + "]"


@dataclass(frozen=True)
class StackGeometry:
    """Sorted order, affine and the findings of :func:`stack_geometry`."""

    order: npt.NDArray[np.intp]  #: input index of each a0 index (ascending along the normal)
    affine: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    warnings: list[str]
    issues: list[str]  #: machine codes: missing_slices, uneven_spacing, gantry_tilt, irregular_positions
    tilt_deg: float
    max_grid_error_mm: float


def stack_geometry(
    positions: npt.ArrayLike,
    orientation: Sequence[float],
    pixel_spacing: tuple[float, float],
    names: Sequence[str],
    label: str = "series",
) -> StackGeometry:
    """Sort slices along the normal, check the spacing, and build the affine.

    Args:
        positions: (N, 3) ImagePositionPatient of each slice (any order).
        orientation: the common ImageOrientationPatient (row cosines, then column cosines).
        pixel_spacing: the common PixelSpacing (between rows, between columns).
        names: a short name per slice (file name) used in messages.
        label: how messages name the series.

    Raises:
        SeriesGeometryError: fewer than 2 slices, non-orthonormal orientation, or duplicate
            positions (the files are named).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    if n < 2:
        raise SeriesGeometryError(
            f"{label} has only one slice; a volume needs at least 2"
            + (f" ({names[0]})" if names else "")
        )
    row_cos = np.asarray(orientation[:3], dtype=np.float64)
    col_cos = np.asarray(orientation[3:6], dtype=np.float64)
    if (abs(np.linalg.norm(row_cos) - 1) > 1e-3 or abs(np.linalg.norm(col_cos) - 1) > 1e-3
            or abs(float(row_cos @ col_cos)) > 1e-3):
        raise SeriesGeometryError(
            f"{label}: ImageOrientationPatient {format_orientation(orientation)} is not two "
            "orthogonal unit vectors; the files' geometry is damaged"
        )
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    steps = np.diff(d)
    dup = np.flatnonzero(steps < DUPLICATE_TOL_MM)
    if dup.size:
        pairs = "; ".join(
            f"{names[order[i]]} and {names[order[i + 1]]} at {d[i]:.3f} mm" for i in dup[:5]
        )
        more = f" (and {dup.size - 5} more pairs)" if dup.size > 5 else ""
        raise SeriesGeometryError(
            f"{label}: {dup.size} duplicate slice position(s) along the normal: {pairs}{more}. "
            "The series probably holds several acquisitions or reconstructions; separate them "
            "(e.g. by AcquisitionNumber) and load one at a time"
        )
    sorted_pos = pos[order]
    step = (sorted_pos[-1] - sorted_pos[0]) / (n - 1)
    affine = affine_from_dicom(sorted_pos[0], row_cos, col_cos, pixel_spacing, step)
    warnings: list[str] = []
    issues: list[str] = []
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    for i in gaps:
        missing = int(round(steps[i] / median)) - 1
        warnings.append(
            f"missing slices: gap of {steps[i]:.3f} mm between {names[order[i]]} and "
            f"{names[order[i + 1]]} (a0 {i}–{i + 1}; median step {median:.3f} mm, about "
            f"{max(missing, 1)} slice(s) missing); the regular grid of the affine does not "
            "match those slices — check the export is complete"
        )
    if gaps.size:
        issues.append("missing_slices")
    uneven_tol = max(UNEVEN_ABS_MM, UNEVEN_REL * median)
    uneven = np.flatnonzero((np.abs(steps - median) > uneven_tol) & (steps <= GAP_FACTOR * median))
    if uneven.size:
        issues.append("uneven_spacing")
        warnings.append(
            f"uneven spacing: steps along the normal range {steps.min():.3f}–{steps.max():.3f} mm "
            f"(median {median:.3f} mm, {uneven.size} step(s) off by more than {uneven_tol:.3f} mm); "
            "the affine uses the mean step"
        )
    along = float(step @ normal)
    perp = float(np.linalg.norm(step - along * normal))
    tilt = float(np.degrees(np.arctan2(perp, abs(along))))
    if tilt > TILT_MIN_DEG and perp * (n - 1) > TILT_MIN_MM:
        issues.append("gantry_tilt")
        warnings.append(
            f"gantry tilt: the slice step leaves the slice normal by {tilt:.2f}°; the affine "
            "keeps the shear exactly (the volume is not resampled), so voxels are not on an "
            "orthogonal grid"
        )
    predicted = sorted_pos[0] + np.arange(n)[:, None] * step
    grid_err = np.linalg.norm(sorted_pos - predicted, axis=1)
    max_err = float(grid_err.max())
    if max_err > GRID_TOL_MM:
        worst = int(np.argmax(grid_err))
        if not issues or issues == ["gantry_tilt"]:
            issues.append("irregular_positions")
        warnings.append(
            f"irregular positions: the affine places slice a0={worst} ({names[order[worst]]}) "
            f"{max_err:.3f} mm from its ImagePositionPatient; use meta['positions'] where exact "
            "slice positions matter"
        )
    return StackGeometry(order, affine, normal, warnings, issues, tilt, max_err)


