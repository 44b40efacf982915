"""Pure helpers of the box editor: a box's level from the mask, the canvas <-> database mapping,
the changes a canvas holds, and the consensus overlays (readers' boxes and their union).

Coordinates (see :mod:`spine_core.render` and :mod:`spine_core.consensus`):

* *source pixels*: what the database stores, edge coordinates of stored slice ``array[k]`` —
  ``x`` along a2 (column), ``y`` along a1 (row), a box covering ``[x, x + width) × [y, y + height)``;
* *display pixels*: the acquisition plane as shown (radiological orientation, square pixels),
  mapped to and from source pixels by :class:`~spine_core.render.DisplayGeometry`;
* *canvas pixels*: the drawing canvas, showing a crop (:class:`~spine_core.render.ZoomBox`) of
  the display image stretched to the canvas size (:class:`CanvasView`), so boxes are drawn at any
  zoom and always stored in source pixels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.boxes import Box
from spine_core.colours import READER_PALETTE, RGB, UNION_COLOUR, reader_colours
from spine_core.consensus import UnionBox
from spine_core.errors import InputError
from spine_core.labels import CERVICAL, CRANIOCAUDAL_ORDER, LEVEL_IDS, LEVEL_NAMES
from spine_core.render import BoxOverlay, DisplayBox, DisplayGeometry, ZoomBox

#: Boxes smaller than this (source pixels, either side) are dropped: a click draws a ~2 px box.
MIN_BOX_SIZE_PX = 4.0

#: Positions closer than this (source pixels) count as unchanged after a canvas round trip.
POSITION_TOLERANCE_PX = 0.05

#: Decimals kept of drawn coordinates (the canvas is precise to about one screen pixel).
DECIMALS = 2



# --------------------------------------------------------------------------------------------
# Level of a box
# --------------------------------------------------------------------------------------------


def _coverage(lo: float, hi: float, n: int) -> tuple[int, npt.NDArray[np.float64]]:
    """First pixel index and the covered fraction of each pixel of ``[lo, hi)`` on an axis of n."""
    lo, hi = max(0.0, lo), min(float(n), hi)
    if hi <= lo:
        return 0, np.zeros(0)
    first, last = int(math.floor(lo)), int(math.ceil(hi))
    edges = np.arange(first, last + 1, dtype=np.float64)
    cover = np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo)
    return first, np.clip(cover, 0.0, 1.0)


def level_areas(labels: npt.NDArray[np.integer], x: float, y: float, width: float,
                height: float) -> dict[str, float]:
    """Area (pixels, fractional at the edges) of each level inside a box on one mask slice.

    ``labels`` is the stored slice of the canonical-id mask (rows along a1, columns along a2),
    the box in source pixels; background is left out. Levels come out head to feet.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise InputError(f"a mask slice must be 2-D, got shape {lab.shape}")
    r0, wy = _coverage(y, y + height, lab.shape[0])
    c0, wx = _coverage(x, x + width, lab.shape[1])
    if wy.size == 0 or wx.size == 0:
        return {}
    window = lab[r0 : r0 + wy.size, c0 : c0 + wx.size].astype(np.intp, copy=False)
    weights = np.outer(wy, wx)
    sums = np.bincount(window.ravel(), weights=weights.ravel())
    order = {lid: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    found = [(lid, float(a)) for lid, a in enumerate(sums) if lid and a > 0 and lid in LEVEL_NAMES]
    return {LEVEL_NAMES[lid]: a for lid, a in sorted(found, key=lambda la: order[la[0]])}


def level_of_box(labels: npt.NDArray[np.integer] | None, x: float, y: float, width: float,
                 height: float) -> str | None:
    """The level covering most of the box on its mask slice; None without mask or level there.

    Ties go to the more cranial level (deterministic).
    """
    if labels is None:
        return None
    areas = level_areas(labels, x, y, width, height)
    if not areas:
        return None
    best = max(areas.values())
    return next(name for name, area in areas.items() if area == best)


def levels_to_call(present: Iterable[str] = (), boxed: Iterable[str] = ()) -> list[str]:
    """The levels a reader marks: C1–C7 always, plus every other level present in the study's
    mask (thoracic levels in view) or carrying a box; head to feet."""
    names = set(CERVICAL)
    for name in (*present, *boxed):
        if name in LEVEL_IDS:
            names.add(name)
    order = {lid: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    return sorted(names, key=lambda n: order[LEVEL_IDS[n]])


# --------------------------------------------------------------------------------------------
# Size and bounds
# --------------------------------------------------------------------------------------------


def too_small(width: float, height: float, min_size: float = MIN_BOX_SIZE_PX) -> bool:
    """True when a box is narrower or lower than ``min_size`` pixels (a stray click)."""
    return not (width >= min_size and height >= min_size)


def clip_to_image(box: Box, rows: int, cols: int) -> Box | None:
    """The part of ``box`` inside a ``rows × cols`` slice, rounded to :data:`DECIMALS`; None when
    nothing is left."""
    x0, y0 = max(0.0, box.x), max(0.0, box.y)
    x1, y1 = min(float(cols), box.x + box.width), min(float(rows), box.y + box.height)
    x0, y0, x1, y1 = (round(v, DECIMALS) for v in (x0, y0, x1, y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(box.slice_index, x0, y0, round(x1 - x0, DECIMALS), round(y1 - y0, DECIMALS))


# --------------------------------------------------------------------------------------------
# Canvas <-> source pixels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasView:
    """A crop ``zoom`` of the acquisition plane's display image, stretched onto a canvas of
    ``width × height`` canvas pixels (pick the size with :func:`fit_canvas` to keep pixels square).
    """

    zoom: ZoomBox
    width: int
    height: int

    @property
    def scale_x(self) -> float:
        """Canvas pixels per display pixel, horizontally."""
        return self.width / (self.zoom.col1 - self.zoom.col0)

    @property
    def scale_y(self) -> float:
        return self.height / (self.zoom.row1 - self.zoom.row0)

    def to_display(self, left: float, top: float, width: float, height: float
                   ) -> tuple[float, float, float, float]:
        """Canvas rectangle -> (row0, col0, row1, col1) in full display-image pixels."""
        col0 = self.zoom.col0 + left / self.scale_x
        row0 = self.zoom.row0 + top / self.scale_y
        return row0, col0, row0 + height / self.scale_y, col0 + width / self.scale_x

    def to_canvas(self, row0: float, col0: float, row1: float, col1: float
                  ) -> dict[str, float]:
        """Display rectangle -> canvas ``{left, top, width, height}``."""
        return {
            "left": (col0 - self.zoom.col0) * self.scale_x,
            "top": (row0 - self.zoom.row0) * self.scale_y,
            "width": (col1 - col0) * self.scale_x,
            "height": (row1 - row0) * self.scale_y,
        }


def fit_canvas(zoom: ZoomBox, max_width: int, max_height: int) -> CanvasView:
    """The largest canvas within ``max_width × max_height`` showing ``zoom`` with square pixels."""
    rows, cols = zoom.shape
    scale = min(max_width / cols, max_height / rows)
    return CanvasView(zoom, max(1, int(round(cols * scale))), max(1, int(round(rows * scale))))


def zoom_window(plane_shape: tuple[int, int], factor: float, centre: tuple[float, float]
                ) -> ZoomBox:
    """The crop of a ``plane_shape`` image magnified ``factor`` times around ``centre`` (row,
    col), kept inside the image."""
    if not factor >= 1.0:
        raise InputError(f"zoom factor {factor} must be 1 or more")
    rows, cols = plane_shape
    h, w = max(1, int(round(rows / factor))), max(1, int(round(cols / factor)))
    r0 = int(round(min(max(centre[0] - h / 2, 0), rows - h)))
    c0 = int(round(min(max(centre[1] - w / 2, 0), cols - w)))
    return ZoomBox(r0, c0, r0 + h, c0 + w)


def canvas_to_source(geometry: DisplayGeometry, display_index: int, view: CanvasView,
                     rect: Mapping[str, float]) -> Box | None:
    """A rectangle drawn on the canvas of display slice ``display_index`` -> the stored-slice box
    (clipped to the image, rounded); None when it lies entirely outside the image."""
    row0, col0, row1, col1 = view.to_display(
        float(rect["left"]), float(rect["top"]), float(rect["width"]), float(rect["height"])
    )
    plane = geometry.acquisition_plane
    h, w = geometry.plane_shape(plane)
    row0, row1 = sorted((min(max(row0, 0.0), h), min(max(row1, 0.0), h)))
    col0, col1 = sorted((min(max(col0, 0.0), w), min(max(col1, 0.0), w)))
    if row1 <= row0 or col1 <= col0:
        return None
    source = geometry.box_from_display(DisplayBox(plane, display_index, row0, col0, row1, col1))
    _, rows, cols = geometry.shape
    return clip_to_image(source, rows, cols)


def source_to_canvas(geometry: DisplayGeometry, box: Box, view: CanvasView
                     ) -> dict[str, float]:
    """A stored-slice box -> canvas ``{left, top, width, height}``."""
    d = geometry.box_to_display(box)
    return view.to_canvas(d.row0, d.col0, d.row1, d.col1)


def display_index_of(geometry: DisplayGeometry, slice_index: int) -> int:
    """Display slice index (acquisition plane) of stored slice ``slice_index``."""
    plane = geometry.acquisition_plane
    normal = {"axial": 0, "coronal": 1, "sagittal": 2}[plane.value]
    return geometry.source_to_display((int(slice_index), 0, 0))[normal]


def slice_index_of(geometry: DisplayGeometry, display_index: int) -> int:
    """Stored slice index shown as display slice ``display_index`` of the acquisition plane."""
    plane = geometry.acquisition_plane
    normal = {"axial": 0, "coronal": 1, "sagittal": 2}[plane.value]
    dv = [0, 0, 0]
    dv[normal] = int(display_index)
    return geometry.display_to_source(dv)[0]


# --------------------------------------------------------------------------------------------
# What changed on the canvas
# --------------------------------------------------------------------------------------------

_LABEL_ID = re.compile(r"^#(\d+)\b")


def box_label(box_id: int, level: str | None) -> str:
    """The canvas label of a saved box: '#12 C5' (the id ties the drawing to the database row)."""
    return f"#{box_id} {level or '?'}"


def label_box_id(label: str) -> int | None:
    """The box id of a canvas label written by :func:`box_label`; None for a new box."""
    found = _LABEL_ID.match(label or "")
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class SavedBox:
    """A saved box as the canvas was given it."""

    id: int
    version: int
    box: Box


@dataclass(frozen=True)
class CanvasChanges:
    """What the reader did on the canvas since it was loaded from the database.

    ``rejected`` holds boxes dropped because they are below the minimum size or outside the
    image (new ones, or saved ones resized that small); the canvas should be reloaded.
    """

    created: tuple[Box, ...] = ()
    moved: tuple[tuple[SavedBox, Box], ...] = ()
    deleted: tuple[SavedBox, ...] = ()
    rejected: int = 0

    @property
    def empty(self) -> bool:
        return not (self.created or self.moved or self.deleted or self.rejected)


def _same(a: Box, b: Box, tol: float) -> bool:
    return a.slice_index == b.slice_index and all(
        abs(u - v) <= tol for u, v in ((a.x, b.x), (a.y, b.y), (a.width, b.width),
                                       (a.height, b.height))
    )


def canvas_changes(
    saved: Sequence[SavedBox],
    drawn: Sequence[tuple[str, Box | None]],
    *,
    min_size: float = MIN_BOX_SIZE_PX,
    tolerance: float = POSITION_TOLERANCE_PX,
) -> CanvasChanges:
    """Compare the boxes on a canvas (``(label, box)``, box None when outside the image) with the
    saved boxes it was loaded with.

    A label naming a saved id is that box (moved when its position differs by more than
    ``tolerance``); any other label is a new box; a saved box whose id no label names was deleted.
    A second canvas box with the same id (copy) counts as new.
    """
    by_id = {s.id: s for s in saved}
    seen: set[int] = set()
    created: list[Box] = []
    moved: list[tuple[SavedBox, Box]] = []
    rejected = 0
    for label, box in drawn:
        box_id = label_box_id(label)
        ok = box is not None and not too_small(box.width, box.height, min_size)
        if box_id in by_id and box_id not in seen:
            seen.add(box_id)
            if not ok:
                rejected += 1
            elif not _same(by_id[box_id].box, box, tolerance):  # type: ignore[arg-type]
                moved.append((by_id[box_id], box))  # type: ignore[arg-type]
        elif ok:
            created.append(box)  # type: ignore[arg-type]
        else:
            rejected += 1
    deleted = tuple(s for s in saved if s.id not in seen)
    return CanvasChanges(tuple(created), tuple(moved), deleted, rejected)


# --------------------------------------------------------------------------------------------
# Consensus overlays (readers' boxes and their union)
# --------------------------------------------------------------------------------------------


def consensus_overlays(
    geometry: DisplayGeometry,
    boxes: Iterable[Box],
    unions: Iterable[UnionBox],
    slice_index: int,
    colours: Mapping[str, RGB] | None = None,
    *,
    labels: bool = True,
    reader_labels: bool = True,
    union_margin: float = 2.0,
    thickness: tuple[int, int] = (1, 2),
) -> list[BoxOverlay]:
    """Overlays for one stored slice: each reader's boxes in the reader's colour (thin), then
    the union boxes in :data:`UNION_COLOUR` (thick) on top, all in full display pixels.

    A union outline is drawn ``union_margin`` display pixels outside its true edges, so it stays
    visible over a member box of the same extent (a lone box is its own union). ``thickness``:
    (reader boxes, union boxes) in pixels; ``reader_labels=False`` leaves the readers' names out
    (a legend gives them) while the unions keep theirs.
    """
    mine = [b for b in boxes if int(b.slice_index) == int(slice_index)]
    palette = dict(colours) if colours is not None else reader_colours(str(b.reader) for b in mine)
    out: list[BoxOverlay] = []
    for b in mine:
        d = geometry.box_to_display(Box(b.slice_index, b.x, b.y, b.width, b.height))
        colour = palette.get(str(b.reader), READER_PALETTE[0])
        out.append(BoxOverlay.from_display_box(
            d, colour=colour, label=str(b.reader) if labels and reader_labels else "",
            thickness=thickness[0]))
    for u in unions:
        if int(u.slice_index) != int(slice_index):
            continue
        d = geometry.box_to_display(Box(u.slice_index, u.x, u.y, u.width, u.height))
        text = f"union ({u.n_readers})" + (f" {u.level}" if u.level else "")
        g = float(union_margin)
        out.append(BoxOverlay(d.row0 - g, d.col0 - g, d.row1 + g, d.col1 + g,
                              colour=UNION_COLOUR, label=text if labels else "",
                              thickness=thickness[1]))
    return out


def draw_overlays(
    rgb: npt.NDArray[np.uint8],
    overlays: Sequence[BoxOverlay],
    *,
    scale: int = 1,
    origin: tuple[float, float] = (0.0, 0.0),
    font_size: int = 13,
) -> npt.NDArray[np.uint8]:
    """``rgb`` (a crop whose top-left pixel is display pixel ``origin``) enlarged ``scale`` times
    (nearest neighbour) with the overlays drawn at screen resolution: outlines stay thin and
    labels readable however small the crop. Returns a new image."""
    from spine_core.render import draw_rect, draw_texts

    k = max(1, int(scale))
    big = np.repeat(np.repeat(np.asarray(rgb, dtype=np.uint8), k, axis=0), k, axis=1)
    texts: list[tuple[float, float, str, RGB, str]] = []
    r_off, c_off = origin
    for o in overlays:
        r0, c0 = (o.row0 - r_off) * k, (o.col0 - c_off) * k
        r1, c1 = (o.row1 - r_off) * k, (o.col1 - c_off) * k
        draw_rect(big, r0, c0, r1, c1, o.colour, o.thickness)
        if o.label:
            texts.append((r0 - 3, c0, o.label, o.colour, "ld"))
    return draw_texts(big, texts, size=font_size)
