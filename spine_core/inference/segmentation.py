"""Stage 1: vertebra segmentation and labelling (background + one class per canonical level).

The input CT is sampled onto :func:`~.preprocess.model_grid` (closest canonical orientation,
isotropic ``spacing_mm``), windowed to [0, 1], run through the network with MONAI's
``sliding_window_inference``, arg-maxed, cleaned (largest connected component per level) and
brought back to the input grid through the affines (trilinear upsampling of the logits around the
vertebrae, or nearest neighbour of the labels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
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
from spine_core.inference.upsample import argmax_upsample, first_argmax
from spine_core.labels import level_name
from spine_core.volume import Volume


@dataclass(frozen=True)
class SegmentationConfig:
    """Preprocessing and inference settings stored with the segmentation weights.

    Attributes:
        labels: canonical level id of each output channel (channel 0 is background, id 0).
        spacing_mm: isotropic voxel size of the model grid.
        window: HU window mapped to [0, 1].
        roi_size: sliding-window patch (model-grid voxels, a0/a1/a2 = S/P/L).
        overlap: sliding-window overlap fraction.
        sw_batch_size: windows per forward pass.
        largest_component: keep only the largest connected component of each level.
        smooth_upsampling: mask on the input grid by trilinear upsampling of the logits (else
            nearest neighbour of the model-grid labels).
    """

    labels: tuple[int, ...] = tuple(range(20))
    spacing_mm: float = 2.5
    window: tuple[float, float] = DEFAULT_WINDOW
    roi_size: tuple[int, int, int] = (80, 80, 80)
    overlap: float = 0.25
    sw_batch_size: int = 1
    largest_component: bool = True
    smooth_upsampling: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentationConfig:
        try:
            pre = data.get("preprocess", {})
            inf = data.get("inference", {})
            win = pre.get("window", DEFAULT_WINDOW)
            return cls(
                labels=tuple(int(v) for v in data["labels"]),
                spacing_mm=float(pre.get("spacing_mm", cls.spacing_mm)),
                window=(float(win[0]), float(win[1])),
                roi_size=tuple(int(v) for v in inf.get("roi_size", cls.roi_size)),  # type: ignore[arg-type]
                overlap=float(inf.get("overlap", cls.overlap)),
                sw_batch_size=int(inf.get("sw_batch_size", cls.sw_batch_size)),
                largest_component=bool(inf.get("largest_component", True)),
                smooth_upsampling=bool(inf.get("smooth_upsampling", True)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(
                f"segmentation config is incomplete or malformed ({type(exc).__name__}: {exc}); "
                "it needs 'labels' and optional 'preprocess'/'inference' sections"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "preprocess": {"spacing_mm": self.spacing_mm, "window": list(self.window)},
            "inference": {
                "roi_size": list(self.roi_size),
                "overlap": self.overlap,
                "sw_batch_size": self.sw_batch_size,
                "largest_component": self.largest_component,
                "smooth_upsampling": self.smooth_upsampling,
            },
        }


@dataclass
class SegmentationResult:
    """Output of :meth:`SegmentationModel.segment`.

    Attributes:
        mask: canonical ids (uint8) on the input grid.
        model_labels: canonical ids on the model grid (canonical orientation, isotropic).
        model_grid: the model grid.
        centroids: level id -> LPS mm centroid (from the model-grid labels).
        image: the windowed input as (1, 1, a0, a1, a2) float32 on the input grid (reused by the
            fracture stage so the volume is converted once).
    """

    mask: npt.NDArray[np.uint8]
    model_labels: npt.NDArray[np.uint8]
    model_grid: Grid
    centroids: dict[int, tuple[float, float, float]]
    image: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA only (CPU runs in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def largest_components(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Keep, for each label value, only its largest 26-connected component (in place, returned)."""
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool)
    slices = ndimage.find_objects(labels)
    for value, box in enumerate(slices, start=1):
        if box is None:
            continue
        sub = labels[box] == value
        comp, n = ndimage.label(sub, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        drop = sub & (comp != int(np.argmax(sizes)))
        labels[box][drop] = 0
    return labels


def centroids_of(labels: npt.NDArray[np.integer], grid: Grid) -> dict[int, tuple[float, float, float]]:
    """Level id -> LPS mm centroid of its voxels."""
    from scipy import ndimage

    ids = [int(v) for v in np.unique(labels) if v != 0]
    if not ids:
        return {}
    centres = ndimage.center_of_mass(np.ones(labels.shape, dtype=np.uint8), labels, ids)
    lps = grid.index_to_lps(np.asarray(centres, dtype=np.float64))
    return {lid: (float(p[0]), float(p[1]), float(p[2])) for lid, p in zip(ids, lps)}


class SegmentationModel:
    """The segmentation network with its config, on one device."""

    def __init__(
        self, net: nn.Module, config: SegmentationConfig, device: torch.device, amp: bool = True
    ) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.device = device
        self.amp = amp
        lut = np.zeros(len(config.labels), dtype=np.uint8)
        lut[:] = config.labels
        self._lut = lut

    @property
    def level_ids(self) -> tuple[int, ...]:
        return tuple(v for v in self.config.labels if v != 0)

    def model_input(self, image: torch.Tensor, affine: npt.ArrayLike, grid: Grid) -> torch.Tensor:
        """Windowed input tensor (on the input grid) -> model-grid tensor on the device."""
        return sample_onto(image, affine, grid).to(self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 1, *model grid) -> (1, C, *model grid) logits via sliding-window inference."""
        from monai.inferers import sliding_window_inference

        with torch.inference_mode(), autocast(self.device, self.amp):
            out = sliding_window_inference(
                x,
                roi_size=self.config.roi_size,
                sw_batch_size=self.config.sw_batch_size,
                predictor=self.net,
                overlap=self.config.overlap,
                mode="gaussian",
            )
        # monai annotates every output kind; ``self.net`` returns one tensor, so this is a tensor.
        return out  # type: ignore[return-value]

    def labels_from_logits(self, logits: torch.Tensor) -> npt.NDArray[np.uint8]:
        channel = first_argmax(logits[0]).numpy()
        labels = self._lut[channel]
        if self.config.largest_component:
            labels = largest_components(labels)
        return labels

    def mask_on(
        self, logits: torch.Tensor, labels: npt.NDArray[np.uint8], grid: Grid, target: Grid
    ) -> npt.NDArray[np.uint8]:
        """The label map on ``target`` (the input grid), by trilinear upsampling of the logits.

        Only the box around the (cleaned) vertebrae is upsampled, and only the channels of the
        levels kept; voxels more than one model voxel away from the kept labels stay background.
        Gives smooth sub-voxel boundaries instead of model-grid blocks. Between parallel grids
        the interpolation runs only where the model voxels around a target voxel disagree
        (:mod:`spine_core.inference.upsample`, same result); otherwise everywhere, slab by slab.
        """
        from scipy import ndimage

        out = np.zeros(target.shape, dtype=np.uint8)
        kept = [int(v) for v in np.unique(labels) if v != 0]
        if not kept:
            return out
        fg = ndimage.binary_dilation(labels > 0, iterations=1)
        lo = np.argwhere(fg).min(axis=0) - 1.5
        hi = np.argwhere(fg).max(axis=0) + 1.5
        corners = np.array(
            [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
        )
        idx = target.lps_to_index(grid.index_to_lps(corners))
        start = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, np.array(target.shape))
        stop = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 0, np.array(target.shape))
        if np.any(stop <= start):
            return out
        channels = [0] + [int(np.nonzero(self._lut == v)[0][0]) for v in kept]
        lut = np.array([0] + kept, dtype=np.uint8)
        sub_logits = logits[:, channels].float()
        index_map = np.linalg.inv(np.asarray(grid.affine, dtype=np.float64)) @ target.affine
        fast = argmax_upsample(sub_logits, lut, fg, index_map, start, stop)
        if fast is not None:
            out[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = fast
            return out
        allowed_src = torch.from_numpy(fg.astype(np.float32))[None, None].to(logits.device)
        slab = 24
        for k0 in range(int(start[0]), int(stop[0]), slab):
            k1 = min(k0 + slab, int(stop[0]))
            shift = np.eye(4)
            shift[:3, 3] = [k0, start[1], start[2]]
            sub = Grid((k1 - k0, int(stop[1] - start[1]), int(stop[2] - start[2])), target.affine @ shift)
            best = sample_onto(sub_logits, grid.affine, sub).argmax(dim=1)[0]
            allowed = sample_onto(allowed_src, grid.affine, sub, mode="nearest")[0, 0] > 0.5
            values = lut[best.to("cpu", torch.uint8).numpy()]
            values[~allowed.cpu().numpy()] = 0
            out[k0:k1, start[1]:stop[1], start[2]:stop[2]] = values
        return out

    def segment(self, volume: Volume, timings: dict[str, float] | None = None) -> SegmentationResult:
        """Segment and label the vertebrae of one CT volume (any orientation)."""
        import time

        t0 = time.perf_counter()
        image = volume_tensor(volume, self.config.window)
        grid = model_grid(grid_of(volume), self.config.spacing_mm)
        x = self.model_input(image, volume.affine, grid)
        t1 = time.perf_counter()
        logits = self.logits(x)
        labels = self.labels_from_logits(logits)
        t2 = time.perf_counter()
        if self.config.smooth_upsampling:
            mask = self.mask_on(logits, labels, grid, grid_of(volume))
        else:
            mask = labels_onto(labels, grid.affine, grid_of(volume))
        centroids = centroids_of(labels, grid)
        t3 = time.perf_counter()
        times = {"seg_preprocess": t1 - t0, "seg_network": t2 - t1, "seg_postprocess": t3 - t2}
        if timings is not None:
            timings.update(times)
        return SegmentationResult(mask, labels, grid, centroids, image, times)


def centroids_by_name(centroids: Mapping[int, Sequence[float]]) -> dict[str, tuple[float, float, float]]:
    return {level_name(k): (float(v[0]), float(v[1]), float(v[2])) for k, v in centroids.items()}
