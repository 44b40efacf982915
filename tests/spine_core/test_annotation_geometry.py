"""Box editor geometry: level of a box from the mask, canvas <-> stored-slice pixels at any zoom
and orientation, what changed on a canvas, consensus overlays."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.annotation_geometry import (
    READER_PALETTE,
    UNION_COLOUR,
    CanvasView,
    SavedBox,
    box_label,
    canvas_changes,
    canvas_to_source,
    clip_to_image,
    consensus_overlays,
    display_index_of,
    draw_overlays,
    fit_canvas,
    label_box_id,
    level_areas,
    level_of_box,
    levels_to_call,
    reader_colours,
    slice_index_of,
    source_to_canvas,
    too_small,
    zoom_window,
)
from spine_core.boxes import Box
from spine_core.consensus import union_boxes
from spine_core.errors import InputError
from spine_core.render import DisplayGeometry, ZoomBox


def two_levels() -> np.ndarray:
    """20×20 slice: C4 (id 4) in columns 0–9, C5 (id 5) in columns 10–19, rows 5–14 only."""
    lab = np.zeros((20, 20), dtype=np.uint8)
    lab[5:15, 0:10] = 4
    lab[5:15, 10:20] = 5
    return lab


def test_level_areas_count_fractional_edge_pixels() -> None:
    # x 8.5..12.5 covers 1.5 columns of C4 and 2.5 of C5; y 4.5..6.5 covers rows 5 (1.0) and 6 (0.5)
    areas = level_areas(two_levels(), x=8.5, y=4.5, width=4.0, height=2.0)
    assert list(areas) == ["C4", "C5"]
    assert areas["C4"] == pytest.approx(1.5 * 1.5)
    assert areas["C5"] == pytest.approx(2.5 * 1.5)


def test_level_of_box_is_the_level_covering_most() -> None:
    lab = two_levels()
    assert level_of_box(lab, 6, 6, 6, 4) == "C4"  # 4 columns of C4, 2 of C5
    assert level_of_box(lab, 9, 6, 6, 4) == "C5"  # 1 column of C4, 5 of C5
    assert level_of_box(lab, 0, 16, 10, 4) is None  # background only
    assert level_of_box(None, 0, 0, 5, 5) is None  # no mask
    assert level_of_box(lab, 8, 6, 4, 4) == "C4"  # exact tie: the more cranial level


def test_level_of_box_ignores_the_part_outside_the_slice() -> None:
    lab = two_levels()
    assert level_of_box(lab, 15, 10, 30, 3) == "C5"
    assert level_areas(lab, 25, 25, 5, 5) == {}


def test_levels_to_call_adds_thoracic_levels_in_view() -> None:
    assert levels_to_call() == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    got = levels_to_call(present=["T2", "C3", "T1", "bogus"], boxed=["T3"])
    assert got == ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3"]


def test_min_size_and_clipping() -> None:
    assert too_small(3.9, 10) and too_small(10, 0) and not too_small(4, 4)
    assert too_small(float("nan"), 10)
    assert clip_to_image(Box(2, -5, 10, 20, 100), rows=50, cols=40) == Box(2, 0, 10, 15, 40)
    assert clip_to_image(Box(2, 45, 10, 5, 5), rows=50, cols=40) is None


def axial_geometry(flip_columns: bool = False, spacing=(2.0, 0.8, 0.6)) -> DisplayGeometry:
    """A stored axial stack (a0 towards S, a1 towards P, a2 towards L, or R when flipped)."""
    dz, dy, dx = spacing
    aff = np.diag([dx * (-1 if flip_columns else 1), dy, dz, 1.0])
    aff = aff[:, [2, 1, 0, 3]]  # columns: a0 -> z, a1 -> y, a2 -> x
    return DisplayGeometry.from_affine((12, 50, 40), aff)


def test_canvas_to_source_known_values() -> None:
    geo = axial_geometry(spacing=(2.0, 0.7, 0.7))  # square pixels: display == source
    view = CanvasView(ZoomBox(10, 20, 60, 70), width=500, height=500)  # 10 canvas px per pixel
    k = display_index_of(geo, 3)
    box = canvas_to_source(geo, k, view, {"left": 100, "top": 50, "width": 30, "height": 20})
    assert box == Box(3, 30.0, 15.0, 3.0, 2.0)
    assert slice_index_of(geo, k) == 3


def test_canvas_to_source_follows_a_flipped_column_axis() -> None:
    geo = axial_geometry(flip_columns=True, spacing=(2.0, 0.7, 0.7))
    view = CanvasView(ZoomBox(0, 0, 50, 40), width=40, height=50)  # 1:1
    box = canvas_to_source(geo, display_index_of(geo, 0), view,
                           {"left": 5, "top": 7, "width": 10, "height": 3})
    # the patient's right is on the screen's left: display column c is stored column 40 - c
    assert box == Box(0, 25.0, 7.0, 10.0, 3.0)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("factor", [1.0, 2.0, 3.5])
def test_round_trip_at_any_zoom_and_anisotropic_pixels(flip: bool, factor: float) -> None:
    geo = axial_geometry(flip_columns=flip, spacing=(2.0, 0.8, 0.6))
    h, w = geo.plane_shape(geo.acquisition_plane)
    zoom = zoom_window((h, w), factor, centre=(h * 0.4, w * 0.6))
    view = fit_canvas(zoom, 640, 640)
    original = Box(7, 12.25, 20.5, 9.75, 6.5)
    rect = source_to_canvas(geo, original, view)
    back = canvas_to_source(geo, display_index_of(geo, 7), view, rect)
    assert back is not None and back.slice_index == 7
    for a, b in ((back.x, original.x), (back.y, original.y), (back.width, original.width),
                 (back.height, original.height)):
        assert a == pytest.approx(b, abs=0.01)


def test_canvas_box_partly_outside_is_clipped_and_fully_outside_is_none() -> None:
    geo = axial_geometry(spacing=(2.0, 0.7, 0.7))
    view = CanvasView(ZoomBox(0, 0, 50, 40), width=80, height=100)  # 2 canvas px per pixel
    k = display_index_of(geo, 0)
    part = canvas_to_source(geo, k, view, {"left": -20, "top": 90, "width": 40, "height": 40})
    assert part == Box(0, 0.0, 45.0, 10.0, 5.0)
    assert canvas_to_source(geo, k, view, {"left": 100, "top": 0, "width": 5, "height": 5}) is None


def test_fit_canvas_keeps_pixels_square_and_zoom_window_stays_inside() -> None:
    view = fit_canvas(ZoomBox(0, 0, 100, 200), 640, 640)
    assert (view.width, view.height) == (640, 320) and view.scale_x == view.scale_y
    assert zoom_window((100, 200), 2, centre=(0, 0)) == ZoomBox(0, 0, 50, 100)
    assert zoom_window((100, 200), 2, centre=(100, 200)) == ZoomBox(50, 100, 100, 200)
    with pytest.raises(InputError, match="zoom factor"):
        zoom_window((100, 200), 0.5, centre=(0, 0))


def test_labels_carry_the_box_id() -> None:
    assert box_label(12, "C5") == "#12 C5" and label_box_id("#12 C5") == 12
    assert label_box_id("new") is None and label_box_id("") is None and label_box_id("#x") is None


def test_canvas_changes() -> None:
    a = SavedBox(1, 3, Box(4, 10, 10, 8, 8))
    b = SavedBox(2, 1, Box(4, 30, 10, 8, 8))
    c = SavedBox(3, 1, Box(4, 50, 10, 8, 8))
    drawn = [
        ("#1 C5", Box(4, 10.01, 10, 8, 8)),  # within tolerance: unchanged
        ("#2 C5", Box(4, 31, 10, 8, 9)),  # moved
        ("", Box(4, 60, 60, 6, 6)),  # new
        ("new", Box(4, 70, 70, 2, 2)),  # a click: too small
        ("#1 C5", Box(4, 80, 80, 6, 6)),  # a copy of box 1: new
        ("", None),  # outside the image
    ]  # box 3 is gone: deleted
    changes = canvas_changes([a, b, c], drawn)
    assert changes.created == (Box(4, 60, 60, 6, 6), Box(4, 80, 80, 6, 6))
    assert changes.moved == ((b, Box(4, 31, 10, 8, 9)),)
    assert changes.deleted == (c,)
    assert changes.rejected == 2
    assert canvas_changes([a], [("#1 C5", a.box)]).empty


def test_saved_box_shrunk_below_minimum_is_rejected_not_saved() -> None:
    a = SavedBox(1, 1, Box(0, 10, 10, 8, 8))
    changes = canvas_changes([a], [("#1", Box(0, 10, 10, 1, 8))])
    assert changes.rejected == 1 and not changes.moved and not changes.deleted


def test_consensus_overlays_colour_each_reader_and_the_union() -> None:
    geo = axial_geometry(spacing=(2.0, 0.7, 0.7))
    boxes = [
        Box(2, 10, 10, 10, 10, reader="reader1", level="C5"),
        Box(2, 15, 12, 10, 10, reader="reader2", level="C5"),
        Box(3, 1, 1, 5, 5, reader="reader1"),
    ]
    unions = union_boxes(boxes)
    overlays = consensus_overlays(geo, boxes, unions, slice_index=2)
    colours = reader_colours(["reader2", "reader1"])
    assert colours == {"reader1": READER_PALETTE[0], "reader2": READER_PALETTE[1]}
    assert [o.colour for o in overlays] == [colours["reader1"], colours["reader2"], UNION_COLOUR]
    union = overlays[-1]
    assert (union.row0, union.col0, union.row1, union.col1) == (8, 8, 24, 27)  # 2 px outset
    assert union.label == "union (2) C5"


def test_draw_overlays_enlarges_the_crop_and_keeps_outlines_thin() -> None:
    from spine_core.render import BoxOverlay

    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    out = draw_overlays(rgb, [BoxOverlay(12, 22, 14, 26, colour=(255, 0, 0), thickness=1)],
                        scale=4, origin=(10, 20))
    assert out.shape == (40, 80, 3)
    red = np.all(out == (255, 0, 0), axis=2)
    # display rows 12..14, cols 22..26 of a crop starting at (10, 20): screen rows 8..16, cols 8..24
    assert red[8, 8:24].all() and red[15, 8:24].all() and red[8:16, 8].all() and red[8:16, 23].all()
    assert not red[9:15, 9:23].any() and red.sum() == 2 * 16 + 2 * 6
