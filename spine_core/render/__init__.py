"""Slice rendering for the viewer, split by subject: :mod:`~spine_core.render.windowing` (window
presets, HU -> grey levels), :mod:`~spine_core.render.display` (the radiological display
convention and :class:`DisplayGeometry`: planes, orientation letters, aspect, slice positions,
cursor, stored-slice boxes, zoom/crop boxes — the module docstring documents the convention and
the display pixel coordinates), :mod:`~spine_core.render.planes` (slice extraction and
square-pixel resampling), :mod:`~spine_core.render.overlays` (level mask colours, outlines, boxes,
crosshair, level names and :func:`render_slice`) and :mod:`~spine_core.render.encoding` (PNG and
JPEG bytes). Each module imports only those before it (windowing, display <- planes <- overlays;
encoding stands alone); import the public names from here.
"""

from __future__ import annotations

from spine_core.render.display import (
    Cursor,
    DisplayBox,
    DisplayGeometry,
    Plane,
    ZoomBox,
    spine_bbox,
)
from spine_core.render.encoding import encode_jpeg, encode_png
from spine_core.render.overlays import (
    RGB,
    BoxOverlay,
    LevelAnchor,
    OverlayStyle,
    colour_overlay,
    draw_crosshair,
    draw_rect,
    draw_texts,
    grey_to_rgb,
    level_anchors,
    outline_labels,
    render_slice,
)
from spine_core.render.planes import Interpolation, PlaneImage, extract_plane, plane_pixels
from spine_core.render.windowing import (
    BONE,
    BRAIN,
    SOFT_TISSUE,
    WINDOW_PRESETS,
    Window,
    apply_window,
    window_formula,
    window_preset,
)

__all__ = [
    # windowing
    "BONE",
    "BRAIN",
    "SOFT_TISSUE",
    "WINDOW_PRESETS",
    "Window",
    "apply_window",
    "window_formula",
    "window_preset",
    # display
    "Cursor",
    "DisplayBox",
    "DisplayGeometry",
    "Plane",
    "ZoomBox",
    "spine_bbox",
    # planes
    "Interpolation",
    "PlaneImage",
    "extract_plane",
    "plane_pixels",
    # overlays
    "RGB",
    "BoxOverlay",
    "LevelAnchor",
    "OverlayStyle",
    "colour_overlay",
    "draw_crosshair",
    "draw_rect",
    "draw_texts",
    "grey_to_rgb",
    "level_anchors",
    "outline_labels",
    "render_slice",
    # encoding
    "encode_jpeg",
    "encode_png",
]
