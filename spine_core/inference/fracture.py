"""Stage 2: per-vertebra fracture probability, patient probability and slice boxes.

For every level the segmentation found, a fixed-size crop (``crop_shape`` voxels of
``crop_spacing_mm``, axes along the model grid, i.e. canonical S/P/L) is sampled around the level's
centroid from the full-resolution input: channel 0 the windowed CT (zeroed outside the level's mask
dilated by ``context_mm`` when ``mask_context``), channel 1 the level's predicted mask, channel 2
(when ``tophat_voxels``) a black top-hat of channel 0 that lights up thin dark gaps in bone, i.e.
fracture lines. :class:`~.networks.FractureNet` gives one logit per crop; trained on class-balanced
batches, it is shifted by the log prior odds of the level (``FractureConfig.level_priors``) to give
P(fracture) at the prevalence the model is meant for, then divided by the temperature fitted on a
validation split (``FractureConfig.temperature``, :mod:`.calibration`) so the probabilities are
calibrated: ``P = sigmoid((logit + log prior odds) / T)``.

Patient probability (RSNA's ``patient_overall``: any cervical level fractured) is the noisy-OR of
the cervical levels, ``1 - prod(1 - p_level)``, which assumes independent errors per level.

Boxes: for each level whose probability reaches ``threshold``, one box per axial (a0) slice,
scored with the level probability, from the first of these the model has:

1. the box detector trained on the true boxes (:mod:`.detector`), when the weights folder has one;
2. the part of the vertebra that raised its score (Grad-CAM of ``cam_layer``, see
   :mod:`.localise`): an explanation of the score, also available on its own (:meth:`localise`);
3. the extent of the level's predicted mask on each slice where the level covers at least
   ``box_min_area_fraction`` of its largest slice ("look at this vertebra here"), for networks
   without that layer (TorchScript, ``cam_layer`` empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.calibration import apply_temperature
from spine_core.inference.localise import find_layer, gradcam, heat_boxes
from spine_core.inference.preprocess import DEFAULT_WINDOW, Grid, crop_grid, sample_onto
from spine_core.inference.protocol import PredictedBox
from spine_core.inference.segmentation import SegmentationResult, autocast
from spine_core.labels import CERVICAL, LEVEL_IDS, level_name

#: Smallest prior used in the logit shift (a level never seen fractured is not impossible).
PRIOR_FLOOR = 0.005


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
        level_priors: level name -> prevalence of fracture. The classifier is trained on
            class-balanced batches (an implied prior of 0.5), so its logit is shifted by
            ``logit(prior)`` of the level to give the posterior at that prevalence. Empty: no
            correction.
        mask_context: zero the CT outside the level's mask dilated by ``context_mm``, so
            neighbouring vertebrae (and their fractures) do not show in the crop.
        context_mm: that dilation.
        tophat_voxels: size of the cube of a grey closing whose difference with the CT (a black
            top-hat) is added as channel 2: it lights up dark gaps narrower than the cube inside
            bright bone, i.e. fracture lines; 0 leaves the channel out.
        tophat_gain: factor applied to that channel (its values are small).
        cam_layer: dotted name of the layer whose Grad-CAM localises a flagged level's fracture
            (empty: boxes are the level's extent).
        cam_threshold: share of the Grad-CAM maximum from which a crop voxel is boxed.
        temperature: the prior-shifted logit is divided by it before the sigmoid (temperature
            scaling, fitted on a validation split: :mod:`.calibration`); 1.0, the value of
            configs written before calibration existed, leaves the probabilities as they were.
    """

    levels: tuple[int, ...] = tuple(range(1, 20))
    crop_shape: tuple[int, int, int] = (32, 56, 56)
    crop_spacing_mm: float = 1.25
    window: tuple[float, float] = DEFAULT_WINDOW
    threshold: float = 0.5
    box_min_area_fraction: float = 0.3
    batch_size: int = 8
    level_priors: Mapping[str, float] = field(default_factory=dict)
    mask_context: bool = True
    context_mm: float = 3.0
    tophat_voxels: int = 3
    tophat_gain: float = 4.0
    cam_layer: str = "features.5"
    cam_threshold: float = 0.3
    temperature: float = 1.0

    @property
    def channels(self) -> int:
        """Input channels of the classifier: CT, mask (and the top-hat)."""
        return 3 if self.tophat_voxels > 0 else 2

    def prior_for(self, level: str) -> float:
        """Prior of a level (0.5, i.e. no correction, when none is set)."""
        return float(self.level_priors.get(level, 0.5)) if self.level_priors else 0.5

    def prior_logit(self, level: str) -> float:
        p = min(max(self.prior_for(level), PRIOR_FLOOR), 1.0 - PRIOR_FLOOR)
        return math.log(p / (1.0 - p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FractureConfig:
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
                level_priors={str(k): float(v) for k, v in dict(data.get("level_priors", {})).items()},
                mask_context=bool(crop.get("mask_context", False)),
                context_mm=float(crop.get("context_mm", cls.context_mm)),
                tophat_voxels=int(crop.get("tophat_voxels", 0)),
                tophat_gain=float(crop.get("tophat_gain", cls.tophat_gain)),
                # Configs written before localisation existed keep extent boxes.
                cam_layer=str(data.get("localisation", {}).get("cam_layer", "")),
                cam_threshold=float(data.get("localisation", {}).get("threshold", cls.cam_threshold)),
                # Configs written before calibration existed: temperature 1 (no change).
                temperature=_temperature(data.get("calibration", {}).get("temperature", 1.0)),
            )
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
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
                "mask_context": self.mask_context,
                "context_mm": self.context_mm,
                "tophat_voxels": self.tophat_voxels,
                "tophat_gain": self.tophat_gain,
            },
            "threshold": self.threshold,
            "box_min_area_fraction": self.box_min_area_fraction,
            "batch_size": self.batch_size,
            "level_priors": dict(self.level_priors),
            "localisation": {"cam_layer": self.cam_layer, "threshold": self.cam_threshold},
            "calibration": {"method": "temperature", "temperature": self.temperature},
        }


def _temperature(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"calibration temperature must be a positive number, got {value!r}")
    return t


def level_crops(
    image: torch.Tensor,
    image_affine: npt.ArrayLike,
    labels: npt.NDArray[np.integer],
    labels_grid: Grid,
    centres: Mapping[int, npt.ArrayLike],
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
        if config.mask_context:
            img = img * dilate(msk, config.context_mm / config.crop_spacing_mm)
        parts = [img, msk]
        if config.tophat_voxels > 0:
            parts.append(black_tophat(img, config.tophat_voxels) * config.tophat_gain)
        crops.append(torch.cat(parts, dim=1))
    if not crops:
        return [], torch.zeros((0, config.channels, *config.crop_shape), dtype=torch.float32)
    return ids, torch.cat(crops, dim=0)


def batched_outputs(net: nn.Module, crops: torch.Tensor, batch_size: int, device: torch.device,
                    amp: bool) -> list[torch.Tensor]:
    """The net's outputs on ``crops``, ``batch_size`` at a time, in inference mode: float32, on
    the CPU (empty for no crop)."""
    out: list[torch.Tensor] = []
    with torch.inference_mode(), autocast(device, amp):
        for start in range(0, crops.shape[0], batch_size):
            out.append(net(crops[start : start + batch_size].to(device)).float().cpu())
    return out


def dilate(mask: torch.Tensor, radius_voxels: float) -> torch.Tensor:
    """Grey dilation of a (N, 1, ...) soft mask by a cube of half-size ``radius_voxels``."""
    r = max(0, int(round(radius_voxels)))
    if r == 0:
        return mask
    return F.max_pool3d(mask, kernel_size=2 * r + 1, stride=1, padding=r)


def black_tophat(image: torch.Tensor, size: int) -> torch.Tensor:
    """Grey closing (dilation then erosion by a ``size`` cube) minus the image: >= 0, large in
    dark gaps narrower than the cube that lie between brighter voxels (e.g. fracture lines)."""
    pad = size // 2
    dilated = F.max_pool3d(image, kernel_size=size, stride=1, padding=pad)
    closed = -F.max_pool3d(-dilated, kernel_size=size, stride=1, padding=pad)
    return (closed - image).clamp_(min=0.0)


class BoxFinder(Protocol):
    """What finds fracture boxes on the classifier's crops (:class:`.detector.BoxDetector`)."""

    def boxes(self, seg: SegmentationResult, image_affine: npt.ArrayLike, scored: ScoredLevels,
              fracture: FractureConfig, levels: Sequence[str]) -> list[PredictedBox]: ...


class FractureModel:
    """The fracture classifier with its config, on one device, and the box detector trained
    beside it when there is one."""

    def __init__(
        self, net: nn.Module, config: FractureConfig, device: torch.device, amp: bool = True,
        detector: BoxFinder | None = None,
    ) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.device = device
        self.amp = amp
        self.detector = detector

    def logits(self, crops: torch.Tensor) -> npt.NDArray[np.float64]:
        """(L, 2, *crop) crops -> (L,) raw classifier logits (balanced-prior scale)."""
        out = batched_outputs(self.net, crops, self.config.batch_size, self.device, self.amp)
        if not out:
            return np.zeros(0)
        return torch.cat([o.reshape(-1) for o in out]).numpy().astype(np.float64)

    def shifted_logits(self, crops: torch.Tensor, levels: Sequence[int]) -> npt.NDArray[np.float64]:
        """Logit of each crop shifted by the log prior odds of its level (see ``level_priors``),
        before the temperature: what :mod:`.calibration` fits the temperature on."""
        z = self.logits(crops)
        shift = np.array([self.config.prior_logit(level_name(int(lid))) for lid in levels])
        return z + shift.reshape(z.shape)

    def probabilities(self, crops: torch.Tensor, levels: Sequence[int]) -> npt.NDArray[np.float64]:
        """Calibrated P(fracture) of each crop: ``sigmoid(shifted logit / temperature)``."""
        return apply_temperature(self.shifted_logits(crops, levels), self.config.temperature)

    def score(self, seg: SegmentationResult, image_affine: npt.ArrayLike) -> ScoredLevels:
        """P(fracture) of every scored level the segmentation found, with the crops it came from
        (kept so :meth:`localise` explains the same crops)."""
        ids, crops = level_crops(seg.image, image_affine, seg.model_labels, seg.model_grid,
                                 seg.centroids, self.config)
        z = self.shifted_logits(crops, ids)
        probs = apply_temperature(z, self.config.temperature)
        return ScoredLevels(ids, crops, {level_name(lid): float(p) for lid, p in zip(ids, probs)},
                            tuple(float(v) for v in z))

    def localise(
        self,
        seg: SegmentationResult,
        image_affine: npt.ArrayLike,
        scored: ScoredLevels,
        levels: Sequence[str] | None = None,
    ) -> list[PredictedBox] | None:
        """Grad-CAM boxes on the input's a0 slices for ``levels`` (default: those at or above the
        threshold), scored with their probability; None when the net has no ``cam_layer``.

        Boxes on slices where the segmentation has no voxel of their level are dropped (a crop
        voxel can reach a slice past the vertebra's end).
        """
        layer = find_layer(self.net, self.config.cam_layer)
        if layer is None:
            return None
        probs = scored.probabilities
        wanted = set(levels) if levels is not None else {
            n for n, p in probs.items() if p >= self.config.threshold}
        rows = [i for i, lid in enumerate(scored.ids) if level_name(lid) in wanted]
        if not rows:
            return []
        heat = gradcam(self.net, scored.crops[rows].to(self.device), layer)
        axes = seg.model_grid.affine[:3, :3]
        shape = tuple(int(v) for v in seg.image.shape[2:])
        boxes: list[PredictedBox] = []
        for row, h in zip(rows, heat):
            lid = scored.ids[row]
            grid = crop_grid(seg.centroids[lid], axes, self.config.crop_shape, self.config.crop_spacing_mm)
            name = level_name(lid)
            boxes += heat_boxes(
                h, scored.crops[row, 1].numpy() > 0.5, grid, image_affine, shape,
                threshold=self.config.cam_threshold, score=probs[name], level=name,
            )
        return [b for b in boxes if (seg.mask[b.slice_index] == LEVEL_IDS[b.level or ""]).any()]

    def explanation_boxes(
        self, seg: SegmentationResult, image_affine: npt.ArrayLike, scored: ScoredLevels
    ) -> list[PredictedBox]:
        """The Grad-CAM boxes of the flagged levels marked as explanations (none without a
        ``cam_layer``)."""
        return [replace(b, explanation=True) for b in self.localise(seg, image_affine, scored) or []]

    def boxes(
        self, seg: SegmentationResult, image_affine: npt.ArrayLike, scored: ScoredLevels
    ) -> list[PredictedBox]:
        """Boxes of the flagged levels: the detector's, else Grad-CAM where the net allows it,
        else level extents."""
        if self.detector is not None:
            flagged = [n for n, p in scored.probabilities.items() if p >= self.config.threshold]
            return self.detector.boxes(seg, image_affine, scored, self.config, flagged)
        found = self.localise(seg, image_affine, scored)
        if found is not None:
            return found
        return level_boxes(
            seg.mask, scored.probabilities, self.config.threshold, self.config.box_min_area_fraction
        )


@dataclass(frozen=True)
class ScoredLevels:
    """The classifier's verdict on one study: crops (L, C, *crop_shape) of levels ``ids``, level
    name -> calibrated P(fracture), and the prior-shifted logits of ``ids`` before the temperature
    (what calibration is fitted on)."""

    ids: list[int]
    crops: torch.Tensor
    probabilities: dict[str, float]
    shifted_logits: tuple[float, ...] = ()


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
    """One box per a0 slice of each level at or above ``threshold``: the level's extent there."""
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
