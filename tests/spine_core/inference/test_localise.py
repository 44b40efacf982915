"""Grad-CAM fracture boxes: the heat map of a known net, boxes mapped through the affines, the
box metrics, and the shipped classifier pointing at a real (synthetic) fracture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from spine_core import metrics
from spine_core.inference.fracture import FractureConfig, FractureModel, ScoredLevels, level_boxes
from spine_core.inference.localise import find_layer, gradcam, heat_boxes
from spine_core.inference.preprocess import Grid
from spine_core.inference.segmentation import SegmentationResult


class _TwoRegionNet(nn.Module):
    """Channel 0 sees the input in region A only, channel 1 in region B only; the logit sums
    channel 0. Grad-CAM of ``features`` must therefore light region A and nothing else."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        a = torch.zeros(shape)
        a[1:3, 2:4, 5:7] = 1
        b = torch.zeros(shape)
        b[5:7, 0:2, 0:2] = 1
        self.register_buffer("regions", torch.stack([a, b])[None])
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x[:, :1] * self.regions)
        return f[:, 0].sum(dim=(1, 2, 3))[:, None]


def test_gradcam_lights_only_what_raised_the_logit() -> None:
    shape = (8, 6, 8)
    net = _TwoRegionNet(shape).eval()
    crops = torch.ones((2, 2, *shape))
    heat = gradcam(net, crops, net.features)
    assert heat.shape == (2, *shape)
    expected = np.zeros(shape, dtype=bool)
    expected[1:3, 2:4, 5:7] = True
    for h in heat:
        assert np.array_equal(h > 0.5 * h.max(), expected)
    assert all(not p.requires_grad or p.grad is None for p in net.parameters())


def test_find_layer_names_a_module_and_refuses_torchscript() -> None:
    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.ReLU())
    assert find_layer(net, "0") is net[0]
    assert find_layer(net, "9") is None and find_layer(net, "") is None
    assert find_layer(torch.jit.script(net), "0") is None


def _volume_affine() -> np.ndarray:
    """Input volume: slices 2 mm apart going Inferior (descending z), rows 0.5 mm, cols 0.5 mm."""
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, 0, 0.5], [0, 0.5, 0], [-2.0, 0, 0]])  # a0 -> -S, a1 -> P, a2 -> L
    aff[:3, 3] = [-10.0, -20.0, 50.0]
    return aff


def test_heat_boxes_map_hot_crop_voxels_through_both_affines() -> None:
    vol_aff = _volume_affine()
    # Crop with axes (S, P, L), 1 mm voxels, voxel (0,0,0) at LPS (0, 0, 10).
    crop_aff = np.eye(4)
    crop_aff[:3, :3] = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    crop_aff[:3, 3] = [0.0, 0.0, 10.0]
    crop = Grid((8, 8, 8), crop_aff)
    heat = np.zeros((8, 8, 8), dtype=np.float32)
    heat[2:4, 3, 4] = 1.0  # S 12..13 mm, P 3 mm, L 4 mm (centres)
    heat[6, 6, 6] = 0.4  # below half the maximum: left out
    boxes = heat_boxes(heat, np.ones_like(heat, dtype=bool), crop, vol_aff, (40, 100, 100),
                       threshold=0.5, score=0.7, level="C3")
    # Voxel cubes span S 11.5..13.5 mm -> a0 = (50 - S)/2 = 18.25..19.25 -> slices 18 and 19.
    # L 3.5..4.5 mm -> a2 = (L + 10)/0.5 = 27..29 (edges 27.5..29.5 -> pixels 27..29, x 27..30);
    # P 2.5..3.5 mm -> a1 = (P + 20)/0.5 = 45..47 (edges 45.5..47.5 -> y 45..48).
    assert [b.slice_index for b in boxes] == [18, 19]
    for b in boxes:
        assert (b.x, b.y, b.width, b.height) == (27.0, 45.0, 3.0, 3.0)
        assert b.score == 0.7 and b.level == "C3"


def test_heat_boxes_keep_inside_the_mask_and_the_volume() -> None:
    crop = Grid((4, 4, 4), np.eye(4))
    heat = np.ones((4, 4, 4), dtype=np.float32)
    inside = np.zeros((4, 4, 4), dtype=bool)
    assert heat_boxes(heat, inside, crop, np.eye(4), (4, 4, 4), threshold=0.5, score=1, level="C1") == []
    inside[:, 1:3, 1:3] = True
    boxes = heat_boxes(heat, inside, crop, np.eye(4), (2, 4, 4), threshold=0.5, score=1, level="C1")
    assert [b.slice_index for b in boxes] == [0, 1]  # slices 2, 3 are outside a 2-slice volume
    assert all((b.x, b.y, b.width, b.height) == (1, 1, 2, 2) for b in boxes)


def test_box_localisation_against_hand_computed_values() -> None:
    truth = [(5, 0, 0, 10, 10), (6, 0, 0, 10, 10), (7, 0, 0, 10, 10)]
    pred = [(4, 0, 0, 5, 5), (5, 0, 0, 5, 5), (5, 5, 5, 10, 10), (6, 20, 20, 30, 30)]
    got = metrics.box_localisation(pred, truth)
    # Slice 5 merges to (0,0,10,10): IoU 1, centre hit; slice 6: IoU 0, no hit.
    assert got.slice_precision == pytest.approx(2 / 3)
    assert got.slice_recall == pytest.approx(2 / 3)
    assert got.iou_mean == pytest.approx(0.5)
    assert got.centre_hit == pytest.approx(0.5)
    assert metrics.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    empty = metrics.box_localisation([], truth)
    assert math.isnan(empty.slice_precision) and empty.slice_recall == 0.0 and math.isnan(empty.iou_mean)


def test_shipped_classifier_boxes_the_fracture_tighter_than_the_vertebra() -> None:
    """Seed 34, C5 and C7 broken (the case of test_local): the Grad-CAM boxes of both levels
    cover the true fracture's centre on most shared slices and are far smaller than the level."""
    from spine_core.inference.local import LocalPredictor
    from spine_core.labels import LEVEL_IDS
    from spine_core.phantom import generate_study

    predictor = LocalPredictor.from_dir(device="cpu")
    study = generate_study(34, fractured_levels=["C5", "C7"])
    pred = predictor.predict(study.image)
    assert pred.mask is not None
    extent = level_boxes(pred.mask, {"C5": 1.0, "C7": 1.0}, 0.5)
    for level in ("C5", "C7"):
        truth = [(b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height) for b in study.boxes if b.level == level]
        mine = [(b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height) for b in pred.boxes if b.level == level]
        assert mine, level
        got = metrics.box_localisation(mine, truth)
        assert got.slice_recall > 0.3 and got.centre_hit >= 0.6, (level, got)
        area = np.mean([(b[3] - b[1]) * (b[4] - b[2]) for b in mine])
        ext_area = np.mean([b.width * b.height for b in extent if b.level == level])
        assert area < 0.6 * ext_area, (level, area, ext_area)
        # every box lies within the level's predicted 3-D extent (2 px / slices for the cubes)
        ks, rows, cols = np.nonzero(pred.mask == LEVEL_IDS[level])
        for b in pred.boxes:
            if b.level == level:
                assert ks.min() - 2 <= b.slice_index <= ks.max() + 2
                assert b.x >= cols.min() - 2 and b.x + b.width <= cols.max() + 3
                assert b.y >= rows.min() - 2 and b.y + b.height <= rows.max() + 3


def test_without_a_cam_layer_boxes_are_the_level_extent() -> None:
    """A config without a usable layer (older weights, TorchScript) keeps the extent boxes."""
    mask = np.zeros((6, 20, 30), dtype=np.uint8)
    mask[1:5, 2:8, 3:9] = 2
    seg = SegmentationResult(mask, mask, Grid((6, 20, 30), np.eye(4)), {2: (2.0, 4.0, 5.0)},
                             torch.zeros(1, 1, 6, 20, 30))
    net = nn.Sequential(nn.Flatten(), nn.LazyLinear(1))
    model = FractureModel(net, FractureConfig(cam_layer=""), torch.device("cpu"))
    scored = ScoredLevels([2], torch.zeros(1, 3, 32, 56, 56), {"C2": 0.9})
    assert model.localise(seg, np.eye(4), scored) is None
    assert model.boxes(seg, np.eye(4), scored) == level_boxes(mask, {"C2": 0.9}, 0.5)
    assert FractureConfig.from_dict({"levels": [1]}).cam_layer == ""
    assert FractureConfig.from_dict(FractureConfig().to_dict()).cam_layer == "features.5"
