"""Geometry and intensity preprocessing shared by both stages, training and inference.

Everything is done through the affines of :mod:`spine_core.volume` (array index in array-axis
order -> LPS mm), so a volume in any orientation lands on the right voxels:

* :func:`model_grid` — the grid the segmentation network sees: the input's closest canonical
  orientation (``("S", "P", "L")``, as :meth:`Volume.reoriented`) at isotropic spacing.
* :func:`sample_onto` — trilinear / nearest sampling of a tensor onto any other grid with
  ``torch.nn.functional.grid_sample`` (one code path for resampling and for per-vertebra crops).
* :func:`labels_onto` — a label map brought back onto the input grid (nearest neighbour).
* :func:`window` — the CT intensity window, scaled to [0, 1] (air -> 0, so zero padding is air).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from spine_core.volume import CANONICAL_AXCODES, Volume

_LPS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))

#: Default CT window in HU, mapped linearly to [0, 1]: soft tissue to cortical bone (air, fat and
#: lung all become ~0, so zero padding matches what surrounds the body).
DEFAULT_WINDOW: tuple[float, float] = (-200.0, 1200.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape in array-axis order and its index -> LPS affine."""

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]

    @property
    def spacing(self) -> npt.NDArray[np.float64]:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def index_to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, point: npt.ArrayLike) -> npt.NDArray[np.float64]:
        inv = np.linalg.inv(self.affine)
        return np.asarray(point, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def window(array: npt.ArrayLike | torch.Tensor, hu_window: Sequence[float] = DEFAULT_WINDOW) -> torch.Tensor:
    """HU -> float32 in [0, 1]: clip to ``hu_window`` and scale linearly (one float32 copy)."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if isinstance(array, torch.Tensor):
        t = array.to(torch.float32, copy=True)
    else:
        t = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
    return t.clamp_(lo, hi).sub_(lo).div_(hi - lo)


def volume_tensor(volume: Volume, hu_window: Sequence[float] = DEFAULT_WINDOW) -> torch.Tensor:
    """The windowed image as a (1, 1, a0, a1, a2) float32 tensor on the input's own grid."""
    return window(np.asarray(volume.array), hu_window)[None, None]


def canonical_grid(grid: Grid, axcodes: tuple[str, str, str] = CANONICAL_AXCODES) -> Grid:
    """The same voxels with axes permuted/flipped towards ``axcodes`` (as ``Volume.reoriented``)."""
    src = nio.io_orientation(grid.affine)
    dst = nio.axcodes2ornt(axcodes, labels=_LPS_LABELS)
    transform = nio.ornt_transform(src, dst)
    affine = grid.affine @ nio.inv_ornt_aff(transform, grid.shape)
    shape = [0, 0, 0]
    for axis, (new_axis, _flip) in enumerate(transform):
        shape[int(new_axis)] = grid.shape[axis]
    return Grid((shape[0], shape[1], shape[2]), affine)


def model_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Canonical orientation at isotropic ``spacing_mm``, covering the same field of view.

    Each axis of ``n`` voxels at spacing ``s`` becomes ``round(n * s / spacing_mm)`` voxels whose
    *edges* coincide with the input's (the ``align_corners=False`` convention), so the step is
    exactly ``n * s / m`` ≈ ``spacing_mm``.
    """
    can = canonical_grid(grid)
    sp = can.spacing
    sizes = [max(1, int(round(n * s / spacing_mm))) for n, s in zip(can.shape, sp)]
    new_shape = (sizes[0], sizes[1], sizes[2])  # can.shape has 3 axes
    scale = np.array([n / m for n, m in zip(can.shape, new_shape)], dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = 0.5 * scale - 0.5
    return Grid(new_shape, can.affine @ index_map)


def _normalise_matrix(shape: Sequence[int]) -> npt.NDArray[np.float64]:
    """4×4: index (a0, a1, a2) -> grid_sample's normalised (x, y, z) = (a2, a1, a0), corners off."""
    m = np.zeros((4, 4))
    for axis in range(3):
        row = 2 - axis
        m[row, axis] = 2.0 / shape[axis]
        m[row, 3] = 1.0 / shape[axis] - 1.0
    m[3, 3] = 1.0
    return m


def sample_onto(
    source: torch.Tensor,
    source_affine: npt.ArrayLike,
    target: Grid,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Sample a (N, C, a0, a1, a2) tensor on ``target`` (outside the source: 0).

    ``mode`` is grid_sample's: "bilinear" (trilinear in 3-D) or "nearest".
    """
    src_shape = tuple(int(s) for s in source.shape[2:])
    index_map = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ target.affine
    theta = _normalise_matrix(src_shape) @ index_map @ np.linalg.inv(_normalise_matrix(target.shape))
    theta_t = torch.as_tensor(theta[:3], dtype=torch.float32, device=source.device)
    theta_t = theta_t[None].expand(source.shape[0], 3, 4)
    size = [int(source.shape[0]), int(source.shape[1]), *target.shape]
    grid = F.affine_grid(theta_t, size, align_corners=False)
    return F.grid_sample(
        source, grid.to(source.dtype), mode=mode, padding_mode="zeros", align_corners=False
    )


def labels_onto(
    labels: npt.NDArray[np.integer], labels_affine: npt.ArrayLike, target: Grid
) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour copy of a label map onto ``target`` (outside the source: 0).

    Grids whose axes are parallel (any permutation/flip/scale, the case between an input and its
    :func:`model_grid`) use an exact separable gather; oblique pairs fall back to
    ``scipy.ndimage.affine_transform`` with order 0.
    """
    m = np.linalg.inv(np.asarray(labels_affine, dtype=np.float64)) @ target.affine
    lin = m[:3, :3]
    perm = np.argmax(np.abs(lin), axis=0)  # source axis fed by each target axis
    off_axis = np.abs(lin).sum(axis=0) - np.abs(lin[perm, range(3)])
    if sorted(perm.tolist()) == [0, 1, 2] and np.all(off_axis < 1e-6 * np.abs(lin).max()):
        src = np.asarray(labels)
        index_arrays = []
        valid = []
        for t_axis in range(3):
            s_axis = int(perm[t_axis])
            coords = np.arange(target.shape[t_axis]) * lin[s_axis, t_axis] + m[s_axis, 3]
            idx = np.floor(coords + 0.5).astype(np.int64)
            ok = (idx >= 0) & (idx < src.shape[s_axis])
            index_arrays.append(np.clip(idx, 0, src.shape[s_axis] - 1))
            valid.append(ok)
        # Gather in source-axis order, then move axes to target order.
        order = [int(np.where(perm == s)[0][0]) for s in range(3)]  # target axis of each source axis
        gathered = src[np.ix_(*(index_arrays[t] for t in order))]
        out = np.transpose(gathered, np.argsort(order)).astype(np.uint8, copy=False)
        if not all(v.all() for v in valid):
            mask = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
            out = np.where(mask, out, 0).astype(np.uint8)
        return np.ascontiguousarray(out)
    from scipy.ndimage import affine_transform

    return affine_transform(
        np.asarray(labels, dtype=np.uint8), m[:3, :3], offset=m[:3, 3],
        output_shape=target.shape, order=0, mode="constant", cval=0,
    )


def crop_grid(
    center_lps: npt.ArrayLike,
    axes: npt.ArrayLike,
    shape: Sequence[int],
    spacing_mm: float,
) -> Grid:
    """A ``shape`` grid of ``spacing_mm`` voxels centred on ``center_lps``.

    ``axes`` is a 3×3 matrix whose columns are the unit directions of the crop's array axes (take
    them from the model grid so crops are canonical whatever the input orientation).
    """
    directions = np.asarray(axes, dtype=np.float64)
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    aff = np.eye(4)
    aff[:3, :3] = directions * spacing_mm
    half = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    aff[:3, 3] = np.asarray(center_lps, dtype=np.float64) - aff[:3, :3] @ half
    # ``shape`` has 3 entries: the affine above could not be computed otherwise.
    return Grid((int(shape[0]), int(shape[1]), int(shape[2])), aff)


def grid_of(volume: Volume) -> Grid:
    return Grid(volume.shape, volume.affine)
