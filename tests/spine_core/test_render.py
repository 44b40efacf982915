"""Rendering: window LUT, radiological plane orientation from real NIfTI files, linked cursor,
overlays, boxes, zoom and encoding."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spine_core.boxes import Box
from spine_core.errors import InputError, MaskError
from spine_core.io.dicom_write import ct_affine
from spine_core.labels import LEVEL_COLOURS
from spine_core.render import (
    BONE,
    BRAIN,
    SOFT_TISSUE,
    BoxOverlay,
    DisplayBox,
    DisplayGeometry,
    OverlayStyle,
    Plane,
    Window,
    ZoomBox,
    apply_window,
    colour_overlay,
    encode_jpeg,
    encode_png,
    extract_plane,
    level_anchors,
    plane_pixels,
    render_slice,
    spine_bbox,
    window_preset,
)
from spine_core.volume import Volume, from_nifti_arrays

# --------------------------------------------------------------------------------------------
# Window / level
# --------------------------------------------------------------------------------------------


def dicom_linear_window(x: np.ndarray, width: float, level: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently, output range 0..255."""
    x = x.astype(np.float64)
    lower = level - 0.5 - (width - 1) / 2
    upper = level - 0.5 + (width - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        y = ((x - (level - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(x <= lower, 0, np.where(x > upper, 255, y))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("window", [BONE, SOFT_TISSUE, BRAIN, Window(1, 0), Window(2500.5, -333.3)])
def test_window_lut_equals_reference_formula_over_whole_int16_range(window: Window) -> None:
    values = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(256, 256)
    got = apply_window(values, window.width, window.level)
    assert got.dtype == np.uint8 and got.shape == values.shape
    np.testing.assert_array_equal(got, dicom_linear_window(values, window.width, window.level))


def test_window_on_strided_and_other_integer_slices() -> None:
    rng = np.random.default_rng(1)
    vol = rng.integers(-1200, 3000, size=(5, 40, 30)).astype(np.int16)
    sag = vol[::-1, :, 7]  # non-contiguous view, as a sagittal cut is
    np.testing.assert_array_equal(apply_window(sag, 400, 40), dicom_linear_window(sag, 400, 40))
    u16 = rng.integers(0, 65535, size=(20, 20)).astype(np.uint16)
    np.testing.assert_array_equal(apply_window(u16, 3000, 1500), dicom_linear_window(u16, 3000, 1500))
    u8 = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(apply_window(u8, 100, 128), dicom_linear_window(u8, 100, 128))
    big_endian = vol[0].astype(">i2")
    np.testing.assert_array_equal(apply_window(big_endian, 1800, 400), dicom_linear_window(vol[0], 1800, 400))


def test_window_float_volume_within_one_grey_level() -> None:
    x = np.linspace(-1500, 2500, 10007, dtype=np.float32)
    diff = apply_window(x, 1800, 400).astype(int) - dicom_linear_window(x, 1800, 400).astype(int)
    assert np.abs(diff).max() <= 1


def test_window_presets_and_bad_windows() -> None:
    assert window_preset("Bone") == Window(1800, 400, "bone")
    assert window_preset("soft tissue") == Window(400, 40, "soft tissue")
    assert window_preset("brain") == Window(80, 40, "brain")
    assert window_preset("custom", 600, 100) == Window(600, 100)
    with pytest.raises(InputError, match="width"):
        Window(0, 40)
    with pytest.raises(InputError, match="unknown window preset"):
        window_preset("lung-ish")
    with pytest.raises(InputError, match="custom window needs"):
        window_preset("custom", 600)


# --------------------------------------------------------------------------------------------
# Orientation: markers at known patient positions, stored in many orientations, via NIfTI files
# --------------------------------------------------------------------------------------------

# Canonical grid (axes S, P, L) with anisotropic voxels: 2.5 mm slices, 1.0 x 0.8 mm in-plane.
CANON_SHAPE = (16, 22, 26)
CANON_SPACING = (2.5, 1.0, 0.8)
CENTRE = tuple((n - 1) // 2 for n in CANON_SHAPE)
# marker value -> canonical index (S, P, L); each lies off-centre in exactly one direction
MARKERS = {
    1000: (CENTRE[0], CENTRE[1], 22),  # patient Left
    2000: (CENTRE[0], 3, CENTRE[2]),  # Anterior
    3000: (13, CENTRE[1], CENTRE[2]),  # Superior
}
LEFT, ANTERIOR, SUPERIOR = 1000, 2000, 3000


def canonical_volume() -> Volume:
    arr = np.full(CANON_SHAPE, -100, dtype=np.int16)
    for value, idx in MARKERS.items():
        arr[idx] = value
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    aff[2, 0], aff[1, 1], aff[0, 2] = CANON_SPACING  # a0 -> +z (S), a1 -> +y (P), a2 -> +x (L)
    aff[:3, 3] = (-10.0, -12.0, 50.0)
    return Volume(arr, aff)


def restored(volume: Volume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    """The same voxels stored another way: new axis i = old axis perm[i], flipped where asked."""
    arr = volume.array.transpose(perm)
    key = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    arr = np.ascontiguousarray(arr[key])
    to_old = np.zeros((4, 4))
    to_old[3, 3] = 1
    for new, old in enumerate(perm):
        if flips[new]:
            to_old[old, new] = -1
            to_old[old, 3] = volume.shape[old] - 1
        else:
            to_old[old, new] = 1
    return Volume(arr, volume.affine @ to_old)


def rotated(volume: Volume, degrees: float) -> Volume:
    """The grid tilted about the patient's S axis (an oblique-ish acquisition)."""
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return Volume(volume.array, rot @ volume.affine)


def through_nifti(volume: Volume, path: Path) -> Volume:
    data, ras = volume.to_nifti_arrays()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), ras), path)
    img = nib.load(path)
    return from_nifti_arrays(np.asarray(img.dataobj), img.affine)


ORIENTATIONS = {
    "axial superior-first": ((0, 1, 2), (True, False, False)),
    "axial inferior-first": ((0, 1, 2), (False, False, False)),
    "axial rows anterior-to-posterior flipped": ((0, 1, 2), (False, True, True)),
    "sagittal stored": ((2, 0, 1), (False, True, False)),
    "coronal stored": ((1, 0, 2), (False, True, False)),
    "scrambled": ((1, 2, 0), (True, True, True)),
}


@pytest.fixture(params=sorted(ORIENTATIONS) + ["sagittal stored, tilted 12 degrees"])
def stored_volume(request: pytest.FixtureRequest, tmp_path: Path) -> Volume:
    name = request.param
    if name.endswith("tilted 12 degrees"):
        vol = rotated(restored(canonical_volume(), *ORIENTATIONS["sagittal stored"]), 12.0)
    else:
        vol = restored(canonical_volume(), *ORIENTATIONS[name])
    return through_nifti(vol, tmp_path / "image.nii.gz")


def find_marker(volume: Volume, plane: Plane, value: int) -> tuple[int, int, int, tuple[int, int]]:
    """(slice index, row, col, image shape) of ``value`` in the extracted plane slices."""
    geo = DisplayGeometry.from_volume(volume)
    hits = []
    for k in range(geo.slice_count(plane)):
        img = extract_plane(volume, plane, k).pixels
        for r, c in zip(*np.nonzero(img == value)):
            hits.append((k, int(r), int(c), img.shape))
    assert hits, f"marker {value} not found in the {plane.value} slices"
    ks = sorted({h[0] for h in hits})
    assert len(ks) == 1, "a marker voxel lies in one slice"
    return hits[0]


def test_display_view_matches_volume_reoriented(stored_volume: Volume) -> None:
    geo = DisplayGeometry.from_volume(stored_volume)
    reo = stored_volume.reoriented(("S", "P", "L"))
    np.testing.assert_array_equal(geo.view(stored_volume.array), reo.array)
    np.testing.assert_allclose(geo.display_affine, reo.affine, atol=1e-9)
    assert np.shares_memory(geo.view(stored_volume.array), stored_volume.array)


def test_axial_shows_anterior_on_top_and_patient_left_on_screen_right(stored_volume: Volume) -> None:
    k_s, *_ = find_marker(stored_volume, Plane.AXIAL, SUPERIOR)
    k_l, r_l, c_l, (h, w) = find_marker(stored_volume, Plane.AXIAL, LEFT)
    _, r_a, c_a, _ = find_marker(stored_volume, Plane.AXIAL, ANTERIOR)
    assert c_l > w * 0.75, "patient Left is on the screen's right"
    assert r_a < h * 0.25, "Anterior is at the top"
    assert k_s > k_l, "axial slice index grows towards Superior"
    assert DisplayGeometry.from_volume(stored_volume).edges("axial") == ("A", "P", "R", "L")


def test_sagittal_shows_superior_on_top_and_anterior_on_left(stored_volume: Volume) -> None:
    k_l, *_ = find_marker(stored_volume, Plane.SAGITTAL, LEFT)
    k_s, r_s, _, (h, w) = find_marker(stored_volume, Plane.SAGITTAL, SUPERIOR)
    _, _, c_a, _ = find_marker(stored_volume, Plane.SAGITTAL, ANTERIOR)
    assert r_s < h * 0.25, "Superior is at the top"
    assert c_a < w * 0.25, "Anterior is on the left"
    assert k_l > k_s, "sagittal slice index grows towards patient Left"
    assert DisplayGeometry.from_volume(stored_volume).edges("sagittal") == ("S", "I", "A", "P")


def test_coronal_shows_superior_on_top_and_patient_right_on_screen_left(stored_volume: Volume) -> None:
    k_a, *_ = find_marker(stored_volume, Plane.CORONAL, ANTERIOR)
    k_s, r_s, _, (h, w) = find_marker(stored_volume, Plane.CORONAL, SUPERIOR)
    _, _, c_l, _ = find_marker(stored_volume, Plane.CORONAL, LEFT)
    assert r_s < h * 0.25, "Superior is at the top"
    assert c_l > w * 0.75, "patient Left on the screen's right"
    assert k_a < k_s, "coronal slice index grows towards Posterior"


def test_anisotropic_planes_are_resampled_to_square_pixels() -> None:
    vol = canonical_volume()
    geo = DisplayGeometry.from_volume(vol)
    # sagittal: rows along S (2.5 mm) x cols along P (1.0 mm) -> rows stretched 2.5x
    assert geo.plane_shape("sagittal") == (40, 22)
    assert geo.pixel_spacing("sagittal") == pytest.approx((1.0, 1.0))
    # coronal: S (2.5 mm) x L (0.8 mm) -> 0.8 mm pixels
    assert geo.plane_shape("coronal") == (50, 26)
    assert geo.aspect("coronal") == pytest.approx(1.0)
    # axial: P (1.0) x L (0.8) -> columns kept, rows stretched to 0.8 mm
    assert geo.plane_shape("axial") == (28, 26)
    raw = DisplayGeometry.from_affine(vol.shape, vol.affine, square_pixels=False)
    assert raw.plane_shape("sagittal") == (16, 22)
    assert raw.aspect("sagittal") == pytest.approx(2.5)
    img = extract_plane(vol, "sagittal", MARKERS[SUPERIOR][2])
    assert img.pixels.shape == (40, 22) and img.aspect == pytest.approx(1.0)
    # a voxel becomes a 2.5-pixel-tall run (2 or 3 rows) of the same value
    rows = np.nonzero(img.pixels == SUPERIOR)[0]
    assert 2 <= len(rows) <= 3 and np.ptp(rows) == len(rows) - 1
    lin = extract_plane(vol, "sagittal", MARKERS[SUPERIOR][2], interpolation="linear").pixels
    assert lin.dtype == np.int16 and lin.max() <= SUPERIOR and (lin > -100).sum() > len(rows)


def test_slice_position_mm_follows_the_patient_axis(stored_volume: Volume) -> None:
    geo = DisplayGeometry.from_volume(stored_volume)
    k, *_ = find_marker(stored_volume, Plane.AXIAL, SUPERIOR)
    src = np.argwhere(stored_volume.array == SUPERIOR)[0]
    z = stored_volume.index_to_lps(src)[2]
    assert geo.slice_position_mm("axial", k) == pytest.approx(z, abs=1e-6)
    assert extract_plane(stored_volume, "axial", k).position_mm == pytest.approx(z, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Linked cursor
# --------------------------------------------------------------------------------------------


def test_click_voxel_click_round_trip(stored_volume: Volume) -> None:
    geo = DisplayGeometry.from_volume(stored_volume)
    rng = np.random.default_rng(3)
    for _ in range(40):
        vox = tuple(int(rng.integers(0, n)) for n in stored_volume.shape)
        cur = geo.cursor_at_voxel(vox, stored_volume)
        assert cur.value == stored_volume.array[vox]
        np.testing.assert_allclose(cur.lps, stored_volume.index_to_lps(vox))
        assert geo.lps_to_voxel(cur.lps) == vox
        for plane in Plane:
            row, col = cur.pixels[plane]
            assert geo.display_to_voxel(plane, cur.slices[plane], row, col) == vox
            again = geo.cursor(plane, cur.slices[plane], row, col)
            assert again.slices == cur.slices and again.pixels == cur.pixels


def test_click_on_a_marker_links_the_other_planes(stored_volume: Volume) -> None:
    geo = DisplayGeometry.from_volume(stored_volume)
    k, r, c, _ = find_marker(stored_volume, Plane.AXIAL, LEFT)
    cur = geo.cursor("axial", k, r, c, stored_volume)
    assert cur.value == LEFT
    for plane in (Plane.SAGITTAL, Plane.CORONAL):
        img = extract_plane(stored_volume, plane, cur.slices[plane]).pixels
        assert img[cur.pixels[plane]] == LEFT


def test_click_outside_the_image_or_slice_range_is_refused() -> None:
    geo = DisplayGeometry.from_volume(canonical_volume())
    with pytest.raises(InputError, match="outside"):
        geo.display_to_voxel("axial", 0, 500, 3)
    with pytest.raises(InputError, match="axial slice 99"):
        geo.display_to_voxel("axial", 99, 0, 0)
    with pytest.raises(InputError, match="unknown plane"):
        geo.slice_count("oblique")


# --------------------------------------------------------------------------------------------
# Boxes between the database's stored-slice pixels and the display
# --------------------------------------------------------------------------------------------


def test_box_on_a_standard_axial_stack_is_unchanged() -> None:
    vol = Volume(np.zeros((10, 64, 48), np.int16), ct_affine((10, 64, 48), (1.0, 0.5, 0.5)))
    geo = DisplayGeometry.from_volume(vol)
    assert geo.acquisition_plane is Plane.AXIAL
    disp = geo.box_to_display(Box(4, x=10, y=20, width=5, height=7))
    assert disp == DisplayBox(Plane.AXIAL, 4, 20, 10, 27, 15)
    assert geo.box_from_display(disp) == Box(4, 10, 20, 5, 7)


def test_box_on_a_flipped_stack_is_mirrored_and_round_trips() -> None:
    shape = (10, 64, 48)
    aff = ct_affine(shape, (1.0, 0.5, 0.5), superior_first=True)
    aff[:3, 1] *= -1  # rows run towards Anterior
    geo = DisplayGeometry.from_volume(Volume(np.zeros(shape, np.int16), aff))
    box = Box(2, x=10, y=20, width=5, height=7)
    disp = geo.box_to_display(box)
    assert disp.index == 7  # slice 2 of 10, counted from the top
    assert (disp.row0, disp.row1) == (64 - 27, 64 - 20)
    assert (disp.col0, disp.col1) == (10, 15)
    assert geo.box_from_display(disp) == box
    with pytest.raises(InputError, match="stored slices"):
        geo.box_from_display(DisplayBox(Plane.SAGITTAL, 3, 0, 0, 4, 4))


def test_box_drawn_in_display_covers_the_same_voxels(stored_volume: Volume) -> None:
    geo = DisplayGeometry.from_volume(stored_volume)
    plane = geo.acquisition_plane
    k = geo.slice_count(plane) // 2
    h, w = geo.plane_shape(plane)
    disp = DisplayBox(plane, k, h * 0.25, w * 0.5, h * 0.75, w * 0.9)
    src = geo.box_from_display(disp)
    back = geo.box_to_display(src)
    for a, b in zip(
        (back.row0, back.col0, back.row1, back.col1), (disp.row0, disp.col0, disp.row1, disp.col1)
    ):
        assert a == pytest.approx(b)
    # the display pixel at the box's centre maps to a stored voxel inside the stored box
    vox = geo.display_to_voxel(plane, k, (disp.row0 + disp.row1) / 2, (disp.col0 + disp.col1) / 2)
    assert vox[0] == src.slice_index
    assert src.y <= vox[1] + 0.5 <= src.y + src.height
    assert src.x <= vox[2] + 0.5 <= src.x + src.width


# --------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------


def test_overlay_colour_and_opacity_are_exact() -> None:
    grey = np.full((8, 8), 100, np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 3
    labels[6, 6] = 12
    rgb = colour_overlay(grey, labels, OverlayStyle(opacity=0.4))
    for (r, c), lid in (((3, 3), 3), ((6, 6), 12)):
        expected = [round(100 * 0.6 + ch * 0.4) for ch in LEVEL_COLOURS[lid]]
        assert rgb[r, c].tolist() == expected
    assert rgb[0, 0].tolist() == [100, 100, 100]
    opaque = colour_overlay(grey, labels, OverlayStyle(opacity=1.0))
    assert tuple(opaque[3, 3]) == LEVEL_COLOURS[3]


def test_hidden_levels_are_not_drawn() -> None:
    grey = np.full((8, 8), 50, np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[1, 1], labels[5, 5] = 3, 4
    rgb = colour_overlay(grey, labels, OverlayStyle(opacity=0.5, visible=frozenset({4})))
    assert rgb[1, 1].tolist() == [50, 50, 50]
    assert rgb[5, 5].tolist() != [50, 50, 50]
    assert OverlayStyle(visible={1, 2}).visible == frozenset({1, 2})  # type: ignore[arg-type]


def test_outline_mode_colours_only_borders() -> None:
    grey = np.zeros((12, 12), np.uint8)
    labels = np.zeros((12, 12), np.uint8)
    labels[3:9, 3:9] = 8
    rgb = colour_overlay(grey, labels, OverlayStyle(opacity=1.0, outline=True))
    assert tuple(rgb[3, 5]) == LEVEL_COLOURS[8]  # border
    assert tuple(rgb[8, 8]) == LEVEL_COLOURS[8]
    assert rgb[5, 5].tolist() == [0, 0, 0]  # interior left grey
    assert rgb[1, 1].tolist() == [0, 0, 0]


def test_overlay_rejects_non_canonical_values() -> None:
    with pytest.raises(MaskError, match="canonical"):
        colour_overlay(np.zeros((2, 2), np.uint8), np.full((2, 2), 300, np.int32), OverlayStyle())
    with pytest.raises(MaskError, match="found 40"):
        colour_overlay(np.zeros((2, 2), np.uint8), np.full((2, 2), 40, np.uint8), OverlayStyle())
    with pytest.raises(InputError, match="opacity"):
        OverlayStyle(opacity=1.5)


def _spine_like(shape: tuple[int, int, int] = (20, 64, 64)) -> tuple[Volume, Volume]:
    """Axial stack (ct_affine) with a 'vertebral column' labelled C3/C4 and a bright sternum."""
    aff = ct_affine(shape, (2.0, 1.0, 1.0))
    arr = np.full(shape, -1000, np.int16)
    arr[:, 8:56, 8:56] = 40  # body
    arr[:, 36:50, 26:38] = 700  # spine: posterior, midline
    arr[:, 12:15, 30:34] = 600  # sternum: anterior, small
    mask = np.zeros(shape, np.uint8)
    mask[:10, 36:50, 26:38] = 4  # C4 below
    mask[10:, 36:50, 26:38] = 3  # C3 above
    vol = Volume(arr, aff)
    return vol, vol.with_array(mask)


def test_render_slice_colours_window_boxes_cursor_and_zoom() -> None:
    vol, mask = _spine_like()
    rgb = render_slice(vol, mask, "axial", 15, SOFT_TISSUE, overlay=OverlayStyle(opacity=0.5))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    body = int(dicom_linear_window(np.array([40]), 400, 40)[0])
    bone = int(dicom_linear_window(np.array([700]), 400, 40)[0])
    assert rgb[20, 10].tolist() == [body] * 3
    assert rgb[40, 30].tolist() == [round(bone * 0.5 + ch * 0.5) for ch in LEVEL_COLOURS[3]]
    # level 3 hidden: plain grey
    hidden = render_slice(vol, mask, "axial", 15, SOFT_TISSUE, overlay=OverlayStyle(visible=frozenset({4})))
    assert hidden[40, 30].tolist() == [bone] * 3

    box = BoxOverlay(10, 20, 20, 30, colour=(0, 255, 0), thickness=1)
    zoom = ZoomBox(5, 10, 45, 50)
    out = render_slice(vol, None, "axial", 15, SOFT_TISSUE, boxes=[box], cursor=(30, 40), zoom=zoom)
    assert out.shape == (40, 40, 3)
    assert out[10 - 5, 25 - 10].tolist() == [0, 255, 0]  # top edge, shifted into the crop
    assert out[19 - 5, 25 - 10].tolist() == [0, 255, 0]  # bottom edge (last covered row)
    assert out[15 - 5, 25 - 10].tolist() == [body] * 3  # inside the box
    assert out[30 - 5, 0].tolist() == [255, 255, 0]  # crosshair row
    assert out[30 - 5, 40 - 10].tolist() == [body] * 3  # open centre of the crosshair
    full = render_slice(vol, None, "axial", 15, SOFT_TISSUE)
    np.testing.assert_array_equal(out[20:22, 0:3], full[25:27, 10:13])


def test_render_slice_refuses_a_mask_on_another_grid() -> None:
    vol, mask = _spine_like()
    other = Volume(mask.array, mask.affine @ np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(MaskError, match="does not match"):
        render_slice(vol, other, "axial", 0)


def test_level_anchors_and_labels_in_sagittal() -> None:
    vol, mask = _spine_like()
    geo = DisplayGeometry.from_volume(vol)
    i = geo.source_to_display((0, 40, 32))[2]
    labels = plane_pixels(mask.array, geo, "sagittal", i)
    anchors = level_anchors(labels)
    assert [a.name for a in anchors] == ["C3", "C4"]  # top to bottom
    c3 = anchors[0]
    rows, cols = np.nonzero(labels == 3)
    assert c3.row == pytest.approx(rows.mean() + 0.5) and c3.col == pytest.approx(cols.mean() + 0.5)
    assert c3.text_col < cols.min() and c3.text_anchor == "rm"
    plain = render_slice(vol, mask, "sagittal", i, overlay=None)
    labelled = render_slice(vol, mask, "sagittal", i, overlay=None, level_labels=True)
    r, c = int(c3.text_row), int(c3.text_col)
    assert (labelled[r - 6 : r + 6, c - 20 : c] != plain[r - 6 : r + 6, c - 20 : c]).any()
    assert (labelled[:, int(cols.max()) + 1 :] == plain[:, int(cols.max()) + 1 :]).all()


def test_spine_bbox_from_mask_and_from_image() -> None:
    vol, mask = _spine_like()
    geo = DisplayGeometry.from_volume(vol)
    box = spine_bbox(geo, "axial", mask=mask, margin_mm=0)
    assert box == ZoomBox(36, 26, 50, 38)
    padded = spine_bbox(geo, "axial", mask=mask, margin_mm=5, square=True)
    assert padded is not None and padded.shape[0] == padded.shape[1] == 24
    sag = spine_bbox(geo, "sagittal", mask=mask, margin_mm=0)
    assert sag == ZoomBox(0, 36, 40, 50)  # all 20 slices x 2 mm -> 40 rows; P 36..50
    guessed = spine_bbox(geo, "axial", image=vol, margin_mm=0)
    assert guessed is not None
    assert guessed.row0 <= 36 and guessed.row1 >= 50 and guessed.col0 <= 26 and guessed.col1 >= 38
    assert guessed.row0 > 15, "the sternum is left out"
    assert spine_bbox(geo, "axial", mask=np.zeros(vol.shape, np.uint8)) is None


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def test_png_is_lossless_and_readable_by_pillow() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    for image in (rgb, rgb[..., 1], rgb[::-1, ::2]):
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
        np.testing.assert_array_equal(decoded, image)
    with pytest.raises(InputError, match="grey or"):
        encode_png(np.zeros((4, 4, 4), np.uint8))


def test_jpeg_decodes_to_the_same_picture() -> None:
    vol, mask = _spine_like()
    rgb = render_slice(vol, mask, "coronal", 40)
    data = encode_jpeg(rgb)
    assert data[:2] == b"\xff\xd8"
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded - rgb.astype(int)).mean() < 3


def test_geometry_cache_is_per_grid() -> None:
    vol, _ = _spine_like()
    assert DisplayGeometry.from_volume(vol) is DisplayGeometry.from_volume(vol.with_array(vol.array))
    other = Volume(vol.array, vol.affine @ np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert DisplayGeometry.from_volume(other).flip != DisplayGeometry.from_volume(vol).flip
