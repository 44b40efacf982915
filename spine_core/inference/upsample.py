"""The segmentation's label map on the input grid, upsampled from the model grid's logits, with
trilinear interpolation only where it can change the answer.

The argmax of trilinearly interpolated logits is the argmax of a convex combination of the eight
surrounding model voxels' logit vectors. Where those eight voxels share one argmax ``c``, every
one of them has ``l[c] >= l[k]`` for all ``k``, and so has their combination: the answer is ``c``
without interpolating. Only target voxels whose eight model voxels disagree (near a boundary
between levels or with the background: a thin shell) need the interpolation, and only there is it
computed (``grid_sample`` on those points alone). The result equals interpolating everywhere.

This holds for model and target grids whose axes are parallel (any permutation, flip and
scale: the case between an input and its model grid), where each target axis reads one model
axis; other pairs return None and the caller interpolates everywhere.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

#: Marks the model grid's outside in the padded argmax map: a block touching it is never uniform.
OUTSIDE = 255


def first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index (uint8, on the CPU) of the largest of ``values`` along its first axis, the first one
    on ties, as ``argmax(dim=0)`` gives; one pass per channel over contiguous memory, several
    times faster than torch's strided reduction across channels on the CPU."""
    best = values[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=values.device)
    for c in range(1, int(values.shape[0])):
        larger = values[c] > best
        index[larger] = c
        torch.maximum(best, values[c], out=best)
    return index.cpu()


def parallel_axes(index_map: npt.NDArray[np.float64]) -> npt.NDArray[np.intp] | None:
    """For a target-index -> source-index map (4x4), the source axis each target axis reads, or
    None when the axes are not parallel."""
    lin = np.abs(index_map[:3, :3])
    perm = np.argmax(lin, axis=0)
    off_axis = lin.sum(axis=0) - lin[perm, range(3)]
    if sorted(perm.tolist()) != [0, 1, 2] or np.any(off_axis >= 1e-6 * lin.max()):
        return None
    return perm


def argmax_upsample(logits: torch.Tensor, lut: npt.NDArray[np.uint8], allowed: npt.NDArray[np.bool_],
                    index_map: npt.NDArray[np.float64], start: npt.NDArray[np.integer],
                    stop: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8] | None:
    """``lut`` of the argmax of ``logits`` (1, C, *model grid) trilinearly sampled at the target
    voxels ``start:stop`` (``index_map``: target index -> model index), 0 where the nearest model
    voxel is not ``allowed``; None when the grids' axes are not parallel (module docstring).

    Sampling follows ``grid_sample`` with ``align_corners=False`` and zero padding, as
    :func:`~spine_core.inference.preprocess.sample_onto` does.
    """
    perm = parallel_axes(index_map)
    if perm is None:
        return None
    src_shape = tuple(int(s) for s in logits.shape[2:])
    # each target axis: its model coordinates (1-D, separable), their floors and nearest voxels
    coords, floors, nearest = [], [], []
    for t in range(3):
        s = int(perm[t])
        c = np.arange(int(start[t]), int(stop[t]), dtype=np.float64) * index_map[s, t] + index_map[s, 3]
        coords.append(c)
        floors.append(np.floor(c).astype(np.int64))
        nearest.append(np.rint(c).astype(np.int64))
    best = first_argmax(logits[0]).numpy()  # index into lut, model grid
    padded = np.pad(best, 1, constant_values=OUTSIDE)
    corner = padded[:-1, :-1, :-1]
    uniform = np.ones(corner.shape, dtype=bool)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                if dz or dy or dx:
                    uniform &= padded[dz:dz + corner.shape[0], dy:dy + corner.shape[1],
                                      dx:dx + corner.shape[2]] == corner
    # padded index of a block's first corner is floor + 1; look both maps up on the target box
    order = np.argsort(perm)  # target axis feeding each model axis
    block = [np.clip(floors[int(order[s])] + 1, 0, corner.shape[s] - 1) for s in range(3)]
    axes = tuple(int(v) for v in perm)  # model-axis-ordered arrays -> target axis order
    is_uniform = uniform[np.ix_(*block)].transpose(axes)
    values = corner[np.ix_(*block)].transpose(axes)
    out = np.where(is_uniform, values, 0).astype(np.uint8)
    edge = np.nonzero(~is_uniform)
    if edge[0].size:
        # grid_sample's normalised coordinates (align_corners=False): (2 x + 1) / size - 1,
        # last dimension ordered (model axis 2, 1, 0)
        points = np.empty((edge[0].size, 3), dtype=np.float32)
        for t in range(3):
            s = int(perm[t])
            points[:, 2 - s] = (2.0 * coords[t][edge[t]] + 1.0) / src_shape[s] - 1.0
        grid = torch.from_numpy(points).to(logits.device)[None, :, None, None, :]
        sampled = F.grid_sample(logits.float(), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        out[edge] = first_argmax(sampled[0, :, :, 0, 0]).numpy()
    out = lut[out]
    near = [nearest[int(order[s])] for s in range(3)]
    inside = [(n >= 0) & (n < allowed.shape[s]) for s, n in enumerate(near)]
    keep = allowed[np.ix_(*[np.clip(n, 0, allowed.shape[s] - 1) for s, n in enumerate(near)])]
    keep &= np.logical_and.outer(np.logical_and.outer(inside[0], inside[1]), inside[2])
    out[~keep.transpose(axes)] = 0
    return out
