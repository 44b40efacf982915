"""DisplayGeometry.box_in_plane: a stored-slice box seen in every plane, checked against the
plane image of a mask that fills exactly the box's voxels (so boxes and masks line up)."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.boxes import Box
from spine_core.io.dicom_write import ct_affine
from spine_core.render import DisplayGeometry, Plane, plane_pixels

SHAPE = (12, 20, 24)


def _affines() -> dict[str, np.ndarray]:
    axial = ct_affine(SHAPE, (2.5, 0.8, 0.7))
    head_first = ct_affine(SHAPE, (1.5, 0.9, 0.9), superior_first=True)
    # a sagittal acquisition: a0 runs Right -> Left, a1 Superior -> Inferior,
    # a2 Anterior -> Posterior
    sagittal = np.eye(4)
    sagittal[:3, 0] = (3.0, 0.0, 0.0)
    sagittal[:3, 1] = (0.0, 0.0, -0.6)
    sagittal[:3, 2] = (0.0, 0.8, 0.0)
    # a coronal acquisition, mirrored in-plane: a1 Inferior -> Superior, a2 Left -> Right
    coronal = np.eye(4)
    coronal[:3, 0] = (0.0, 2.0, 0.0)
    coronal[:3, 1] = (0.0, 0.0, 0.75)
    coronal[:3, 2] = (-0.9, 0.0, 0.0)
    return {"axial": axial, "head_first": head_first, "sagittal": sagittal, "coronal": coronal}


BOX = Box(slice_index=4, x=6.0, y=5.0, width=9.0, height=7.0)


def _box_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[BOX.slice_index, 5:12, 6:15] = 1
    return mask


def _inside(shape: tuple[int, int], box: object) -> np.ndarray:
    """Pixels whose centres lie inside an edge-coordinate rectangle."""
    rows = np.arange(shape[0])[:, None] + 0.5
    cols = np.arange(shape[1])[None, :] + 0.5
    return ((rows >= box.row0) & (rows < box.row1)  # type: ignore[attr-defined]
            & (cols >= box.col0) & (cols < box.col1))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(_affines()))
@pytest.mark.parametrize("plane", list(Plane))
def test_box_covers_exactly_the_masked_pixels_on_every_slice(name: str, plane: Plane) -> None:
    geo = DisplayGeometry.from_affine(SHAPE, _affines()[name])
    mask = _box_mask()
    hits = 0
    for index in range(geo.slice_count(plane)):
        pixels = plane_pixels(mask, geo, plane, index) > 0
        box = geo.box_in_plane(BOX, plane, index)
        if box is None:
            assert not pixels.any(), f"{name} {plane.value} slice {index}: mask shown, box missing"
            continue
        hits += 1
        np.testing.assert_array_equal(_inside(pixels.shape, box), pixels)
    expected = 1 if plane is geo.acquisition_plane else None
    if expected is not None:
        assert hits == expected
    else:
        assert hits > 1


@pytest.mark.parametrize("name", list(_affines()))
def test_acquisition_plane_matches_box_to_display(name: str) -> None:
    geo = DisplayGeometry.from_affine(SHAPE, _affines()[name])
    shown = geo.box_to_display(BOX)
    assert geo.box_in_plane(BOX, geo.acquisition_plane, shown.index) == shown
