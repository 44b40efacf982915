"""`Volume`: a voxel array with the affine that places it in the patient.

The one geometric convention of the project
-------------------------------------------
* ``Volume.array`` has axes in the order ``(a0, a1, a2)``. For a DICOM series these are
  ``(slice, row, column)``: ``array[k, j, i]`` is pixel ``(row j, column i)`` of the ``k``-th slice
  after sorting by position along the slice normal (ascending).
* ``Volume.affine`` is a 4×4 matrix mapping an index **in array-axis order** to patient coordinates
  in millimetres in **LPS** (DICOM's patient coordinate system: +x towards the patient's Left,
  +y Posterior, +z Superior)::

      [x, y, z, 1]^T = affine @ [a0, a1, a2, 1]^T

  so column ``c`` of the affine is the step in mm along array axis ``c``. For a DICOM slice stack,
  column 0 is the inter-slice step, column 1 is ``row_spacing * column_cosines`` direction of
  increasing row index (DICOM's column direction cosine), column 2 is
  ``column_spacing * row_cosines``.
* NIfTI (RAS, index order ``i, j, k`` with ``data[i, j, k]``) is converted at the edge by
  :func:`from_nifti_arrays` / :meth:`Volume.to_nifti_arrays`; nothing else in the code base
  knows about RAS.

Axis codes (``"L"``, ``"P"``, ``"S"``...) name the patient direction an array axis *increases towards*,
as nibabel's ``aff2axcodes`` does, but in LPS terms they are the same letters: codes describe the
anatomy, not the coordinate system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: LPS <-> RAS: flip the sign of x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Array-axis order (a0, a1, a2) <-> NIfTI order (i, j, k): reverse the axes.
_REVERSE_AXES = np.array(
    [[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)

#: Canonical display orientation: axial slices ascending towards Superior, rows towards Posterior,
#: columns towards patient Left (a standard axial DICOM stack is already in this orientation).
CANONICAL_AXCODES: tuple[str, str, str] = ("S", "P", "L")

_POSITIVE_CODES = ("L", "P", "S")
_NEGATIVE_CODES = ("R", "A", "I")


@dataclass(frozen=True)
class Volume:
    """A 3-D image or label map with its LPS affine (see module docstring for the convention).

    Attributes:
        array: voxel values, axes (a0, a1, a2); int16 HU for CT, small unsigned ints for masks.
            May be a read-only memory map.
        affine: 4×4 float64, array index (a0, a1, a2) -> LPS mm.
        meta: free-form provenance (series UID, instance numbers per a0 index, warnings...).
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D, got shape {self.array.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise ValueError("affine is singular (zero spacing or parallel axes)")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> npt.NDArray[np.float64]:
        """Voxel size in mm along (a0, a1, a2)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Patient direction each array axis increases towards, e.g. ``("S", "P", "L")``."""
        return axcodes_from_affine(self.affine)

    def index_to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (…, 3) array indices (a0, a1, a2) to LPS millimetres."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, point: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (…, 3) LPS millimetres to fractional array indices (a0, a1, a2)."""
        inv = np.linalg.inv(self.affine)
        pts = np.asarray(point, dtype=np.float64)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def reoriented(self, axcodes: tuple[str, str, str] = CANONICAL_AXCODES) -> Volume:
        """Same voxels, axes permuted/flipped (no resampling) so they point along ``axcodes``.

        The affine is updated so every voxel keeps its patient position. Oblique volumes are
        brought to the *closest* orientation, as nibabel's ``as_closest_canonical`` does.
        """
        import nibabel.orientations as nio

        # nibabel works on "axis -> world axis, sign" in its own RAS world; our LPS world is only a
        # renaming of the labels, so use LPS labels directly with nibabel's pure functions.
        src = nio.io_orientation(self.affine)
        dst = nio.axcodes2ornt(axcodes, labels=(("R", "L"), ("A", "P"), ("I", "S")))
        transform = nio.ornt_transform(src, dst)
        if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
            return self
        array = nio.apply_orientation(self.array, transform)
        inv_aff = nio.inv_ornt_aff(transform, self.array.shape)
        return Volume(np.ascontiguousarray(array), self.affine @ inv_aff, dict(self.meta))

    def with_array(self, array: npt.NDArray[Any], **meta: Any) -> Volume:
        """A volume on the same grid with other voxel values (e.g. a mask of this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the grid {self.array.shape}")
        return Volume(array, self.affine.copy(), {**self.meta, **meta})

    def to_nifti_arrays(self) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
        """(data[i, j, k], RAS affine) as nibabel expects them."""
        data = np.transpose(self.array, (2, 1, 0))
        return data, LPS_TO_RAS @ self.affine @ _REVERSE_AXES


def from_nifti_arrays(
    data: npt.NDArray[Any], ras_affine: npt.ArrayLike, meta: dict[str, Any] | None = None
) -> Volume:
    """Build a Volume from nibabel's (data[i, j, k], RAS affine) pair (no copy of the voxels)."""
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {data.shape}")
    affine = LPS_TO_RAS @ np.asarray(ras_affine, dtype=np.float64) @ _REVERSE_AXES
    return Volume(np.transpose(data, (2, 1, 0)), affine, meta or {})


def axcodes_from_affine(affine: npt.ArrayLike) -> tuple[str, str, str]:
    """Closest patient direction (LPS letters) each array axis increases towards."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(np.asarray(affine, dtype=np.float64))
    codes = nio.ornt2axcodes(ornt, labels=(("R", "L"), ("A", "P"), ("I", "S")))
    return tuple(str(c) for c in codes)  # type: ignore[return-value]


def affine_from_dicom(
    first_position: npt.ArrayLike,
    row_cosines: npt.ArrayLike,
    column_cosines: npt.ArrayLike,
    pixel_spacing: tuple[float, float],
    slice_step: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """Affine of a slice stack in our convention.

    Args:
        first_position: ImagePositionPatient of the first slice (after sorting), LPS mm.
        row_cosines: first triplet of ImageOrientationPatient (direction of increasing column index).
        column_cosines: second triplet (direction of increasing row index).
        pixel_spacing: PixelSpacing as stored: (spacing between rows, spacing between columns).
        slice_step: vector in mm from one slice's position to the next (a0 step).
    """
    row_spacing, col_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])
    aff = np.eye(4)
    aff[:3, 0] = np.asarray(slice_step, dtype=np.float64)
    aff[:3, 1] = np.asarray(column_cosines, dtype=np.float64) * row_spacing
    aff[:3, 2] = np.asarray(row_cosines, dtype=np.float64) * col_spacing
    aff[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return aff
