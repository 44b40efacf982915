"""Network outputs to vertebrae: one core per touching vertebra, the watershed, fragments merged,
and the ensemble's detector confirming the U-Net's cores."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spine_core.inference.xray.config import XrayConfig
from spine_core.inference.xray.decode import (
    Detection,
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


def test_ensemble_adds_a_strong_detection_off_the_cores() -> None:
    config = XrayConfig(min_core_px=1)
    labels = _stack(3, gap=2)
    probs = _probs(labels, config)
    probs[1][labels == 5] = 0.0  # the U-Net found the bone but no core of the third vertebra
    det, dets = _det(labels, [(11.0, 32.0), (23.0, 32.0), (35.0, 32.0)], config)
    inst = ensemble_instances(probs, det, dets, config)
    assert len(inst) == 3
    assert np.bincount(inst.labels[labels == 5]).argmax() > 0
