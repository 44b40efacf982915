"""Overlays and the rendered slice: level mask colours, outlines, boxes, crosshair and level names
drawn over the windowed grey image (:func:`render_slice`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError, MaskError
from spine_core.labels import LEVEL_COLOURS, LEVEL_NAMES
from spine_core.render.display import DisplayBox, DisplayGeometry, Plane, ZoomBox, _plane
from spine_core.render.planes import Interpolation, _check_mask_grid, plane_pixels
from spine_core.render.windowing import BONE, Window, apply_window
from spine_core.volume import Volume

RGB = tuple[int, int, int]


_MAX_LEVEL_ID = max(LEVEL_NAMES)


@dataclass(frozen=True)
class OverlayStyle:
    """How a level mask is drawn over the grey image.

    Attributes:
        opacity: 0 (invisible) .. 1 (opaque); pixel = round(grey * (1 - a) + colour * a).
        visible: canonical level ids to draw; None draws every level.
        outline: draw only each region's border pixels (4-neighbourhood).
    """

    opacity: float = 0.4
    visible: frozenset[int] | None = None
    outline: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise InputError(f"overlay opacity {self.opacity} must lie between 0 and 1")
        if self.visible is not None and not isinstance(self.visible, frozenset):
            object.__setattr__(self, "visible", frozenset(int(v) for v in self.visible))


@functools.lru_cache(maxsize=16)
def _blend_table(opacity: float, visible: frozenset[int] | None) -> npt.NDArray[np.uint8]:
    """(256 labels * 256 greys, 3) RGB of each (label, grey) pair."""
    grey = np.arange(256, dtype=np.float64)
    table = np.repeat(grey[None, :, None], 256, axis=0).repeat(3, axis=2)
    for lid, colour in LEVEL_COLOURS.items():
        if visible is not None and lid not in visible:
            continue
        col = np.asarray(colour, dtype=np.float64)
        table[lid] = grey[:, None] * (1.0 - opacity) + col[None, :] * opacity
    out = np.rint(table).astype(np.uint8).reshape(256 * 256, 3)
    out.flags.writeable = False
    return out


def outline_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    """Keep only border pixels of each labelled region (a pixel with a differing 4-neighbour)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return np.where(edge, lab, 0).astype(lab.dtype)


def grey_to_rgb(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    out = np.empty((*grey.shape, 3), dtype=np.uint8)
    out[..., 0] = grey
    out[..., 1] = grey
    out[..., 2] = grey
    return out


def colour_overlay(
    grey: npt.NDArray[np.uint8], labels: npt.NDArray[np.integer] | None, style: OverlayStyle
) -> npt.NDArray[np.uint8]:
    """RGB image of ``grey`` with canonical level ``labels`` blended in ``LEVEL_COLOURS``."""
    if labels is None or style.opacity == 0:
        return grey_to_rgb(grey)
    lab = np.asarray(labels)
    if lab.shape != grey.shape:
        raise MaskError(f"mask slice {lab.shape} does not match the image slice {grey.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > _MAX_LEVEL_ID):
        raise MaskError(
            f"mask values must be canonical level ids 0–{_MAX_LEVEL_ID}, found {int(lab.max())}; "
            "map the dataset's labels through its LabelVocabulary first"
        )
    lab = lab.astype(np.uint8, copy=False)
    if style.outline:
        lab = outline_labels(lab)
    if not lab.any():
        return grey_to_rgb(grey)
    rgb = grey_to_rgb(grey)
    rows, cols = np.flatnonzero(lab.any(axis=1)), np.flatnonzero(lab.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    index = lab[box].astype(np.uint16) << 8
    index |= grey[box]
    table = _blend_table(float(style.opacity), style.visible)
    rgb[box] = np.take(table, index, axis=0)  # np.take: several times faster than table[index]
    return rgb


def draw_rect(
    rgb: npt.NDArray[np.uint8],
    row0: float,
    col0: float,
    row1: float,
    col1: float,
    colour: RGB,
    thickness: int = 2,
) -> None:
    """Outline the pixels covered by the edge-coordinate rectangle, inwards, in place."""
    h, w = rgb.shape[:2]
    r0, c0 = int(np.floor(row0)), int(np.floor(col0))
    r1, c1 = int(np.ceil(row1)), int(np.ceil(col1))
    if r1 <= 0 or c1 <= 0 or r0 >= h or c0 >= w or r1 <= r0 or c1 <= c0:
        return
    t = max(1, int(thickness))
    cr0, cr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    col = np.asarray(colour, dtype=np.uint8)
    if r0 >= 0:
        rgb[r0 : min(r0 + t, h), cc0:cc1] = col
    if r1 <= h:
        rgb[max(r1 - t, 0) : r1, cc0:cc1] = col
    if c0 >= 0:
        rgb[cr0:cr1, c0 : min(c0 + t, w)] = col
    if c1 <= w:
        rgb[cr0:cr1, max(c1 - t, 0) : c1] = col


def draw_crosshair(
    rgb: npt.NDArray[np.uint8], row: int, col: int, colour: RGB = (255, 255, 0), gap: int = 4
) -> None:
    """One-pixel crosshair through pixel (row, col), open ``gap`` pixels around it, in place."""
    h, w = rgb.shape[:2]
    col_rgb = np.asarray(colour, dtype=np.uint8)
    if 0 <= row < h:
        rgb[row, : max(0, col - gap)] = col_rgb
        rgb[row, max(0, col + gap + 1) :] = col_rgb
    if 0 <= col < w:
        rgb[: max(0, row - gap), col] = col_rgb
        rgb[max(0, row + gap + 1) :, col] = col_rgb


@dataclass(frozen=True)
class BoxOverlay:
    """A rectangle in full-plane display pixel (edge) coordinates, with colour and label."""

    row0: float
    col0: float
    row1: float
    col1: float
    colour: RGB = (255, 64, 64)
    label: str = ""
    thickness: int = 2

    @classmethod
    def from_display_box(cls, box: DisplayBox, **style: Any) -> BoxOverlay:
        return cls(box.row0, box.col0, box.row1, box.col1, **style)


@dataclass(frozen=True)
class LevelAnchor:
    """Where to write a level's name: its centroid and a text point beside it (display pixels)."""

    level_id: int
    name: str
    row: float
    col: float
    text_row: float
    text_col: float
    text_anchor: str  # Pillow anchor: "rm" (text ends at the point) or "lm"


def level_anchors(labels: npt.NDArray[np.integer], margin: int = 4) -> list[LevelAnchor]:
    """Anchors of every level present in a 2-D label image, craniocaudal order (by row).

    The text point sits ``margin`` pixels left of the level's leftmost pixel on its centroid row
    (anterior in sagittal images) when there are 24 pixels of room there (or more room than on
    the right), else right of its rightmost pixel.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.size == 0 or not lab.any():
        return []
    lab = lab.astype(np.intp, copy=False)
    n = int(lab.max())
    rows, cols = np.indices(lab.shape)
    flat = lab.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    rsum = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)
    csum = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)
    anchors = []
    for lid, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None or counts[lid] == 0 or lid not in LEVEL_NAMES:
            continue
        r, c = rsum[lid] / counts[lid] + 0.5, csum[lid] / counts[lid] + 0.5
        left, right = sl[1].start, sl[1].stop
        if left - margin >= min(24, lab.shape[1] - right - margin):
            tc, anchor = left - margin, "rm"
        else:
            tc, anchor = right + margin, "lm"
        anchors.append(LevelAnchor(lid, LEVEL_NAMES[lid], r, c, r, float(tc), anchor))
    return sorted(anchors, key=lambda a: a.row)


def draw_texts(
    rgb: npt.NDArray[np.uint8],
    texts: Iterable[tuple[float, float, str, RGB, str]],
    size: int = 12,
) -> npt.NDArray[np.uint8]:
    """Write ``(row, col, text, colour, anchor)`` items with Pillow's default font; returns RGB."""
    from PIL import Image, ImageDraw

    items = list(texts)
    if not items:
        return rgb
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    font = _default_font(size)
    for row, col, text, colour, anchor in items:
        draw.text((col, row), text, fill=tuple(colour), font=font, anchor=anchor,
                  stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(img).copy()


@functools.lru_cache(maxsize=4)
def _default_font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


# --------------------------------------------------------------------------------------------
# Render a slice
# --------------------------------------------------------------------------------------------


def render_slice(
    volume: Volume,
    mask: Volume | None,
    plane: Plane | str,
    index: int,
    window: Window = BONE,
    *,
    overlay: OverlayStyle | None = OverlayStyle(),
    boxes: Sequence[BoxOverlay] = (),
    cursor: tuple[int, int] | None = None,
    zoom: ZoomBox | None = None,
    level_labels: bool = False,
    geometry: DisplayGeometry | None = None,
    interpolation: Interpolation = "nearest",
) -> npt.NDArray[np.uint8]:
    """One display slice as an (H, W, 3) uint8 RGB image.

    Args:
        volume: the CT (int16 HU, or float).
        mask: canonical level ids on the same grid, or None.
        plane, index: display plane and slice index (see :mod:`spine_core.render.display`).
        window: window/level preset or custom :class:`Window`.
        overlay: how to draw the mask (None: no mask colours).
        boxes: rectangles in full-plane display pixel coordinates.
        cursor: (row, col) full-plane display pixel of the linked cursor crosshair.
        zoom: crop of the full plane image; boxes/cursor/labels are shifted to it.
        level_labels: write level names beside each level (Pillow's default font).
        interpolation: resampling of the CT for square pixels ("nearest" or "linear";
            the mask is always nearest).
    """
    p = _plane(plane)
    geo = geometry or DisplayGeometry.from_volume(volume)
    if zoom is not None:
        zoom = zoom.clipped(geo.plane_shape(p))
    hu = plane_pixels(volume.array, geo, p, index, interpolation=interpolation, zoom=zoom)
    grey = apply_window(hu, window.width, window.level)
    labels = None
    if mask is not None and (overlay is not None or level_labels):
        _check_mask_grid(volume, mask)
        labels = plane_pixels(mask.array, geo, p, index, zoom=zoom)
    rgb = colour_overlay(grey, labels if overlay is not None else None, overlay or OverlayStyle())
    dr, dc = (zoom.row0, zoom.col0) if zoom is not None else (0, 0)
    texts: list[tuple[float, float, str, RGB, str]] = []
    for box in boxes:
        r0, c0, r1, c1 = box.row0 - dr, box.col0 - dc, box.row1 - dr, box.col1 - dc
        draw_rect(rgb, r0, c0, r1, c1, box.colour, box.thickness)
        if box.label:
            texts.append((r0 - 2, c0, box.label, box.colour, "ld"))
    if cursor is not None:
        draw_crosshair(rgb, int(cursor[0]) - dr, int(cursor[1]) - dc)
    if level_labels and labels is not None:
        visible = overlay.visible if overlay is not None else None
        for a in level_anchors(labels):
            if visible is None or a.level_id in visible:
                colour = LEVEL_COLOURS[a.level_id]
                texts.append((a.text_row, a.text_col, a.name, colour, a.text_anchor))
    return draw_texts(rgb, texts)
