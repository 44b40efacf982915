"""One slice of a dispute, drawn: each reader's box in the reader's colour and the union box."""

from __future__ import annotations

import numpy as np

from db.dispute_queries import SliceView
from spine_core.boxes import Box
from spine_core.render import BONE, BoxOverlay, DisplayGeometry, Window, render_slice
from spine_core.volume import Volume

#: The union is framed this many display pixels outside its edges so it never hides a reader's box.
UNION_MARGIN_PX = 2


def slice_overlays(geometry: DisplayGeometry, view: SliceView) -> list[BoxOverlay]:
    """The view's boxes in display pixels: each reader's box in the reader's colour (labelled
    with the reader), each union framed just outside its edges in the union colour."""
    out: list[BoxOverlay] = []
    for u in view.unions:
        d = geometry.box_to_display(Box(view.slice_index, u.x, u.y, u.width, u.height))
        g = UNION_MARGIN_PX
        out.append(BoxOverlay(d.row0 - g, d.col0 - g, d.row1 + g, d.col1 + g, u.colour,
                              thickness=2))
    for b in view.boxes:
        d = geometry.box_to_display(Box(b.slice_index, b.x, b.y, b.width, b.height))
        out.append(BoxOverlay.from_display_box(d, colour=b.colour, label=b.reader))
    return out


def render_slice_view(volume: Volume, view: SliceView, window: Window = BONE) -> np.ndarray:
    """RGB image of the view's stored slice in its display plane, with :func:`slice_overlays`."""
    geometry = DisplayGeometry.from_volume(volume)
    where = geometry.box_to_display(Box(view.slice_index, 0.0, 0.0, 1.0, 1.0))
    return render_slice(volume, None, where.plane, where.index, window, overlay=None,
                        boxes=slice_overlays(geometry, view), geometry=geometry)
