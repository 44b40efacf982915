"""Bring a segmentation mask onto its image's voxel grid, through the affines, never by guessing.

Two cases:

* **Same grid, other axis order.** A mask may be stored in any of the 48 axis orientations
  (3! permutations × 2³ flips) relative to its image, e.g. RSNA's sagittal NIfTI masks over
  axial DICOM stacks. nibabel's ``io_orientation`` / ``ornt_transform`` / ``apply_orientation``
  permute and flip the voxels (no resampling); the result is accepted when its shape equals the
  image's and the two affines put every grid corner within ``atol_mm`` of each other.
* **Different grid** (spacing, shape, origin or rotation differ). Each image voxel takes the label
  of the mask voxel whose centre is nearest to it (an exact index mapping through the affines,
  rounding half up), and a warning says how far the grids differ. A mask that does not reach the
  image at all is an error.

Labels are mapped to canonical level ids (:mod:`spine_core.labels`) before anything else, so an
unknown value is reported whether or not it lies inside the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel.orientations as nio
import numpy as np
import numpy.typing as npt

from spine_core.errors import LabelVocabularyError, MaskError
from spine_core.labels import LEVEL_NAMES, TOTALSEG_NAMES, LabelVocabulary, present_values
from spine_core.volume import Volume

#: Default grid-coincidence tolerance as a fraction of the image's smallest voxel size.
DEFAULT_TOLERANCE_VOXELS = 1e-3


@dataclass(frozen=True)
class AlignedMask:
    """A label map on the image grid.

    Attributes:
        array: uint8 canonical level ids, same shape as the image array (axes a0, a1, a2).
        warnings: human-readable notes a page should show (resampling, lost levels, header issues).
        resampled: True when nearest-neighbour resampling was needed (grids differed).
    """

    array: npt.NDArray[np.uint8]
    warnings: list[str] = field(default_factory=list)
    resampled: bool = False

    @property
    def levels(self) -> tuple[int, ...]:
        """Canonical level ids present (0 excluded)."""
        return tuple(int(v) for v in present_values(self.array) if v != 0)


def align_mask_to_image(
    mask: Volume,
    image: Volume,
    *,
    vocabulary: LabelVocabulary,
    atol_mm: float | None = None,
    source: str | None = None,
) -> AlignedMask:
    """Map ``mask`` to canonical ids and put it on ``image``'s grid (see module docstring).

    Args:
        mask: label map with its own affine (any orientation).
        image: the volume whose grid the result must have.
        vocabulary: how the mask's values map to canonical level ids.
        atol_mm: largest corner distance (mm) for two grids to count as the same; default
            ``1e-3`` of the image's smallest voxel size.
        source: name used in messages (default: ``mask.meta["source_path"]`` or "mask").

    Raises:
        LabelVocabularyError: the mask holds values outside ``vocabulary`` (named in the message).
        MaskError: the mask grid does not overlap the image at all.
    """
    name = source or str(mask.meta.get("source_path", "mask"))
    tol = atol_mm if atol_mm is not None else DEFAULT_TOLERANCE_VOXELS * float(image.spacing.min())
    canonical = vocabulary.canonical(mask.array, source=name)
    warnings = [f"{name}: {w}" for w in mask.meta.get("warnings", ())]

    oriented, oriented_affine = _reorient_like(canonical, mask.affine, image.affine)
    if oriented.shape == image.shape and _corner_distance(oriented_affine, image.affine, image.shape) <= tol:
        return AlignedMask(np.ascontiguousarray(oriented), warnings, resampled=False)

    out = _resample_nearest(oriented, oriented_affine, image)
    if out is None:
        raise MaskError(
            f"{name}: the mask does not overlap the image at all "
            f"({_grid_summary(oriented, oriented_affine, image)}); "
            "it belongs to another series or its header is wrong"
        )
    warnings.append(
        f"{name}: mask grid differs from the image grid ({_grid_summary(oriented, oriented_affine, image)}); "
        "resampled nearest-neighbour onto the image grid — check the overlay"
    )
    lost = sorted(set(present_values(canonical).tolist()) - set(present_values(out).tolist()) - {0})
    if lost:
        names = ", ".join(LEVEL_NAMES.get(v, str(v)) for v in lost)
        warnings.append(f"{name}: levels {names} lie outside the image and were dropped")
    return AlignedMask(out, warnings, resampled=True)


def load_aligned_mask(
    path: Path | str,
    image: Volume,
    *,
    vocabulary: LabelVocabulary,
    atol_mm: float | None = None,
) -> AlignedMask:
    """Read a label-map NIfTI and align it to ``image`` (see :func:`align_mask_to_image`)."""
    from spine_core.io.nifti import load_nifti

    return align_mask_to_image(
        load_nifti(path), image, vocabulary=vocabulary, atol_mm=atol_mm, source=str(path)
    )


def totalseg_class_files(folder: Path) -> dict[Path, int]:
    """TotalSegmentator per-class vertebra files of ``folder`` -> canonical level id.

    Other classes (organs, ribs...) are ignored; a ``vertebrae_*`` file whose name is not a known
    level is an error, so a renamed or new class is never silently dropped.
    """
    from spine_core.io.nifti import is_nifti_name, nifti_stem

    found: dict[Path, int] = {}
    unknown: list[str] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_nifti_name(path):
            continue
        stem = nifti_stem(path)
        if stem in TOTALSEG_NAMES:
            found[path] = TOTALSEG_NAMES[stem]
        elif stem.startswith("vertebrae_"):
            unknown.append(path.name)
    if unknown:
        raise LabelVocabularyError(
            f"{folder}: {unknown} are not TotalSegmentator vertebra classes we know "
            f"(expected {sorted(TOTALSEG_NAMES)[:3]}...); rename them or update the vocabulary"
        )
    return found


def combine_class_masks(
    classes: Iterable[tuple[Volume, int, str]],
    image: Volume,
    *,
    atol_mm: float | None = None,
) -> AlignedMask:
    """Merge binary per-class masks (each 0/1 with its canonical id) into one label map on ``image``.

    Where two classes claim one voxel the later one wins and a warning counts the voxels.
    """
    out = np.zeros(image.shape, dtype=np.uint8)
    warnings: list[str] = []
    resampled = False
    for volume, level, name in classes:
        aligned = align_mask_to_image(
            volume, image, vocabulary=_binary_vocabulary(level), atol_mm=atol_mm, source=name
        )
        hit = aligned.array != 0
        clash = int(np.count_nonzero(hit & (out != 0) & (out != level)))
        if clash:
            warnings.append(
                f"{name}: {clash} voxels were already labelled by another class; {LEVEL_NAMES[level]} kept"
            )
        out[hit] = level
        warnings.extend(aligned.warnings)
        resampled |= aligned.resampled
    return AlignedMask(out, warnings, resampled)


def load_totalseg_folder(folder: Path, image: Volume, *, atol_mm: float | None = None) -> AlignedMask:
    """Read a TotalSegmentator ``segmentations/`` folder of per-class files onto ``image``."""
    from spine_core.io.nifti import load_nifti

    files = totalseg_class_files(folder)
    if not files:
        raise MaskError(
            f"{folder}: no vertebrae_*.nii.gz (or sacrum) files; is this a TotalSegmentator output?"
        )
    return combine_class_masks(
        ((load_nifti(p), lvl, str(p)) for p, lvl in files.items()), image, atol_mm=atol_mm
    )


# --- geometry helpers ---------------------------------------------------------------------------


def _binary_vocabulary(level: int) -> LabelVocabulary:
    return LabelVocabulary(f"binary {LEVEL_NAMES[level]}", {1: level})


def _reorient_like(
    array: npt.NDArray[Any], affine: npt.NDArray[np.float64], target_affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Permute/flip ``array`` (a view) so its axes point as the target's do; affine follows."""
    transform = nio.ornt_transform(nio.io_orientation(affine), nio.io_orientation(target_affine))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return array, affine
    oriented = nio.apply_orientation(array, transform)
    return oriented, affine @ nio.inv_ornt_aff(transform, array.shape)


def _corners(shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    hi = [max(int(s) - 1, 0) for s in shape[:3]]
    return np.array([[i, j, k, 1.0] for i in (0, hi[0]) for j in (0, hi[1]) for k in (0, hi[2])])


def _corner_distance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where affines ``a`` and ``b`` put the corners of ``shape``."""
    return float(np.max(np.linalg.norm((_corners(shape) @ (a - b).T)[:, :3], axis=1)))


def _grid_summary(array: npt.NDArray[Any], affine: npt.NDArray[np.float64], image: Volume) -> str:
    """Shapes, spacing difference, origin offset and largest corner offset, for messages."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    parts = [
        f"mask shape {tuple(array.shape)} vs image {image.shape}",
        f"spacing differs by up to {float(np.max(np.abs(spacing - image.spacing))):.3g} mm",
        f"origin offset {float(np.linalg.norm(affine[:3, 3] - image.affine[:3, 3])):.3g} mm",
    ]
    if tuple(array.shape) == image.shape:
        parts.append(f"corners differ by up to {_corner_distance(affine, image.affine, image.shape):.3g} mm")
    return ", ".join(parts)


def _resample_nearest(
    array: npt.NDArray[np.uint8], affine: npt.NDArray[np.float64], image: Volume
) -> npt.NDArray[np.uint8] | None:
    """Nearest-neighbour labels of ``array`` at every image voxel; None when nothing overlaps."""
    to_mask = np.linalg.inv(affine) @ image.affine  # image index -> mask index
    linear = to_mask[:3, :3]
    off_diagonal = linear - np.diag(np.diag(linear))
    scale = np.abs(linear).max()
    if np.all(np.abs(off_diagonal) <= 1e-9 * max(scale, 1.0)):
        return _resample_axis_aligned(array, to_mask, image.shape)
    return _resample_general(array, to_mask, image.shape)


def _nearest(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Round half up, with a small slack so 2.4999999999 from float error rounds like 2.5."""
    return np.floor(coords + 0.5 + 1e-9).astype(np.int64)


def _resample_axis_aligned(
    array: npt.NDArray[np.uint8], to_mask: npt.NDArray[np.float64], shape: tuple[int, int, int]
) -> npt.NDArray[np.uint8] | None:
    """Separable case: each mask axis depends on one image axis, so index vectors suffice."""
    indices, valid = [], []
    for axis in range(3):
        idx = _nearest(to_mask[axis, axis] * np.arange(shape[axis]) + to_mask[axis, 3])
        ok = (idx >= 0) & (idx < array.shape[axis])
        if not ok.any():
            return None
        indices.append(idx[ok])
        valid.append(np.flatnonzero(ok))
    out = np.zeros(shape, dtype=np.uint8)
    out[np.ix_(*valid)] = array[np.ix_(*indices)]
    return out


def _resample_general(
    array: npt.NDArray[np.uint8], to_mask: npt.NDArray[np.float64], shape: tuple[int, int, int]
) -> npt.NDArray[np.uint8] | None:
    """Oblique case: map each image slab's voxel centres through the affine, one slab at a time."""
    out = np.zeros(shape, dtype=np.uint8)
    rows, cols = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    plane = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    base = plane @ to_mask[:3, 1:3].T + to_mask[:3, 3]
    limits = np.array(array.shape)
    any_hit = False
    for k in range(shape[0]):
        idx = _nearest(base + k * to_mask[:3, 0])
        ok = np.all((idx >= 0) & (idx < limits), axis=1)
        if not ok.any():
            continue
        any_hit = True
        slab = out[k].reshape(-1)
        slab[ok] = array[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    return out if any_hit else None


def describe_grid(volume: Volume) -> Mapping[str, Any]:
    """Shape, spacing, axis codes and origin of a volume, for logs and error messages."""
    return {
        "shape": volume.shape,
        "spacing_mm": tuple(round(float(s), 4) for s in volume.spacing),
        "axcodes": volume.axcodes,
        "origin_lps_mm": tuple(round(float(v), 3) for v in volume.affine[:3, 3]),
    }
