"""Training data: labelled studies (phantoms generated from a seed), the segmentation samples on
the model grid and the per-vertebra crop sets the fracture classifier trains on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from spine_core.inference.detector import box_target, box_volume
from spine_core.inference.fracture import FractureConfig, level_crops
from spine_core.inference.preprocess import (
    crop_grid,
    grid_of,
    labels_onto,
    model_grid,
    sample_onto,
    volume_tensor,
)
from spine_core.inference.segmentation import (
    SegmentationConfig,
    SegmentationModel,
    centroids_of,
)
from spine_core.labels import CERVICAL, level_name
from spine_core.volume import Volume

Log = Callable[[str], None]


@dataclass(frozen=True)
class LabelledStudy:
    """One training/evaluation study: CT, canonical-id mask on the same grid, fractured levels."""

    image: Volume
    mask: Volume
    fractured: frozenset[int]
    seed: int = 0
    #: True fracture boxes (level name, a0, x0, y0, x1, y1) where known, for localisation metrics.
    boxes: tuple[tuple[str, int, float, float, float, float], ...] = ()


StudySource = Callable[[int], LabelledStudy]

#: Placeholder mask of studies kept only for their image (keeps the training run's memory low).
_NO_MASK = Volume(np.zeros((1, 1, 1), dtype=np.uint8), np.eye(4))


def phantom_source(shape: tuple[int, int, int], enrich: float = 0.0) -> StudySource:
    """Studies of :func:`spine_core.phantom.generate_study` at ``shape`` (seed -> study).

    ``enrich`` > 0 makes that fraction of studies positive with 1-3 fractured cervical levels
    chosen uniformly (drawn from the seed), to give the classifier more fractures to learn from
    than the RSNA rates do; the classifier's outputs are then corrected to the natural prevalence
    (:func:`natural_prevalence`, via ``FractureConfig.level_priors``).
    """

    def make(seed: int) -> LabelledStudy:
        from spine_core.labels import level_id
        from spine_core.phantom import generate_study

        forced: list[str] | None = None
        if enrich > 0:
            rng = np.random.default_rng([seed, 7919])
            if rng.random() < enrich:
                k = int(rng.integers(1, 4))
                forced = sorted(rng.choice(list(CERVICAL), size=k, replace=False).tolist())
        study = generate_study(seed, shape=shape, fractured_levels=forced)
        fractured = frozenset(level_id(n) for n in study.fractured_levels)
        boxes = tuple((str(b.level), b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height) for b in study.boxes)
        return LabelledStudy(study.image, study.labels, fractured, seed, boxes)

    return make


def natural_prevalence() -> dict[str, float]:
    """Per-level fracture prevalence of unenriched phantom studies (thoracic levels: never)."""
    from spine_core.phantom.fractures import LEVEL_PREVALENCE

    return {level_name(lid): float(LEVEL_PREVALENCE.get(level_name(lid), 0.0)) for lid in range(1, 20)}


# ----------------------------------------------------------------------------------- preparation


@dataclass
class SegSample:
    """A study on the model grid: windowed image (float16) and canonical label map (uint8)."""

    image: npt.NDArray[np.float16]
    labels: npt.NDArray[np.uint8]


def _no_box_masks(config: FractureConfig) -> torch.Tensor:
    return torch.zeros((0, 1, *config.crop_shape), dtype=torch.uint8)


@dataclass
class CropSet:
    """Per-vertebra crops with their targets; for crops of levels with true fracture boxes, the
    boxes on the crop grid (what the box detector trains on)."""

    crops: torch.Tensor  # (N, channels, *crop) float16
    targets: torch.Tensor  # (N,) float32 0/1
    levels: torch.Tensor  # (N,) int64 level ids
    box_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # (P,)
    box_masks: torch.Tensor | None = None  # (P, 1, *crop) uint8: crop box_rows[i]'s boxes

    @staticmethod
    def concat(sets: Sequence[CropSet], config: FractureConfig) -> CropSet:
        if not sets:
            return CropSet(torch.zeros((0, config.channels, *config.crop_shape), dtype=torch.float16),
                           torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                           box_masks=_no_box_masks(config))
        offsets = np.cumsum([0] + [int(s.targets.numel()) for s in sets[:-1]])
        return CropSet(
            torch.cat([s.crops for s in sets]),
            torch.cat([s.targets for s in sets]),
            torch.cat([s.levels for s in sets]),
            torch.cat([s.box_rows + int(o) for s, o in zip(sets, offsets)]),
            torch.cat([s.box_masks if s.box_masks is not None else _no_box_masks(config)
                       for s in sets]),
        )


def prepare_segmentation(study: LabelledStudy, config: SegmentationConfig) -> SegSample:
    """Bring a study onto the model grid exactly as inference does (labels: nearest)."""
    grid = model_grid(grid_of(study.image), config.spacing_mm)
    image = sample_onto(volume_tensor(study.image, config.window), study.image.affine, grid)
    labels = labels_onto(np.asarray(study.mask.array), study.mask.affine, grid)
    return SegSample(image[0, 0].numpy().astype(np.float16), labels)


def prepare_fracture(
    study: LabelledStudy,
    seg_config: SegmentationConfig,
    config: FractureConfig,
    rng: np.random.Generator,
    n_jitter: int = 3,
    jitter_mm: float = 3.0,
    segmentation: SegmentationModel | None = None,
) -> CropSet:
    """``n_jitter`` crops per scored level, centres jittered by up to ``jitter_mm`` per axis.

    With ``segmentation`` the crops are built from its predicted labels and centroids, exactly as
    at inference (what the demo weights are trained on: ground-truth masks carry details, such as
    fracture gaps, that predicted masks do not, and a classifier trained on them fails on
    predictions). Without it, from the ground truth brought onto the model grid; the target of a
    crop is whether the study's level of that id is fractured. Crops of levels with true boxes
    (``study.boxes``) carry them on the crop grid, for the box detector.
    """
    if segmentation is not None:
        seg = segmentation.segment(study.image)
        grid, labels, centres = seg.model_grid, seg.model_labels, seg.centroids
        same_window = tuple(segmentation.config.window) == tuple(config.window)
        image = seg.image if same_window else volume_tensor(study.image, config.window)
    else:
        grid = model_grid(grid_of(study.image), seg_config.spacing_mm)
        labels = labels_onto(np.asarray(study.mask.array), study.mask.affine, grid)
        centres = centroids_of(labels, grid)
        image = volume_tensor(study.image, config.window)
    painted = {name: box_volume(study.image.shape, study.boxes, name)
               for name in sorted({b[0] for b in study.boxes})}
    sets = []
    for _ in range(n_jitter):
        jittered = {
            lid: np.asarray(c) + rng.uniform(-jitter_mm, jitter_mm, size=3) for lid, c in centres.items()
        }
        ids, crops = level_crops(image, study.image.affine, labels, grid, jittered, config)
        targets = torch.tensor([1.0 if lid in study.fractured else 0.0 for lid in ids])
        rows, masks = [], []
        for row, lid in enumerate(ids):
            if level_name(lid) in painted:
                crop = crop_grid(jittered[lid], grid.affine[:3, :3], config.crop_shape, config.crop_spacing_mm)
                rows.append(row)
                masks.append(box_target(painted[level_name(lid)], study.image.affine, crop))
        sets.append(CropSet(crops.to(torch.float16), targets, torch.tensor(ids, dtype=torch.int64),
                            torch.tensor(rows, dtype=torch.int64),
                            torch.stack(masks) if masks else _no_box_masks(config)))
    return CropSet.concat(sets, config)
