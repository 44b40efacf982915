"""Vertebra surfaces, fracture boxes and the Plotly figure, from a label mask read from NIfTI."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_core.errors import InputError, MaskError
from spine_core.labels import LEVEL_COLOURS, level_colour_hex
from spine_core.mesh import box_mesh, plotly_figure, vertebra_meshes
from spine_core.volume import Volume, from_nifti_arrays

SHAPE = (40, 36, 44)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh (positive when its normals point outwards)."""
    tri = vertices.astype(np.float64)[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def labelled_mask(affine: np.ndarray) -> Volume:
    """Three stacked ellipsoids: C3 (id 3) on top of C4 (id 4), T1 (id 8) lowest, a0 = S."""
    a0, a1, a2 = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    arr = np.zeros(SHAPE, np.uint8)
    for lid, centre in ((8, 7), (4, 19), (3, 31)):
        inside = ((a0 - centre) / 5.5) ** 2 + ((a1 - 18) / 11.0) ** 2 + ((a2 - 22) / 14.0) ** 2 <= 1
        arr[inside] = lid
    return Volume(arr, affine)


AXIAL = np.array([[0, 0, 0.8, -20], [0, 0.8, 0, -15], [2.0, 0, 0, 100], [0, 0, 0, 1.0]])
# stored superior-first, rows towards Anterior, columns towards Right: a mirrored, flipped grid
MIRRORED = np.array([[0, 0, -0.8, 20], [0, -0.8, 0, 15], [-2.0, 0, 0, 180], [0, 0, 0, 1.0]])


@pytest.fixture(params=["axial", "mirrored"])
def mask_from_nifti(request: pytest.FixtureRequest, tmp_path: Path) -> Volume:
    vol = labelled_mask(AXIAL if request.param == "axial" else MIRRORED)
    data, ras = vol.to_nifti_arrays()
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), ras), path)
    img = nib.load(path)
    return from_nifti_arrays(np.asarray(img.dataobj).astype(np.uint8), img.affine)


def lps_bounds(mask: Volume, lid: int) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of a level's voxels, voxel extents (±0.5) included."""
    idx = np.argwhere(mask.array == lid)
    lo, hi = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    lps = mask.index_to_lps(corners)
    return lps.min(axis=0), lps.max(axis=0)


def test_every_level_gets_a_closed_outward_mesh_inside_its_box(mask_from_nifti: Volume) -> None:
    mask = mask_from_nifti
    meshes = vertebra_meshes(mask)
    assert [m.name for m in meshes] == ["C3", "C4", "T1"]  # craniocaudal order
    for m in meshes:
        assert m.colour == LEVEL_COLOURS[m.level_id]
        assert m.vertices.dtype == np.float32 and m.faces.dtype == np.int32
        assert m.faces.min() >= 0 and m.faces.max() < len(m.vertices)
        lo, hi = lps_bounds(mask, m.level_id)
        assert (m.vertices >= lo - 1e-3).all() and (m.vertices <= hi + 1e-3).all()
        # the surface hugs the level: it reaches close to each side of the box
        assert np.abs(m.vertices.min(axis=0) - lo).max() < 2.5
        assert np.abs(m.vertices.max(axis=0) - hi).max() < 2.5
        voxel_mm3 = (mask.array == m.level_id).sum() * abs(np.linalg.det(mask.affine[:3, :3]))
        assert signed_volume(m.vertices, m.faces) == pytest.approx(voxel_mm3, rel=0.15)


def test_surface_follows_the_affine_not_the_array_order() -> None:
    plain = vertebra_meshes(labelled_mask(AXIAL), ["C3"], smooth_iterations=0, target_faces=None)[0]
    mirrored = vertebra_meshes(labelled_mask(MIRRORED), ["C3"], smooth_iterations=0, target_faces=None)[0]
    # C3 sits on top in both grids: its centre is the most superior of the levels in LPS
    for mesh, aff in ((plain, AXIAL), (mirrored, MIRRORED)):
        centre = Volume(np.zeros(SHAPE, np.uint8), aff).index_to_lps((31, 18, 22))
        np.testing.assert_allclose(mesh.vertices.mean(axis=0), centre, atol=1.0)


def test_levels_by_name_or_id_and_missing_levels() -> None:
    mask = labelled_mask(AXIAL)
    assert [m.name for m in vertebra_meshes(mask, ["t1", 3])] == ["C3", "T1"]
    with pytest.raises(MaskError, match="L2"):
        vertebra_meshes(mask, ["L2"])
    with pytest.raises(MaskError, match="integer ids"):
        vertebra_meshes(Volume(mask.array.astype(np.float32), AXIAL))
    with pytest.raises(InputError, match="step_mm"):
        vertebra_meshes(mask, step_mm=0)
    assert vertebra_meshes(Volume(np.zeros(SHAPE, np.uint8), AXIAL)) == []
    odd = mask.array.copy()
    odd[0, 0, 0] = 60
    with pytest.raises(MaskError, match=r"\[60\]"):
        vertebra_meshes(Volume(odd, AXIAL))


def test_decimation_caps_the_face_count_and_tiny_levels_still_get_a_mesh() -> None:
    mask = labelled_mask(AXIAL)
    full = vertebra_meshes(mask, ["C4"], step_mm=0.8, target_faces=None)[0]
    small = vertebra_meshes(mask, ["C4"], step_mm=0.8, target_faces=400)[0]
    assert len(full.faces) > 1500
    assert len(small.faces) <= 400 * 1.25
    assert signed_volume(small.vertices, small.faces) == pytest.approx(
        signed_volume(full.vertices, full.faces), rel=0.15
    )
    arr = np.zeros(SHAPE, np.uint8)
    arr[20, 18, 22] = 5  # a single voxel
    (tiny,) = vertebra_meshes(Volume(arr, AXIAL))
    assert tiny.name == "C5" and len(tiny.faces) > 0


def test_box_mesh_corners_and_volume() -> None:
    box = box_mesh(MIRRORED, (4, 6), x=10, y=20, width=8, height=5, name="fracture C3")
    index = np.array([[k, r, c] for k in (3.5, 6.5) for r in (19.5, 24.5) for c in (9.5, 17.5)])
    expected = Volume(np.zeros(SHAPE, np.uint8), MIRRORED).index_to_lps(index)
    assert sorted(map(tuple, np.round(box.vertices, 6))) == sorted(map(tuple, np.round(expected, 6)))
    assert signed_volume(box.vertices, box.faces) == pytest.approx(3 * 2.0 * 5 * 0.8 * 8 * 0.8)
    reversed_slices = box_mesh(AXIAL, (6, 4), 0, 0, 1, 1)
    assert signed_volume(reversed_slices.vertices, reversed_slices.faces) == pytest.approx(3 * 2.0 * 0.64)
    with pytest.raises(InputError, match="no area"):
        box_mesh(AXIAL, (1, 1), 0, 0, 0, 3)


def test_plotly_figure_has_one_named_trace_per_vertebra_and_box() -> None:
    meshes = vertebra_meshes(labelled_mask(AXIAL))
    box = box_mesh(AXIAL, (28, 30), 15, 10, 6, 6, name="fracture C3")
    fig = plotly_figure(meshes, [box])
    names = [t.name for t in fig.data]
    assert names == ["C3", "C4", "T1", "fracture C3"]
    for trace, mesh in zip(fig.data, meshes):
        assert trace.type == "mesh3d"
        assert trace.color == level_colour_hex(mesh.level_id)
        assert mesh.name in trace.hovertemplate
        assert len(trace.i) == len(mesh.faces) and len(trace.x) == len(mesh.vertices)
    assert fig.data[-1].opacity == pytest.approx(0.35)
    scene = fig.layout.scene
    assert scene.aspectmode == "data"
    assert scene.camera.eye.y < 0 and scene.camera.eye.x == 0 and scene.camera.up.z == 1
