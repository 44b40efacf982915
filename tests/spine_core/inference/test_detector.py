"""The fracture box detector's box maths: true boxes onto the crop grid and back onto the input's
slices, whatever the order of the instance numbers; its config; a tiny detector that learns."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from spine_core import metrics
from spine_core.errors import InputError, ModelLoadError
from spine_core.inference.detector import (
    DetectorConfig,
    box_target,
    box_volume,
    map_boxes,
)
from spine_core.inference.fracture import FractureConfig
from spine_core.inference.networks import build_network
from spine_core.inference.preprocess import crop_grid
from spine_core.inference.protocol import PredictedBox
from spine_core.inference.train.data import CropSet
from spine_core.inference.train.loop import train_detector

#: Canonical crop axes (columns: unit S, P, L in LPS), as the model grid gives them.
CANONICAL_AXES = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
SHAPE = (30, 48, 48)
#: RSNA-style rows of one fractured level: (slice_number, x, y, width, height), pixels.
ROWS_BY_POSITION = [(10, 14.0, 20.0, 6.0, 4.0), (11, 13.0, 19.0, 8.0, 6.0), (12, 15.0, 21.0, 5.0, 3.0)]


def _affine(superior_first: bool) -> np.ndarray:
    """1 mm voxels; a0 along S (inferior slice first) or against it (superior slice first)."""
    aff = np.eye(4)
    aff[:3, :3] = np.column_stack([[0.0, 0.0, -1.0 if superior_first else 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    aff[:3, 3] = [-20.0, -30.0, 40.0 if superior_first else 10.0]
    return aff


def _numbers(order: str) -> list[int]:
    numbers = list(range(1, SHAPE[0] + 1))
    if order == "reversed":
        numbers.reverse()
    elif order == "shuffled":
        random.Random(11).shuffle(numbers)
    return numbers


@pytest.mark.parametrize("order", ["normal", "reversed", "shuffled"])
def test_true_boxes_go_onto_the_crop_and_come_back_on_their_slices(order: str) -> None:
    numbers = _numbers(order)
    affine = _affine(superior_first=order == "reversed")
    # The CSV names slices by instance number: the importer maps each to its slice by position.
    csv = [(numbers[k], x, y, w, h) for k, x, y, w, h in ROWS_BY_POSITION]
    true = [("C5", numbers.index(n), x, y, x + w, y + h) for n, x, y, w, h in csv]
    painted = box_volume(SHAPE, true, "C5")
    assert painted.sum() == sum(w * h for *_, w, h in ROWS_BY_POSITION)
    # A 1 mm crop whose voxel centres fall on the input's (half a voxel off the box centre).
    centre = (affine @ np.array([11.5, 22.5, 17.5, 1.0]))[:3]
    crop = crop_grid(centre, CANONICAL_AXES, (12, 20, 20), 1.0)
    target = box_target(painted, affine, crop)
    assert target.shape == (1, 12, 20, 20) and target.dtype == torch.uint8
    assert int(target.sum()) == int(painted.sum())  # every boxed pixel is inside the crop

    found = map_boxes(target[0].numpy().astype(np.float32), crop, affine, SHAPE, threshold=0.5,
                      score=0.8, level="C5")
    back = sorted((numbers[b.slice_index], b.x, b.y, b.width, b.height) for b in found)
    assert back == sorted(csv)
    assert {b.score for b in found} == {0.8} and {b.level for b in found} == {"C5"}
    pred = [(b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height) for b in found]
    located = metrics.box_localisation(pred, [t[1:] for t in true])
    assert (located.iou_mean, located.centre_hit, located.slice_precision, located.slice_recall) == (1, 1, 1, 1)


def test_boxes_are_drawn_where_the_map_reaches_the_threshold_and_the_level_is() -> None:
    affine = _affine(superior_first=False)
    crop = crop_grid((affine @ np.array([11.5, 22.5, 17.5, 1.0]))[:3], CANONICAL_AXES, (12, 20, 20), 1.0)
    prob = np.zeros((12, 20, 20), dtype=np.float32)
    # crop voxel (k, r, c) lies on input voxel (k + 6, r + 13, c + 8): a0 runs along S in both
    prob[3, 5:9, 6:12] = 0.9
    prob[4, 5:9, 6:12] = 0.3  # below the threshold: no box on input slice 10
    prob[5, 2:4, 2:4] = 0.9
    on_slice = np.ones(SHAPE[0], dtype=bool)
    on_slice[11] = False  # the segmentation has no voxel of the level on input slice 11
    found = map_boxes(prob, crop, affine, SHAPE, threshold=0.5, score=0.7, level="C3",
                      level_on_slice=on_slice)
    assert [(b.slice_index, b.x, b.y, b.width, b.height) for b in found] == [(9, 14.0, 18.0, 6.0, 4.0)]
    assert map_boxes(prob, crop, affine, SHAPE, threshold=0.95, score=0.7, level="C3") == []


def test_a_run_of_boxes_grows_over_the_faint_ends_of_a_crack() -> None:
    affine = _affine(superior_first=False)
    crop = crop_grid((affine @ np.array([11.5, 22.5, 17.5, 1.0]))[:3], CANONICAL_AXES, (12, 20, 20), 1.0)
    prob = np.zeros((12, 20, 20), dtype=np.float32)
    prob[4:6, 5:9, 6:12] = 0.9  # the crack's middle: input slices 10 and 11
    prob[3, 4:10, 5:14] = 0.25  # fainter and wider above and below it
    prob[6, 6:8, 7:10] = 0.25
    prob[7, 6:8, 7:10] = 0.25  # ... two slices down
    prob[9, 6:8, 7:10] = 0.25  # a faint spot cut off from the run: never boxed
    kwargs = {"threshold": 0.5, "score": 0.6, "level": "C4"}
    plain = map_boxes(prob, crop, affine, SHAPE, **kwargs)
    assert [b.slice_index for b in plain] == [10, 11]
    grown = map_boxes(prob, crop, affine, SHAPE, grow_threshold=0.2, **kwargs)
    got = {b.slice_index: (b.x, b.y, b.x + b.width, b.y + b.height) for b in grown}
    assert sorted(got) == [9, 10, 11, 12, 13]
    assert got[10] == got[11] == (14.0, 18.0, 20.0, 22.0)
    assert got[9] == got[10]  # wider than the slice it grew from: kept inside it
    assert got[12] == got[13] == (15.0, 19.0, 18.0, 21.0)
    on_slice = np.ones(SHAPE[0], dtype=bool)
    on_slice[12] = False  # growth stops where the level is not
    stopped = map_boxes(prob, crop, affine, SHAPE, grow_threshold=0.2, level_on_slice=on_slice, **kwargs)
    assert [b.slice_index for b in stopped] == [9, 10, 11]


def test_crop_rows_outside_the_volume_are_dropped() -> None:
    affine = _affine(superior_first=False)
    corner = (affine @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    crop = crop_grid(corner, CANONICAL_AXES, (8, 8, 8), 1.0)
    found = map_boxes(np.ones((8, 8, 8), dtype=np.float32), crop, affine, SHAPE, threshold=0.5,
                      score=0.5, level="C1")
    assert found and all(b.slice_index >= 0 and b.x >= 0 and b.y >= 0 for b in found)
    assert all(b.x + b.width <= SHAPE[2] and b.y + b.height <= SHAPE[1] for b in found)


def test_config_round_trips_and_refuses_other_crops() -> None:
    fracture = FractureConfig()
    config = DetectorConfig(crop=fracture.to_dict()["crop"], threshold=0.3)
    assert config.grow_threshold is None
    again = DetectorConfig.from_dict(config.to_dict())
    assert again == config
    again.check_crops(fracture)
    with pytest.raises(ModelLoadError, match="shape"):
        again.check_crops(FractureConfig(crop_shape=(16, 32, 32)))
    with pytest.raises(ModelLoadError, match="'crop'"):
        DetectorConfig.from_dict({"threshold": 0.5})
    with pytest.raises(ModelLoadError, match="threshold must lie in"):
        DetectorConfig.from_dict({"crop": {}, "threshold": 1.5})
    with pytest.raises(ModelLoadError, match="grow_threshold must lie in"):
        DetectorConfig.from_dict({"crop": {}, "threshold": 0.3, "grow_threshold": 0.4})
    grown = DetectorConfig(crop={}, threshold=0.35, grow_threshold=0.2)
    assert DetectorConfig.from_dict(grown.to_dict()) == grown


def _crack_crops(n: int, rng: np.random.Generator) -> CropSet:
    """Crops of a bright block cut by a dark slab at a random place: the target is the slab's box
    on each slice it crosses (what a fracture's boxes are); half the crops have no slab."""
    crops = np.zeros((n, 3, 8, 16, 16), dtype=np.float32)
    masks, rows = [], []
    for i in range(n):
        crops[i, 0, 1:7, 2:14, 2:14] = 0.8
        crops[i, 1, 1:7, 2:14, 2:14] = 1.0
        if i % 2:
            continue
        k0, r0, c0 = rng.integers(1, 4), rng.integers(2, 9), rng.integers(2, 9)
        target = np.zeros((1, 8, 16, 16), dtype=np.uint8)
        target[0, k0:k0 + 3, r0:r0 + 4, c0:c0 + 5] = 1
        crops[i, 0][target[0] > 0] = 0.1
        crops[i, 2][target[0] > 0] = 0.7  # the top-hat lights the gap
        masks.append(torch.from_numpy(target))
        rows.append(i)
    return CropSet(torch.from_numpy(crops).half(), torch.tensor([0.0 if i % 2 else 1.0 for i in range(n)]),
                   torch.full((n,), 5, dtype=torch.int64), torch.tensor(rows), torch.stack(masks))


#: Measured: 150 iterations of the tiny detector below give a mean IoU of 0.73-0.89 against the
#: slabs' boxes on 8 unseen crops over data and weight seeds 0-2 (untrained: 0.08).
TINY_DETECTOR_IOU_MIN = 0.6


def test_a_tiny_detector_learns_boxes() -> None:
    rng = np.random.default_rng(0)
    train, held_out = _crack_crops(32, rng), _crack_crops(16, rng)
    torch.manual_seed(0)
    net = build_network({"arch": "monai.UNet", "params": {
        "spatial_dims": 3, "in_channels": 3, "out_channels": 1, "channels": [8, 16], "strides": [2],
        "num_res_units": 1, "norm": "INSTANCE"}})
    log = train_detector(net, train, 150, batch_size=8, lr=1e-2)
    assert log.iterations == 150 and log.mean_loss(False) < 0.5 * log.mean_loss(True)
    with torch.no_grad():
        prob = torch.sigmoid(net(held_out.crops.float()))[:, 0].numpy()
    ious = []
    for row, mask in zip(held_out.box_rows.tolist(), held_out.box_masks):
        truth = [(k, *_box(mask[0, k].numpy())) for k in range(8) if mask[0, k].any()]
        pred = [(k, *_box(prob[row, k] >= 0.5)) for k in range(8) if (prob[row, k] >= 0.5).any()]
        ious.append(metrics.box_localisation(pred, truth).iou_mean)
    assert np.nanmean(ious) >= TINY_DETECTOR_IOU_MIN, ious


def _box(on: np.ndarray) -> tuple[float, float, float, float]:
    r, c = np.nonzero(on)
    return float(c.min()), float(r.min()), float(c.max() + 1), float(r.max() + 1)


def test_training_without_boxes_is_refused() -> None:
    empty = CropSet(torch.zeros((2, 3, 8, 16, 16), dtype=torch.float16), torch.zeros(2),
                    torch.ones(2, dtype=torch.int64))
    net = build_network({"arch": "monai.UNet", "params": {
        "spatial_dims": 3, "in_channels": 3, "out_channels": 1, "channels": [8, 16], "strides": [2]}})
    with pytest.raises(InputError, match="no crops with true fracture boxes"):
        train_detector(net, empty, 5)


def test_explanation_boxes_keep_their_flag_through_json() -> None:
    detection = PredictedBox(4, 10.0, 12.0, 6.0, 5.0, 0.9, "C5")
    why = PredictedBox(4, 8.0, 10.0, 12.0, 9.0, 0.9, "C5", explanation=True)
    assert "explanation" not in detection.to_json()  # what older readers of the JSON expect
    assert PredictedBox.from_json(detection.to_json()) == detection
    assert PredictedBox.from_json(why.to_json()) == why
    assert PredictedBox.from_json({**detection.to_json(), "explanation": "yes"}) == detection
