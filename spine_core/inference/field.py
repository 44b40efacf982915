"""The CT models' field: which studies they can label, and a clear refusal for the others.

The demo models were trained on thin-slice spine CT (phantoms with 0.6–1.25 mm slices reaching
from the skull base to the upper thoracic spine). Outside that field they still answer, and their
answer is confidently wrong: on a head CT the segmentation scatters cervical labels over the skull
base; on 5 mm slices vertebrae blur into each other and the fracture classifier sees "fracture
lines" in the interpolation. :class:`~spine_core.inference.local.LocalPredictor` therefore checks
each CT study twice and raises :class:`~spine_core.errors.OutOfFieldError`, whose one-line message
starts with ``cannot label this study:``:

* before the network, from the header (:func:`header_problem`): at least :data:`MIN_SLICES`
  slices spanning :data:`MIN_CRANIOCAUDAL_MM` along the body's head–foot axis, and no voxel side
  over :data:`MAX_VOXEL_MM`;
* after segmentation (:func:`column_problem`): the labelled levels must include a spine-like
  column, :data:`MIN_COLUMN_LEVELS` consecutive levels of at least :data:`MIN_LEVEL_ML` each whose
  centroids step from head to foot by :data:`LEVEL_STEP_MM`, shifting sideways by at most
  :data:`MAX_LEVEL_SHIFT_MM`. Labels scattered over a skull give no such column.

``spine serve`` answers the error with HTTP 422 ``out_of_field`` and
:class:`~spine_core.inference.client.HttpPredictor` raises the same error with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from spine_core.errors import OutOfFieldError
from spine_core.labels import level_name
from spine_core.volume import Volume

#: Start of every refusal's message.
PREFIX = "cannot label this study: "
#: Fewest slices along the head–foot axis.
MIN_SLICES = 8
#: Shortest head–foot span, in mm: room for three cervical vertebrae.
MIN_CRANIOCAUDAL_MM = 40.0
#: Coarsest voxel side, in mm. The models resample to 2.5 mm; slices 3–4 mm apart (as in the
#: smallest phantoms the tests predict on, 48 slices) still label, 5 mm thick-slice
#: reconstructions are refused (vertebrae and fracture lines blur; the fracture scores go wild).
MAX_VOXEL_MM = 4.5
#: Smallest volume of a labelled level that counts as a vertebra, in mL (an adult cervical
#: vertebra is 5–12 mL; a level cut by the field of view may be smaller, hence the margin).
MIN_LEVEL_ML = 1.0
#: Consecutive vertebra-sized levels that make a spine-like column.
MIN_COLUMN_LEVELS = 3
#: Head-to-foot step between the centroids of neighbouring levels, in mm (cervical ~15 mm,
#: lumbar ~35 mm).
LEVEL_STEP_MM = (5.0, 60.0)
#: Largest sideways (left-right and front-back) shift between the centroids of neighbouring
#: levels, in mm: a column bends slowly, labels scattered over a skull do not.
MAX_LEVEL_SHIFT_MM = 25.0


def refuse(reason: str) -> OutOfFieldError:
    """The error for ``reason`` (one line, :data:`PREFIX` first)."""
    return OutOfFieldError(PREFIX + " ".join(reason.split()))


def head_foot_axis(volume: Volume) -> int:
    """The voxel axis (0, 1 or 2) closest to the patient's head–foot (LPS z) direction."""
    directions = np.asarray(volume.affine, dtype=np.float64)[:3, :3] / np.asarray(volume.spacing)
    return int(np.argmax(np.abs(directions[2])))


def header_problem(volume: Volume) -> str | None:
    """Why the models cannot label ``volume``, from its shape and voxel size alone, or None."""
    axis = head_foot_axis(volume)
    n = int(volume.shape[axis])
    spacing = [float(v) for v in volume.spacing]
    step = spacing[axis]
    span = n * step
    if n < MIN_SLICES or span < MIN_CRANIOCAUDAL_MM:
        return (f"it has {n} slice{'s' if n != 1 else ''} covering {span:.3g} mm from head to foot; "
                f"the models need a stack of at least {MIN_SLICES} slices over "
                f"{MIN_CRANIOCAUDAL_MM:.0f} mm or more (load the whole series)")
    if max(spacing) > MAX_VOXEL_MM:
        sizes = "×".join(f"{v:.2g}" for v in spacing)
        what = (f"its slices are {step:.2g} mm apart" if step == max(spacing)
                else f"its voxels are {sizes} mm")
        return (f"{what}, coarser than the {MAX_VOXEL_MM:g} mm the models accept; load a thin-slice "
                "(bone) reconstruction of the series")
    return None


def column_problem(
    labels: npt.NDArray[np.integer],
    voxel_mm3: float,
    centroids: Mapping[int, Sequence[float]],
) -> str | None:
    """Why the labelled levels are no spine (no :data:`MIN_COLUMN_LEVELS` consecutive levels of
    :data:`MIN_LEVEL_ML` stacked head to foot), or None.

    ``labels`` are canonical level ids on a grid of ``voxel_mm3`` voxels (the model grid);
    ``centroids`` level id -> LPS mm (z grows towards the head).
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))
    sized = {lid for lid in centroids
             if 0 < lid < counts.size and counts[lid] * voxel_mm3 / 1000.0 >= MIN_LEVEL_ML}
    best = run = 0
    for lid in sorted(sized):
        run = run + 1 if lid - 1 in sized and _stacked(centroids[lid - 1], centroids[lid]) else 1
        best = max(best, run)
    if best >= MIN_COLUMN_LEVELS:
        return None
    found = ", ".join(level_name(v) for v in sorted(sized)) or "none"
    return (f"the models find no spine-like column of vertebrae in it (vertebra-sized levels: "
            f"{found}; a column is {MIN_COLUMN_LEVELS} neighbouring levels stacked from head to foot); "
            "they label the cervical and upper thoracic spine on spine CT, so a head CT or a lower "
            "spine alone is outside their field")


def _stacked(upper: Sequence[float], lower: Sequence[float]) -> bool:
    """Whether ``lower`` lies below ``upper`` (LPS mm) as the next vertebra of a column does."""
    lo, hi = LEVEL_STEP_MM
    step = float(upper[2]) - float(lower[2])
    shift = float(np.hypot(float(upper[0]) - float(lower[0]), float(upper[1]) - float(lower[1])))
    return lo <= step <= hi and shift <= MAX_LEVEL_SHIFT_MM
