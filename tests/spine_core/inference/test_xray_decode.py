"""Network outputs to vertebrae: one core per touching vertebra, the watershed, fragments merged,
and the ensemble's detector confirming the U-Net's cores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from spine_core.inference.xray.config import XrayConfig
from spine_core.inference.xray.cores import assign_cores, loose_cores, split_cores
from spine_core.inference.xray.decode import (
    Detection,
    _merge_small,
    core_seeds,
    ensemble_instances,
    unet_instances,
)
from spine_core.inference.xray.grid import core_of, make_targets

G = 64


def _stack(n: int = 4, gap: int = 0) -> np.ndarray:
    """``n`` touching 10 x 24 'vertebrae' (labels 3, 4, ...) down the middle of a G x G grid."""
    labels = np.zeros((G, G), np.uint8)
    for i in range(n):
        y = 6 + i * (10 + gap)
        labels[y:y + 10, 20:44] = 3 + i
    return labels


def _probs(labels: np.ndarray, config: XrayConfig) -> np.ndarray:
    """U-Net outputs as if it learned its targets exactly."""
    return make_targets(labels, config).masks


def test_touching_vertebrae_get_one_core_each_apart() -> None:
    labels = _stack()
    cores = make_targets(labels, XrayConfig()).masks[1]
    parts, n = ndimage.label(cores)
    assert n == 4
    for lid in range(3, 7):
        assert len(set(np.unique(parts[labels == lid])) - {0}) == 1


def test_a_thin_split_of_a_mask_keeps_one_core() -> None:
    mask = np.zeros((20, 40), bool)
    mask[3:17, 3:37] = True
    mask[:, 20] = False  # a one-pixel gap of the projection through the vertebra
    assert ndimage.label(core_of(mask, XrayConfig()))[1] == 1


def test_unet_alone_finds_each_touching_vertebra() -> None:
    config = XrayConfig(min_core_px=2)
    labels = _stack()
    inst = unet_instances(_probs(labels, config), config)
    assert len(inst) == 4
    for lid in range(3, 7):  # each truth vertebra is mostly one instance
        values = inst.labels[labels == lid]
        assert np.bincount(values).max() >= 0.9 * values.size


def test_a_small_fragment_joins_its_neighbour() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3)
    probs = _probs(labels, config)
    probs[1, 25, 42:44] = 1.0  # a stray core blob in the middle vertebra's corner, off its core
    assert ndimage.label(probs[1] >= 0.5)[1] == 4
    assert len(unet_instances(probs, config)) == 3
    kept = XrayConfig(min_core_px=1, min_instance_fraction=0.0)
    assert len(unet_instances(probs, kept)) == 4


def _det(labels: np.ndarray, peaks: list[tuple[float, float]], config: XrayConfig
         ) -> tuple[np.ndarray, list[Detection]]:
    det = np.zeros((5, G, G), np.float32)
    dets = [Detection(y, x, 10.0, 24.0, 0.9, {"C2": 0.0, "S": 0.0}) for y, x in peaks]
    return det, dets


def test_ensemble_drops_a_core_no_detection_confirms() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3)
    probs = _probs(labels, config)
    det, dets = _det(labels, [(11.0, 32.0), (21.0, 32.0)], config)  # the third is not detected
    assert len(ensemble_instances(probs, det, dets, config)) == 2
    keep = XrayConfig(min_core_px=1, drop_unconfirmed=False)
    assert len(ensemble_instances(probs, det, dets, keep)) == 3


def test_an_unconfirmed_core_the_reference_channel_claims_is_kept() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3)
    labels[labels == 5] = 26  # the third is the sacrum: the U-Net's S channel claims it
    probs = _probs(labels, config)
    det, dets = _det(labels, [(11.0, 32.0), (21.0, 32.0)], config)  # the detector misses it
    assert len(ensemble_instances(probs, det, dets, config)) == 2
    inst = ensemble_instances(probs, det, dets, replace(config, keep_reference_cores=True))
    assert len(inst) == 3
    assert np.bincount(inst.labels[labels == 26]).argmax() > 0


def test_instances_carry_the_lumbar_probability() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3)
    labels[labels == 4] = 20  # the middle one is L1
    inst = unet_instances(_probs(labels, config), config)
    lumbar = [inst.lumbar[i] for i in np.argsort([c[0] for c in inst.centres])]
    assert lumbar[0] < 0.1 and lumbar[1] > 0.9 and lumbar[2] < 0.1
    assert not unet_instances(_probs(labels, config)[:4], config).lumbar  # four-channel weights


def test_ensemble_adds_a_strong_detection_off_the_cores() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3, gap=2)
    probs = _probs(labels, config)
    probs[1][labels == 5] = 0.0  # the U-Net found the bone but no core of the third vertebra
    det, dets = _det(labels, [(11.0, 32.0), (23.0, 32.0), (35.0, 32.0)], config)
    inst = ensemble_instances(probs, det, dets, config)
    assert len(inst) == 3
    assert np.bincount(inst.labels[labels == 5]).argmax() > 0


def _dets(centres: list[tuple[float, float]], height: float = 10.0, width: float = 24.0
          ) -> list[Detection]:
    return [Detection(y, x, height, width, 0.9, {"C2": 0.0, "S": 0.0}) for y, x in centres]


def test_a_core_holding_two_detections_is_split_between_them() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(2)
    probs = _probs(labels, config)
    probs[1, 8:24, 26:38] = 1.0  # the two cores ran together through the disc
    assert ndimage.label(probs[1] >= 0.5)[1] == 1
    dets = _dets([(11.0, 32.0), (21.0, 32.0)])
    split = split_cores(core_seeds(probs, config), dets, config.box_margin)
    assert set(np.unique(split)) == {0, 1, 2}
    inst = ensemble_instances(probs, np.zeros((5, G, G), np.float32), dets, config)
    assert len(inst) == 2
    for lid in (3, 4):
        values = inst.labels[labels == lid]
        assert np.bincount(values).max() >= 0.8 * values.size
    assert len(ensemble_instances(probs, np.zeros((5, G, G), np.float32), dets[:1], config)) == 1


def test_core_parts_side_by_side_are_one_vertebra_but_a_neighbour_in_a_tall_box_is_not() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3)
    probs = _probs(labels, config)
    probs[1, :, 31:34] = 0.0  # every core in two halves, left and right
    cores = core_seeds(probs, config)
    assert int(cores.max()) == 6
    det = np.zeros((5, G, G), np.float32)
    dets = _dets([(11.0, 32.0), (21.0, 32.0), (31.0, 32.0)])
    assert len(unet_instances(probs, config)) == 6
    inst = ensemble_instances(probs, det, dets, config)
    assert len(inst) == 3
    owner = assign_cores(cores, dets, config.box_margin)
    assert sorted(owner) == [0, 0, 1, 1, 2, 2]
    tall = [Detection(16.0, 32.0, 30.0, 24.0, 0.9, {"C2": 0.0, "S": 0.0})]  # one box over two
    owner = assign_cores(cores, tall, config.box_margin)
    assert owner.count(0) == 2 and owner.count(-1) == 4  # the nearest vertebra's halves only


def _spine(n: int = 5) -> np.ndarray:
    """``n`` touching 10 x 24 vertebrae (labels 3...) down a 96 x 96 grid at columns 40-64."""
    labels = np.zeros((96, 96), np.uint8)
    for i in range(n):
        labels[5 + i * 10:15 + i * 10, 40:64] = 3 + i
    return labels


def test_an_unconfirmed_core_on_the_spine_is_a_vertebra_and_one_off_it_is_not() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _spine()
    labels[40:50, 2:26] = 20  # a vertebra-shaped blob well off the spine
    probs = make_targets(labels, config).masks
    dets = _dets([(10.0, 52.0), (20.0, 52.0), (40.0, 52.0), (50.0, 52.0)])  # the third missed
    det = np.zeros((5, 96, 96), np.float32)
    inst = ensemble_instances(probs, det, dets, config)
    assert len(inst) == 5
    assert np.bincount(inst.labels[labels == 5]).argmax() > 0  # the missed one found
    assert not inst.labels[labels == 20].any()  # the blob off the spine dropped
    assert len(ensemble_instances(probs, det, dets, replace(config, spine_distance=3.0))) == 6
    assert len(ensemble_instances(probs, det, dets, replace(config, loose_core_fraction=2.0))) == 4


def test_a_small_unconfirmed_core_is_a_vertebra_only_at_the_grid_edge() -> None:
    config = XrayConfig()
    cores = np.zeros((96, 96), np.int32)
    for i in range(4):  # four confirmed cores of 6 x 20 = 120 pixels
        cores[18 + i * 10:24 + i * 10, 42:62] = 2 + i
    dets = _dets([(21.0, 52.0), (31.0, 52.0), (41.0, 52.0), (51.0, 52.0)])
    for top, kept in ((1, True), (8, False)):  # 3 x 8 = 24 pixels: at the edge, then inside
        c = cores.copy()
        c[top:top + 3, 48:56] = 1
        owner = assign_cores(c, dets, config.box_margin)
        assert owner == [-1, 0, 1, 2, 3]
        assert (1 in loose_cores(c, owner, dets, config)) is kept
    c[8:11, 44:60] = 1  # 48 pixels: still under half the others' median, inside
    assert loose_cores(c, assign_cores(c, dets, config.box_margin), dets, config) == []
    c[8:12, 44:60] = 1  # 64 pixels: over half
    assert loose_cores(c, assign_cores(c, dets, config.box_margin), dets, config) == [1]
    tiny = cores.copy()
    tiny[1:3, 50:54] = 1  # 8 pixels at the edge: under a quarter of half the median (15) ...
    owner = assign_cores(tiny, dets, config.box_margin)
    assert loose_cores(tiny, owner, dets, config) == []
    assert loose_cores(tiny, owner, dets, replace(config, edge_core_fraction=0.05)) == [1]  # ... over 3


def test_a_small_instance_a_detection_backs_is_not_merged() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 5:35] = 1
    labels[12:22, 5:35] = 2
    labels[22:25, 5:35] = 3  # a thin instance off the edge
    labels[25:35, 5:35] = 4
    assert not (_merge_small(labels, 4, 0.5) == 3).any()
    assert (_merge_small(labels, 4, 0.5, keep={3}) == 3).sum() == 90
