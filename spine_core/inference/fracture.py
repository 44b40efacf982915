"""Stage 2: per-vertebra fracture probability, patient probability and slice boxes.

For every level the segmentation found, a fixed-size crop (``crop_shape`` voxels of
``crop_spacing_mm``, axes along the model grid, i.e. canonical S/P/L) is sampled around the level's
centroid from the full-resolution input: channel 0 the windowed CT, channel 1 the level's predicted
mask. :class:`~.networks.FractureNet` gives one logit per crop.

Patient probability (RSNA's ``patient_overall``: any cervical level fractured) is the noisy-OR of
the cervical levels, ``1 - prod(1 - p_level)``, which assumes independent errors per level.

Boxes are NOT a fracture localisation: for each level whose probability reaches ``threshold``, one
box per axial (a0) slice is the extent of that level's predicted mask on the slice (slices where the
level covers less than ``box_min_area_fraction`` of its largest slice are skipped), scored with the
level probability. They say "look at this vertebra on these slices".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.preprocess import DEFAULT_WINDOW, Grid, crop_grid, sample_onto
from spine_core.inference.protocol import PredictedBox
from spine_core.inference.segmentation import autocast
from spine_core.labels import CERVICAL, LEVEL_IDS, level_name


@dataclass(frozen=True)
class FractureConfig:
    """Settings stored with the fracture classifier weights.

    Attributes:
        levels: canonical level ids the classifier scores (others are ignored).
        crop_shape: crop size in voxels (a0/a1/a2 = S/P/L).
        crop_spacing_mm: crop voxel size.
        window: HU window mapped to [0, 1] (must match training).
        threshold: level probability from which boxes are drawn.
        box_min_area_fraction: skip slices where the level is smaller than this share of its
            largest slice.
        batch_size: crops per forward pass.
    """

    levels: tuple[int, ...] = tuple(range(1, 20))
    crop_shape: tuple[int, int, int] = (32, 56, 56)
    crop_spacing_mm: float = 1.25
    window: tuple[float, float] = DEFAULT_WINDOW
    threshold: float = 0.5
    box_min_area_fraction: float = 0.3
    batch_size: int = 8

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FractureConfig":
        try:
            crop = data.get("crop", {})
            win = crop.get("window", DEFAULT_WINDOW)
            return cls(
                levels=tuple(int(v) for v in data.get("levels", cls.levels)),
                crop_shape=tuple(int(v) for v in crop.get("shape", cls.crop_shape)),  # type: ignore[arg-type]
                crop_spacing_mm=float(crop.get("spacing_mm", cls.crop_spacing_mm)),
                window=(float(win[0]), float(win[1])),
                threshold=float(data.get("threshold", cls.threshold)),
                box_min_area_fraction=float(data.get("box_min_area_fraction", cls.box_min_area_fraction)),
                batch_size=int(data.get("batch_size", cls.batch_size)),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(
                f"fracture config is malformed ({type(exc).__name__}: {exc}); expected 'levels', "
                "'crop' {shape, spacing_mm, window} and 'threshold'"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "crop": {
                "shape": list(self.crop_shape),
                "spacing_mm": self.crop_spacing_mm,
                "window": list(self.window),
            },
            "threshold": self.threshold,
            "box_min_area_fraction": self.box_min_area_fraction,
            "batch_size": self.batch_size,
        }


def level_crops(
    image: torch.Tensor,
    image_affine: npt.ArrayLike,
    labels: npt.NDArray[np.integer],
    labels_grid: Grid,
    centres: Mapping[int, Sequence[float]],
    config: FractureConfig,
) -> tuple[list[int], torch.Tensor]:
    """(level ids, (L, 2, *crop_shape) crops) for the levels in ``centres`` that ``config`` scores.

    ``image`` is the windowed CT (1, 1, *input grid); ``labels`` the level ids on ``labels_grid``
    (the model grid, or the ground truth brought onto it in training); ``centres`` LPS mm.
    """
    axes = labels_grid.affine[:3, :3]
    ids = [lid for lid in sorted(centres) if lid in config.levels]
    crops = []
    label_t = torch.from_numpy(np.ascontiguousarray(labels))
    for lid in ids:
        grid = crop_grid(centres[lid], axes, config.crop_shape, config.crop_spacing_mm)
        img = sample_onto(image, image_affine, grid)
        level_mask = (label_t == lid).to(torch.float32)[None, None]
        msk = sample_onto(level_mask, labels_grid.affine, grid)
        crops.append(torch.cat([img, msk], dim=1))
    if not crops:
        return [], torch.zeros((0, 2, *config.crop_shape), dtype=torch.float32)
    return ids, torch.cat(crops, dim=0)


class FractureModel:
    """The fracture classifier with its config, on one device."""

    def __init__(self, net: nn.Module, config: FractureConfig, device: torch.device, amp: bool = True) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.device = device
        self.amp = amp

    def probabilities(self, crops: torch.Tensor) -> npt.NDArray[np.float64]:
        """(L, 2, *crop) crops -> (L,) fracture probabilities."""
        out: list[torch.Tensor] = []
        with torch.inference_mode(), autocast(self.device, self.amp):
            for start in range(0, crops.shape[0], self.config.batch_size):
                batch = crops[start : start + self.config.batch_size].to(self.device)
                out.append(torch.sigmoid(self.net(batch).float()).reshape(-1).cpu())
        if not out:
            return np.zeros(0)
        return torch.cat(out).numpy().astype(np.float64)

    def predict_levels(
        self,
        image: torch.Tensor,
        image_affine: npt.ArrayLike,
        labels: npt.NDArray[np.integer],
        labels_grid: Grid,
        centres: Mapping[int, Sequence[float]],
    ) -> dict[str, float]:
        """Level name -> P(fracture) for every scored level the segmentation found."""
        ids, crops = level_crops(image, image_affine, labels, labels_grid, centres, self.config)
        probs = self.probabilities(crops)
        return {level_name(lid): float(p) for lid, p in zip(ids, probs)}


def patient_probability(level_probabilities: Mapping[str, float]) -> float:
    """Noisy-OR over the cervical levels: P(any of C1–C7 fractured); 0 if none was found."""
    p_none = 1.0
    for name in CERVICAL:
        if name in level_probabilities:
            p_none *= 1.0 - float(level_probabilities[name])
    return float(1.0 - p_none)


def level_boxes(
    mask: npt.NDArray[np.integer],
    level_probabilities: Mapping[str, float],
    threshold: float,
    min_area_fraction: float = 0.3,
) -> list[PredictedBox]:
    """One box per a0 slice of each level at or above ``threshold`` (see the module docstring)."""
    from scipy import ndimage

    boxes: list[PredictedBox] = []
    flagged = {LEVEL_IDS[n]: p for n, p in level_probabilities.items() if p >= threshold}
    if not flagged:
        return boxes
    objects = ndimage.find_objects(np.asarray(mask))
    for lid, prob in sorted(flagged.items()):
        if lid > len(objects) or objects[lid - 1] is None:
            continue
        box = objects[lid - 1]
        sub = np.asarray(mask[box]) == lid
        areas = sub.sum(axis=(1, 2))
        if areas.max() == 0:
            continue
        for k in np.nonzero(areas >= min_area_fraction * areas.max())[0]:
            rows = np.nonzero(sub[k].any(axis=1))[0]
            cols = np.nonzero(sub[k].any(axis=0))[0]
            y0, y1 = rows[0] + box[1].start, rows[-1] + box[1].start + 1
            x0, x1 = cols[0] + box[2].start, cols[-1] + box[2].start + 1
            boxes.append(
                PredictedBox(
                    slice_index=int(k + box[0].start),
                    x=float(x0),
                    y=float(y0),
                    width=float(x1 - x0),
                    height=float(y1 - y0),
                    score=float(prob),
                    level=level_name(lid),
                )
            )
    return boxes
