"""The film on the model grid: resizing, intensity normalisation and the training targets.

The whole film is resized to ``grid x grid`` (area averaging; the aspect is not kept, the
networks learn the stretched anatomy) and scaled by its own percentiles to [0, 1], bone bright.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from spine_core.errors import InputError
from spine_core.inference.xray.config import LUMBAR_CHANNEL, UNET_CHANNELS, XrayConfig
from spine_core.labels import LEVEL_IDS

#: Canonical ids of the lumbar vertebrae (the *lumbar* target).
LUMBAR_IDS: tuple[int, ...] = tuple(LEVEL_IDS[f"L{i}"] for i in range(1, 7))
#: Smallest film side, in pixels, the model reads.
MIN_FILM_SIDE = 32


def film_to_grid(image: npt.NDArray[np.generic], config: XrayConfig) -> torch.Tensor:
    """(rows, cols) film, bone bright -> (1, 1, grid, grid) float32 in [0, 1].

    Raises:
        InputError: not a 2-D image, or a side under :data:`MIN_FILM_SIDE`.
    """
    if image.ndim != 2 or min(image.shape) < MIN_FILM_SIDE:
        raise InputError(f"a radiograph must be one 2-D image with sides of at least "
                         f"{MIN_FILM_SIDE} pixels, not an array of shape {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    g = F.interpolate(t, size=(config.grid, config.grid), mode="area")
    lo, hi = np.percentile(g.numpy(), [config.low_percentile, config.high_percentile])
    return ((g - float(lo)) / max(float(hi - lo), 1e-6)).clamp_(0.0, 1.0)


def detector_input(x: torch.Tensor, config: XrayConfig) -> torch.Tensor:
    """The grid image (N, 1, g, g) as the detector reads it: area-resized to ``det_grid``."""
    d = config.det_grid
    return x if d == x.shape[-1] else F.interpolate(x, size=(d, d), mode="area")


def labels_to_grid(labels: npt.NDArray[np.uint8], grid: int) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour resize of a label image to ``grid x grid``."""
    rows = (np.arange(grid) * labels.shape[0] / grid + labels.shape[0] / (2 * grid)).astype(int)
    cols = (np.arange(grid) * labels.shape[1] / grid + labels.shape[1] / (2 * grid)).astype(int)
    return labels[np.minimum(rows, labels.shape[0] - 1)][:, np.minimum(cols, labels.shape[1] - 1)]


@dataclass(frozen=True)
class Targets:
    """Training targets of one film on the grid (float32 arrays, channels first)."""

    masks: npt.NDArray[np.float32]  # (5, g, g): vertebra, core, C2, S, lumbar
    heat: npt.NDArray[np.float32]  # (3, g, g): centre, C2 centre, S centre (Gaussians, peak 1)
    size: npt.NDArray[np.float32]  # (2, g, g): box width, height / grid, at the centres
    size_mask: npt.NDArray[np.float32]  # (1, g, g): 1 where size is supervised


def _gaussian(shape: tuple[int, int], cy: float, cx: float, sy: float, sx: float
              ) -> npt.NDArray[np.float32]:
    yy = (np.arange(shape[0], dtype=np.float32) - cy)[:, None] / sy
    xx = (np.arange(shape[1], dtype=np.float32) - cx)[None, :] / sx
    return np.exp(-0.5 * (yy * yy + xx * xx)).astype(np.float32)


def core_of(mask: npt.NDArray[np.bool_], config: XrayConfig) -> npt.NDArray[np.float32]:
    """The core of one vertebra's mask: the largest connected part of its pixels at least
    ``core_fraction`` of the mask's largest inner distance (and at least ``core_erosion_px``)
    from its edge, a neighbour's edge included: one blob in the middle of each vertebra (mostly
    its body), well apart from its neighbours' cores. Thin splits of the projected mask are
    closed first."""
    padded = ndimage.binary_fill_holes(ndimage.binary_closing(np.pad(mask, 3), iterations=2))
    dist = ndimage.distance_transform_edt(padded)[3:-3, 3:-3]
    top = float(dist.max())
    if top <= 0:
        return np.zeros(mask.shape, np.float32)
    parts, n = ndimage.label(dist >= min(top, max(float(config.core_erosion_px),
                                                  config.core_fraction * top)))
    if n > 1:
        sizes = ndimage.sum_labels(np.ones_like(parts), parts, index=np.arange(1, n + 1))
        return (parts == int(np.argmax(sizes)) + 1).astype(np.float32)
    return (parts > 0).astype(np.float32)


def make_targets(grid_labels: npt.NDArray[np.uint8], config: XrayConfig) -> Targets:
    """The U-Net's masks and the detector's heatmaps and box sizes from a grid label image."""
    g = grid_labels.shape[0]
    masks = np.zeros((len(UNET_CHANNELS), g, g), np.float32)
    heat = np.zeros((3, g, g), np.float32)
    size = np.zeros((2, g, g), np.float32)
    size_mask = np.zeros((1, g, g), np.float32)
    masks[0] = grid_labels > 0
    masks[2] = grid_labels == 2
    masks[3] = grid_labels == 26
    masks[LUMBAR_CHANNEL] = np.isin(grid_labels, LUMBAR_IDS)
    objects = ndimage.find_objects(grid_labels)
    for index, sl in enumerate(objects):
        if sl is None:
            continue
        lid = index + 1
        mask = grid_labels[sl] == lid
        masks[1][sl] = np.maximum(masks[1][sl], core_of(mask, config))
        if int(mask.sum()) < config.min_truth_px:
            continue
        ys, xs = np.nonzero(mask)
        cy, cx = float(ys.mean()) + sl[0].start, float(xs.mean()) + sl[1].start
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        iy, ix = int(round(cy)), int(round(cx))
        blob = _gaussian((g, g), iy, ix, max(1.0, h / 6.0), max(1.0, w / 6.0))  # peak 1 at a pixel
        heat[0] = np.maximum(heat[0], blob)
        if lid == 2:
            heat[1] = np.maximum(heat[1], blob)
        if lid == 26:
            heat[2] = np.maximum(heat[2], blob)
        ys0, ys1, xs0, xs1 = max(0, iy - 1), min(g, iy + 2), max(0, ix - 1), min(g, ix + 2)
        size[0, ys0:ys1, xs0:xs1] = w / g
        size[1, ys0:ys1, xs0:xs1] = h / g
        size_mask[0, ys0:ys1, xs0:xs1] = 1.0
    return Targets(masks, heat, size, size_mask)
