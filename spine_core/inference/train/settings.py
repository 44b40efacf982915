"""The settings of a training run (:class:`TrainSettings`, recorded in the model card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spine_core.inference.fracture import FractureConfig
from spine_core.inference.networks import (
    default_detector_spec,
    default_fracture_spec,
    default_segmentation_spec,
)
from spine_core.inference.segmentation import SegmentationConfig
from spine_core.inference.train.data import natural_prevalence


@dataclass
class TrainSettings:
    """Everything that shapes one training run (recorded in the model card)."""

    n_train: int = 48
    n_val: int = 12
    n_cal: int = 12  # studies the fracture temperature is fitted on (0: no calibration, T = 1)
    seed: int = 2022
    shape: tuple[int, int, int] = (200, 256, 256)
    seg_iterations: int = 450
    frac_iterations: int = 1000
    seg_batch_size: int = 2
    frac_batch_size: int = 16
    seg_lr: float = 3e-3
    frac_lr: float = 3e-3
    train_roi: tuple[int, int, int] | None = None  # None: the inference ROI (same norm statistics)
    crops_per_level: int = 4
    enrich_fractures: float = 1.0  # share of training studies forced positive (1-3 levels)
    device: str = "cpu"
    threads: int = 2
    budget_minutes: float = 30.0
    name: str = "spinereview-demo"
    version: str = "0.1.0"
    seg_config: SegmentationConfig = field(default_factory=SegmentationConfig)
    frac_config: FractureConfig = field(
        default_factory=lambda: FractureConfig(level_priors=natural_prevalence())
    )
    seg_spec: dict[str, Any] = field(default_factory=default_segmentation_spec)
    frac_spec: dict[str, Any] = field(default_factory=default_fracture_spec)
    # the fracture box detector (spine_core.inference.detector); 0 iterations: none is trained
    det_iterations: int = 1200
    det_batch_size: int = 8
    det_lr: float = 3e-3
    det_pos_weight: float = 10.0
    det_positive_share: float = 0.75
    det_threshold: float = 0.3
    det_grow_threshold: float | None = 0.15
    det_spec: dict[str, Any] = field(default_factory=default_detector_spec)

    def train_seeds(self) -> list[int]:
        return [self.seed * 1000 + i for i in range(self.n_train)]

    def val_seeds(self) -> list[int]:
        return [self.seed * 1000 + 500 + i for i in range(self.n_val)]

    def cal_seeds(self) -> list[int]:
        return [self.seed * 1000 + 700 + i for i in range(self.n_cal)]
