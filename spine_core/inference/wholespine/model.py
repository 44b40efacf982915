"""Coarse-to-fine whole-spine labelling (C1–L6, T13, sacrum): an experiment, not the shipped model.

1. **Coarse** (``coarse_mm``, default 5 mm): a multi-class UNet sees the study on the canonical
   model grid with enough context to count levels, and labels each vertebra.
2. **Order** (:mod:`.order`): the vertebrae, ordered head to foot, get consecutive levels
   (Viterbi over the network's mean probabilities), anchored by whatever the network is sure of.
3. **Fine** (``fine_mm``, default 2 mm, optional): a small binary UNet segments vertebral bone in
   the box around the coarse labels; each fine voxel takes the level of the nearest ordered coarse
   vertebra (a distance transform on the coarse grid), so boundaries come from the fine grid and
   levels from the coarse one. Without a fine network the coarse labels are copied (nearest).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.preprocess import (
    DEFAULT_WINDOW,
    Grid,
    grid_of,
    labels_onto,
    model_grid,
    sample_onto,
    volume_tensor,
)
from spine_core.inference.wholespine.order import CHAIN, order_levels
from spine_core.volume import Volume

#: Output channels of the coarse network: background, then every level of :data:`CHAIN`.
COARSE_LABELS: tuple[int, ...] = (0, *sorted(CHAIN))


@dataclass(frozen=True)
class WholeSpineConfig:
    """Settings stored with the whole-spine weights (``wholespine.json``)."""

    labels: tuple[int, ...] = COARSE_LABELS
    coarse_mm: float = 5.0
    fine_mm: float = 2.0
    window: tuple[float, float] = DEFAULT_WINDOW
    coarse_roi: tuple[int, int, int] = (80, 48, 48)
    fine_roi: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    order: bool = True
    fine_margin_mm: float = 12.0  # box around the coarse labels the fine network sees
    max_reach_mm: float = 8.0  # fine voxels farther than this from a coarse level stay background

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels), "coarse_mm": self.coarse_mm, "fine_mm": self.fine_mm,
            "window": list(self.window), "coarse_roi": list(self.coarse_roi),
            "fine_roi": list(self.fine_roi), "overlap": self.overlap, "order": self.order,
            "fine_margin_mm": self.fine_margin_mm, "max_reach_mm": self.max_reach_mm,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WholeSpineConfig:
        try:
            d = cls()
            return cls(
                labels=tuple(int(v) for v in data["labels"]),
                coarse_mm=float(data.get("coarse_mm", d.coarse_mm)),
                fine_mm=float(data.get("fine_mm", d.fine_mm)),
                window=(float(data["window"][0]), float(data["window"][1])) if "window" in data
                else d.window,
                coarse_roi=tuple(int(v) for v in data.get("coarse_roi", d.coarse_roi)),  # type: ignore[arg-type]
                fine_roi=tuple(int(v) for v in data.get("fine_roi", d.fine_roi)),  # type: ignore[arg-type]
                overlap=float(data.get("overlap", d.overlap)),
                order=bool(data.get("order", d.order)),
                fine_margin_mm=float(data.get("fine_margin_mm", d.fine_margin_mm)),
                max_reach_mm=float(data.get("max_reach_mm", d.max_reach_mm)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(f"whole-spine config is malformed ({type(exc).__name__}: {exc})") from exc


def coarse_spec(n_classes: int = len(COARSE_LABELS)) -> dict[str, Any]:
    """The coarse labelling network: a 5-level UNet (receptive field ~140 voxels, 700 mm at 5 mm)."""
    return {"arch": "monai.UNet", "params": {
        "spatial_dims": 3, "in_channels": 1, "out_channels": n_classes,
        "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 0,
        "norm": "INSTANCE"}}


def fine_spec() -> dict[str, Any]:
    """The fine bone network: a small 4-level binary UNet."""
    return {"arch": "monai.UNet", "params": {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32, 64],
        "strides": [2, 2, 2], "num_res_units": 0, "norm": "INSTANCE"}}


@dataclass
class WholeSpineResult:
    """Labels on the input grid and the coarse grid, centroids (LPS mm), timings (s)."""

    mask: npt.NDArray[np.uint8]
    coarse_labels: npt.NDArray[np.uint8]
    coarse_grid: Grid
    renamed: dict[int, int]
    unordered: npt.NDArray[np.uint8]  # the coarse labels before the ordering step
    timings: dict[str, float] = field(default_factory=dict)


def _sliding(net: nn.Module, x: torch.Tensor, roi: tuple[int, int, int], overlap: float) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        out = sliding_window_inference(x, roi_size=roi, sw_batch_size=1, predictor=net,
                                       overlap=overlap, mode="gaussian")
    return out  # type: ignore[return-value]


def _sub_grid(grid: Grid, start: npt.NDArray[np.int64], stop: npt.NDArray[np.int64]) -> Grid:
    shift = np.eye(4)
    shift[:3, 3] = start
    shape = tuple(int(v) for v in stop - start)
    return Grid((shape[0], shape[1], shape[2]), grid.affine @ shift)


def _box_of(mask: npt.NDArray[np.bool_], margin: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, np.asarray(mask.shape))
    return lo.astype(np.int64), hi.astype(np.int64)


class WholeSpineLabeller:
    """Coarse network (+ optional fine network) with their config, on the CPU or a GPU."""

    def __init__(self, coarse: nn.Module, config: WholeSpineConfig, fine: nn.Module | None = None,
                 device: torch.device = torch.device("cpu")) -> None:
        self.coarse = coarse.to(device).eval()
        self.fine = fine.to(device).eval() if fine is not None else None
        self.config = config
        self.device = device
        self._lut = np.asarray(config.labels, dtype=np.uint8)

    def coarse_labels(self, volume: Volume, image: torch.Tensor | None = None,
                      timings: dict[str, float] | None = None
                      ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], Grid, dict[int, int]]:
        """Ordered and unordered coarse labels on the coarse model grid, the renaming made."""
        c = self.config
        t0 = time.perf_counter()
        image = volume_tensor(volume, c.window) if image is None else image
        grid = model_grid(grid_of(volume), c.coarse_mm)
        x = sample_onto(image, volume.affine, grid).to(self.device)
        t1 = time.perf_counter()
        logits = _sliding(self.coarse, x, c.coarse_roi, c.overlap)[0].float()
        channel = logits.argmax(dim=0).cpu().numpy().astype(np.uint8)
        t2 = time.perf_counter()
        raw = self._lut[channel]
        labels = raw
        renamed: dict[int, int] = {}
        if c.order:
            probs = torch.softmax(logits, dim=0).cpu().numpy()
            labels, renamed = order_levels(labels, tuple(grid.spacing), probs, c.labels)
        t3 = time.perf_counter()
        if timings is not None:
            timings.update({"preprocess": t1 - t0, "coarse_network": t2 - t1, "order": t3 - t2})
        return labels, raw, grid, renamed

    def label(self, volume: Volume) -> WholeSpineResult:
        """Label every vertebra of one CT (any orientation) on its own grid."""
        c = self.config
        timings: dict[str, float] = {}
        image = volume_tensor(volume, c.window)
        coarse, raw, grid, renamed = self.coarse_labels(volume, image, timings)
        target = grid_of(volume)
        t0 = time.perf_counter()
        if self.fine is None or not coarse.any():
            mask = labels_onto(coarse, grid.affine, target)
            timings.update({"fine_network": 0.0, "fine_post": time.perf_counter() - t0})
            return WholeSpineResult(mask, coarse, grid, renamed, raw, timings)
        fine_prob, fine_grid, t_pre, t_net = self._fine_probability(image, volume.affine, coarse, grid)
        t1 = time.perf_counter()
        mask = self._combine(coarse, grid, fine_prob, fine_grid, target)
        timings["preprocess"] += t_pre
        timings.update({"fine_network": t_net, "fine_post": (t1 - t0 - t_net - t_pre) + (time.perf_counter() - t1)})
        return WholeSpineResult(mask, coarse, grid, renamed, raw, timings)

    def _fine_probability(self, image: torch.Tensor, affine: npt.NDArray[np.float64],
                          coarse: npt.NDArray[np.uint8], grid: Grid
                          ) -> tuple[torch.Tensor, Grid, float, float]:
        """Bone probability on the fine grid of the box around the coarse labels, and the seconds
        taken to resample the input onto that grid and to run the network."""
        c = self.config
        assert self.fine is not None
        margin = int(np.ceil(c.fine_margin_mm / c.coarse_mm))
        lo, hi = _box_of(coarse > 0, margin)
        box = _sub_grid(grid, lo, hi)
        fine_grid = model_grid(box, c.fine_mm)
        t0 = time.perf_counter()
        x = sample_onto(image, affine, fine_grid).to(self.device)
        t1 = time.perf_counter()
        logits = _sliding(self.fine, x, c.fine_roi, c.overlap)
        prob = torch.softmax(logits.float(), dim=1)[:, 1:2]
        return prob, fine_grid, t1 - t0, time.perf_counter() - t1

    def _combine(self, coarse: npt.NDArray[np.uint8], grid: Grid, fine_prob: torch.Tensor,
                 fine_grid: Grid, target: Grid) -> npt.NDArray[np.uint8]:
        """Fine bone voxels on ``target`` take the level of the nearest coarse vertebra."""
        from scipy import ndimage

        c = self.config
        dist, (i0, i1, i2) = ndimage.distance_transform_edt(
            coarse == 0, sampling=grid.spacing, return_indices=True)
        nearest = coarse[i0, i1, i2]
        nearest[dist > c.max_reach_mm] = 0
        out = np.zeros(target.shape, dtype=np.uint8)
        # The box of the fine grid on the target grid.
        corners = np.array([[a, b, d] for a in (-0.5, fine_grid.shape[0] - 0.5)
                            for b in (-0.5, fine_grid.shape[1] - 0.5)
                            for d in (-0.5, fine_grid.shape[2] - 0.5)])
        idx = target.lps_to_index(fine_grid.index_to_lps(corners))
        start = np.clip(np.floor(idx.min(axis=0)).astype(np.int64), 0, np.asarray(target.shape))
        stop = np.clip(np.ceil(idx.max(axis=0)).astype(np.int64) + 1, 0, np.asarray(target.shape))
        if np.any(stop <= start):
            return out
        slab = 32
        for k0 in range(int(start[0]), int(stop[0]), slab):
            k1 = min(k0 + slab, int(stop[0]))
            sub = _sub_grid(target, np.array([k0, start[1], start[2]]), np.array([k1, stop[1], stop[2]]))
            bone = sample_onto(fine_prob, fine_grid.affine, sub)[0, 0].cpu().numpy() > 0.5
            levels = labels_onto(nearest, grid.affine, sub)
            levels[~bone] = 0
            out[k0:k1, start[1]:stop[1], start[2]:stop[2]] = levels
        return out
