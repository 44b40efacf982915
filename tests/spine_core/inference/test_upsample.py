"""The segmentation's upsampling with interpolation only near boundaries gives exactly what
interpolating every voxel gives, on scaled, permuted and flipped grids; an oblique pair is left to
the full interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from spine_core.inference.preprocess import Grid, sample_onto
from spine_core.inference.upsample import argmax_upsample, first_argmax, parallel_axes


def _logits(shape: tuple[int, int, int], channels: int, seed: int) -> torch.Tensor:
    """Smooth random logits: regions of each class several voxels wide, as a network gives."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(channels, *shape))
    smooth = np.stack([ndimage.gaussian_filter(c, 1.5) for c in raw]) * 8.0
    smooth[0] += 0.5  # background a little ahead, as it is over most of a CT
    return torch.from_numpy(smooth.astype(np.float32))[None]


def _everywhere(logits: torch.Tensor, lut: np.ndarray, allowed: np.ndarray, model: Grid,
                target: Grid) -> np.ndarray:
    """The reference: trilinear logits at every target voxel, argmax, nearest allowed voxel."""
    best = sample_onto(logits, model.affine, target).argmax(dim=1)[0].numpy().astype(np.uint8)
    ok = sample_onto(torch.from_numpy(allowed.astype(np.float32))[None, None], model.affine, target,
                     mode="nearest")[0, 0].numpy() > 0.5
    out = lut[best]
    out[~ok] = 0
    return out


def _model() -> tuple[Grid, torch.Tensor, np.ndarray, np.ndarray]:
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    affine[:3, 3] = [-40.0, 10.0, 5.0]
    model = Grid((18, 20, 22), affine)
    logits = _logits(model.shape, 5, seed=1)
    lut = np.array([0, 3, 4, 5, 6], dtype=np.uint8)  # channel -> level id
    allowed = ndimage.binary_dilation(logits[0].argmax(dim=0).numpy() > 0, iterations=1)
    return model, logits, lut, allowed


@pytest.mark.parametrize("case", ["scaled", "permuted and flipped", "box"])
def test_interpolating_only_near_boundaries_equals_interpolating_everywhere(case: str) -> None:
    model, logits, lut, allowed = _model()
    scale = np.diag([0.8, 0.7, 0.7, 1.0])
    target_affine = model.affine @ np.diag([1 / 2.5, 1 / 2.5, 1 / 2.5, 1.0]) @ scale
    target_affine[:3, 3] = model.affine[:3, 3] + [-1.1, 0.37, 0.9]  # off the model's voxel centres
    shape = (60, 72, 80)
    if case == "permuted and flipped":
        # target index (i, j, k) reads (k, i, -j): a sagittal-stored series beside an axial model
        swap = np.zeros((4, 4))
        swap[3, 3] = 1
        swap[0, 2], swap[1, 0], swap[2, 1], swap[2, 3] = 1, 1, -1, shape[1] - 1
        target_affine = target_affine @ swap
        shape = (shape[2], shape[0], shape[1])
    target = Grid(shape, target_affine)
    start, stop = np.zeros(3, int), np.array(shape)
    if case == "box":
        start, stop = np.array([5, 9, 3]), np.array([50, 61, 70])
    index_map = np.linalg.inv(model.affine) @ target.affine
    fast = argmax_upsample(logits, lut, allowed, index_map, start, stop)
    assert fast is not None
    sub = Grid(tuple(int(v) for v in stop - start), target.affine @ _shift(start))
    reference = _everywhere(logits, lut, allowed, model, sub)
    assert fast.shape == reference.shape
    assert (reference > 0).mean() > 0.05 and len(np.unique(reference)) >= 4  # a real test image
    np.testing.assert_array_equal(fast, reference)


def test_an_oblique_pair_is_left_to_full_interpolation() -> None:
    model, logits, lut, allowed = _model()
    th = np.deg2rad(12)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
    target = Grid((30, 30, 30), rot @ model.affine)
    index_map = np.linalg.inv(model.affine) @ target.affine
    assert parallel_axes(index_map) is None
    assert argmax_upsample(logits, lut, allowed, index_map, np.zeros(3, int), np.array(target.shape)) is None


def _shift(start: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = start
    return m


def test_first_argmax_is_torchs_argmax_ties_included() -> None:
    rng = np.random.default_rng(3)
    values = torch.from_numpy(rng.integers(0, 4, size=(7, 9, 11)).astype(np.float32))  # many ties
    np.testing.assert_array_equal(first_argmax(values).numpy(), values.argmax(dim=0).numpy())
    smooth = _logits((6, 7, 8), 20, seed=2)[0]
    np.testing.assert_array_equal(first_argmax(smooth).numpy(), smooth.argmax(dim=0).numpy())
    assert first_argmax(smooth).dtype == torch.uint8
