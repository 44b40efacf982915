"""Stage 2, boxes: a fracture detector trained on the per-slice fracture boxes.

The detector sees the classifier's crop of a level (same grid, same channels: :func:`.fracture.
level_crops`) and gives, for every crop voxel, the probability that it lies inside a true fracture
box on its axial slice. It is trained on the phantoms' per-slice boxes (RSNA's layout) rasterised
onto the crop grid (:func:`box_target`): a dense, box-supervised detector, with no anchors to tune.

Boxes (:func:`map_boxes`): the probability map is resampled (trilinear) onto the input volume's
voxels around the crop; on every axial (a0) slice where it reaches ``threshold``, one box encloses
those pixels, and each run of such slices grows over the next slices where it reaches the lower
``grow_threshold`` (the faint ends of a crack). A slice where the segmentation has no voxel of the
level gets no box. Each box is
scored with the level's calibrated P(fracture), so a box means "this level, fractured, here".

Grad-CAM (:mod:`.localise`) stays as the explanation of the classifier's score; the model card
measures both against the true boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spine_core.errors import ModelLoadError
from spine_core.inference.fracture import FractureConfig, ScoredLevels, batched_outputs
from spine_core.inference.loading import LoadedNetwork, find_stage, load_network
from spine_core.inference.preprocess import Grid, crop_grid, sample_onto
from spine_core.inference.protocol import PredictedBox
from spine_core.inference.segmentation import SegmentationResult
from spine_core.labels import LEVEL_IDS, level_name

#: Name of the detector's stage in a weights folder (``fracture_boxes.json`` + ``.pt``, ...).
STAGE = "fracture_boxes"
#: A true box, as the phantoms and the RSNA CSV give it: (level, a0, x0, y0, x1, y1), pixels.
TrueBox = tuple[str, int, float, float, float, float]


@dataclass(frozen=True)
class DetectorConfig:
    """Settings stored with the detector's weights.

    Attributes:
        crop: the crop settings of the classifier it was trained beside
            (``FractureConfig.to_dict()["crop"]``); the detector reads the classifier's crops, so
            the two must agree (:meth:`check_crops`).
        threshold: voxel probability from which a pixel is inside a box.
        grow_threshold: the lower probability over which a run of boxed slices grows up and down
            (:func:`map_boxes`); None: no growth.
        batch_size: crops per forward pass.
    """

    crop: Mapping[str, Any]
    threshold: float = 0.5
    grow_threshold: float | None = None
    batch_size: int = 8

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        try:
            crop = data["crop"]
            if not isinstance(crop, Mapping):
                raise TypeError("'crop' must be an object")
            threshold = float(data.get("threshold", cls.threshold))
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
            grow = data.get("grow_threshold")
            grow = None if grow is None else float(grow)
            if grow is not None and not 0.0 < grow <= threshold:
                raise ValueError(f"grow_threshold must lie in (0, threshold], got {grow}")
            return cls(dict(crop), threshold, grow, int(data.get("batch_size", cls.batch_size)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"fracture box detector config is malformed ({type(exc).__name__}: {exc}); "
                "expected 'crop' (the classifier's crop settings) and 'threshold'"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {"crop": dict(self.crop), "threshold": self.threshold,
                "grow_threshold": self.grow_threshold, "batch_size": self.batch_size}

    def check_crops(self, fracture: FractureConfig) -> None:
        """Raise ModelLoadError when the classifier's crops are not those the detector learnt."""
        theirs = fracture.to_dict()["crop"]
        differ = sorted(k for k in set(theirs) | set(self.crop) if _norm(theirs.get(k)) != _norm(self.crop.get(k)))
        if differ:
            raise ModelLoadError(
                f"the fracture box detector was trained on other crops than the classifier's "
                f"({', '.join(differ)} differ); use weights trained together by `spine train`"
            )


def _norm(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def box_volume(shape: Sequence[int], boxes: Sequence[TrueBox], level: str) -> npt.NDArray[np.uint8]:
    """The ``level``'s true boxes painted on the input grid: 1 inside a box on its slice."""
    out = np.zeros(tuple(int(v) for v in shape), dtype=np.uint8)
    for name, k, x0, y0, x1, y1 in boxes:
        if name != level or not 0 <= k < out.shape[0]:
            continue
        r0, r1 = max(0, int(round(y0))), min(out.shape[1], int(round(y1)))
        c0, c1 = max(0, int(round(x0))), min(out.shape[2], int(round(x1)))
        out[k, r0:r1, c0:c1] = 1
    return out


def box_target(painted: npt.NDArray[np.uint8], image_affine: npt.ArrayLike, crop: Grid) -> torch.Tensor:
    """(1, *crop) uint8 target: the painted boxes (:func:`box_volume`) on the crop grid (nearest)."""
    src = torch.from_numpy(painted.astype(np.float32))[None, None]
    return sample_onto(src, image_affine, crop, mode="nearest")[0].to(torch.uint8)


def _input_window(crop: Grid, volume_affine: npt.NDArray[np.float64],
                  volume_shape: Sequence[int]) -> Grid | None:
    """The input voxels the crop covers (its corners' bounding range, 1 voxel margin), as a grid."""
    hi_idx = np.array(crop.shape, dtype=np.float64) - 0.5
    corners = np.array([[a, b, c] for a in (-0.5, hi_idx[0]) for b in (-0.5, hi_idx[1])
                        for c in (-0.5, hi_idx[2])])
    to_input = np.linalg.inv(volume_affine) @ crop.affine
    pts = corners @ to_input[:3, :3].T + to_input[:3, 3]
    lo = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 2, np.asarray(volume_shape, dtype=int))
    if np.any(hi <= lo):
        return None
    affine = volume_affine.copy()
    affine[:3, 3] = volume_affine[:3, :3] @ lo + volume_affine[:3, 3]
    return Grid((int(hi[0] - lo[0]), int(hi[1] - lo[1]), int(hi[2] - lo[2])), affine)


def map_boxes(
    probability: npt.NDArray[np.floating],
    crop: Grid,
    volume_affine: npt.ArrayLike,
    volume_shape: Sequence[int],
    *,
    threshold: float,
    score: float,
    level: str,
    level_on_slice: npt.NDArray[np.bool_] | None = None,
    grow_threshold: float | None = None,
) -> list[PredictedBox]:
    """Boxes on the input's a0 slices around the pixels where the crop's probability map,
    resampled onto the input grid, reaches ``threshold``. ``level_on_slice[k]`` False drops slice
    ``k`` (the segmentation has no voxel of the level there).

    With ``grow_threshold`` (below ``threshold``), each run of boxed slices grows up and down
    over the next slices whose pixels reach it, each such box kept inside the box of the slice it
    grew from (the ends of a crack, where the map fades: hysteresis, as in edge detection).
    """
    affine = np.asarray(volume_affine, dtype=np.float64)
    window = _input_window(crop, affine, volume_shape)
    if window is None:
        return []
    src = torch.from_numpy(np.ascontiguousarray(probability, dtype=np.float32))[None, None]
    on_input = sample_onto(src, crop.affine, window)[0, 0].numpy()
    offset = np.round(np.linalg.solve(affine[:3, :3], window.affine[:3, 3] - affine[:3, 3])).astype(int)

    def allowed(k: int) -> bool:
        return level_on_slice is None or bool(level_on_slice[k + int(offset[0])])

    found: dict[int, tuple[float, float, float, float]] = {}
    for k in np.flatnonzero((on_input >= threshold).any(axis=(1, 2))).tolist():
        if allowed(k):
            found[k] = _extent(on_input[k] >= threshold)
    if grow_threshold is not None and grow_threshold < threshold:
        weak = on_input >= grow_threshold
        for start in sorted(found):
            for step in (-1, 1):
                if start + step in found:
                    continue  # not an end of its run on this side
                prev, kk = found[start], start + step
                while 0 <= kk < weak.shape[0] and kk not in found and weak[kk].any() and allowed(kk):
                    box = _clip(_extent(weak[kk]), prev)
                    if box is None:
                        break
                    found[kk] = prev = box
                    kk += step
    boxes: list[PredictedBox] = []
    for k in sorted(found):
        x0, y0, x1, y1 = found[k]
        boxes.append(PredictedBox(k + int(offset[0]), x0 + float(offset[2]), y0 + float(offset[1]),
                                  x1 - x0, y1 - y0, float(score), level))
    return boxes


def _extent(on: npt.NDArray[np.bool_]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel edges of the True pixels of a slice."""
    rows, cols = np.nonzero(on)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def _clip(box: tuple[float, float, float, float],
          inside: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    x0, y0 = max(box[0], inside[0]), max(box[1], inside[1])
    x1, y1 = min(box[2], inside[2]), min(box[3], inside[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _level_slices(mask: npt.NDArray[np.integer], level_id: int, crop: Grid,
                  volume_affine: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which a0 slices hold the level, looked at only on the slices the crop reaches."""
    out = np.zeros(mask.shape[0], dtype=bool)
    window = _input_window(crop, volume_affine, mask.shape)
    if window is not None:
        k0 = int(round(np.linalg.solve(volume_affine[:3, :3],
                                       window.affine[:3, 3] - volume_affine[:3, 3])[0]))
        out[k0:k0 + window.shape[0]] = (mask[k0:k0 + window.shape[0]] == level_id).any(axis=(1, 2))
    return out


class BoxDetector:
    """The fracture box detector with its config, on one device."""

    def __init__(self, net: nn.Module, config: DetectorConfig, device: torch.device,
                 amp: bool = True) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.device = device
        self.amp = amp

    def probability_maps(self, crops: torch.Tensor) -> npt.NDArray[np.float32]:
        """(L, C, *crop) crops -> (L, *crop) probability that a voxel lies inside a fracture box."""
        out = batched_outputs(self.net, crops, self.config.batch_size, self.device, self.amp)
        if not out:
            return np.zeros((0, *crops.shape[2:]), dtype=np.float32)
        return torch.sigmoid(torch.cat(out))[:, 0].numpy()

    def boxes(
        self,
        seg: SegmentationResult,
        image_affine: npt.ArrayLike,
        scored: ScoredLevels,
        fracture: FractureConfig,
        levels: Sequence[str],
    ) -> list[PredictedBox]:
        """Boxes of ``levels`` (scored with their probability) on the input's a0 slices."""
        wanted = set(levels)
        rows = [i for i, lid in enumerate(scored.ids) if level_name(lid) in wanted]
        if not rows:
            return []
        maps = self.probability_maps(scored.crops[rows])
        axes = seg.model_grid.affine[:3, :3]
        shape = tuple(int(v) for v in seg.mask.shape)
        boxes: list[PredictedBox] = []
        for row, prob in zip(rows, maps):
            lid = scored.ids[row]
            name = level_name(lid)
            grid = crop_grid(seg.centroids[lid], axes, fracture.crop_shape, fracture.crop_spacing_mm)
            on_slice = _level_slices(np.asarray(seg.mask), LEVEL_IDS[name], grid,
                                     np.asarray(image_affine, dtype=np.float64))
            boxes += map_boxes(prob, grid, image_affine, shape, threshold=self.config.threshold,
                               score=scored.probabilities[name], level=name, level_on_slice=on_slice,
                               grow_threshold=self.config.grow_threshold)
        return boxes


def load_detector(folder: Path, fracture: FractureConfig, device: torch.device,
                  amp: bool = True) -> tuple[BoxDetector, LoadedNetwork] | None:
    """The box detector of a weights folder (any format of :mod:`.loading`), checked against the
    classifier's crops; None when the folder has none (boxes then come from Grad-CAM).

    Raises:
        ModelLoadError: the detector is there but corrupt, of another task or other crops.
    """
    try:
        path = find_stage(folder, STAGE)
    except ModelLoadError:
        return None
    loaded = load_network(path)
    task = loaded.config.get("task", "fracture_boxes")
    if task != "fracture_boxes":
        raise ModelLoadError(f"{loaded.path} holds a '{task}' model where a 'fracture_boxes' model is expected")
    config = DetectorConfig.from_dict(loaded.config)
    config.check_crops(fracture)
    return BoxDetector(loaded.net, config, device, amp), loaded
