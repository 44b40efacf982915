"""Boxes between the server and the browser viewer: what Python sends, what the browser reports.

Free of Streamlit (``spine_viewer`` re-exports it for pages; ``db.box_event_requests`` and the
box route of ``spine_web`` use it directly).

Pages speak in **stored** coordinates, as the database keeps boxes (:class:`spine_core.boxes.Box`):
slice ``a0`` of the stored array, ``x`` along columns (a2) and ``y`` along rows (a1), edges in
voxels (pixel ``(r, c)`` covers ``[c, c + 1) × [r, r + 1)``; fractions allowed). The browser speaks
in **display** coordinates (axial slice index, columns and rows of the axial image, see
:class:`spine_core.render.display.DisplayGeometry`). :func:`to_display` and :func:`event_from_browser` convert; for a
standard axial series both are the identity.

Boxes are drawn on stored slices, so they are shown (and editable) only when the stored slices are
the axial display plane; otherwise :func:`to_display` returns nothing and the viewer is read-only
for boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spine_core.errors import InputError
from spine_core.render.display import DisplayGeometry
from spine_core.volume import Volume

BoxKind = Literal["key", "interpolated", "union", "model", "other reader", "other"]
EventType = Literal["created", "changed", "deleted"]
#: Longest ``client_key`` of a created event (``boxes.client_key`` is VARCHAR(64)).
CLIENT_KEY_MAX = 64
KINDS: tuple[str, ...] = ("key", "interpolated", "union", "model", "other reader", "other")


@dataclass(frozen=True)
class ViewerBox:
    """One box to show, in stored coordinates (see module docstring).

    ``version`` is echoed as ``base_version`` in the browser's change events, so the page can
    refuse a change made on a stale box. ``editable`` None means: editable when ``kind`` is "key".
    """

    id: str
    version: int
    slice: int
    x0: float
    y0: float
    x1: float
    y1: float
    kind: BoxKind = "key"
    level: str = ""
    label: str = ""
    reader: str = ""
    colour: str = "#ffcc00"
    editable: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"box kind {self.kind!r} is not one of {KINDS}")
        coords = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(float(v)) for v in coords):
            raise InputError(f"box {self.id}: coordinates must be finite numbers")

    @property
    def is_editable(self) -> bool:
        return self.kind == "key" if self.editable is None else bool(self.editable)


@dataclass(frozen=True)
class BoxEvent:
    """A change the reader made in the browser, in stored coordinates.

    ``id`` is the box's id, or a temporary ``"new-…"`` id for ``created``; ``base_version`` is
    the version the reader edited (None for ``created``). For ``deleted`` the coordinates are the
    box's last ones. ``width``/``height`` give the database's (x, y, width, height) form.
    ``client_key``: ``created`` only, the key the tab made for the new box (sent again with every
    retry of the same create, never with another box); the database keeps one box per key, so a
    create repeated after a lost reply returns the box already made. None: no key (each create
    adds a box).
    """

    type: EventType
    id: str
    base_version: int | None
    slice: int
    x0: float
    y0: float
    x1: float
    y1: float
    client_key: str | None = None

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def viewer_geometry(volume: Volume) -> DisplayGeometry:
    """How the viewer shows ``volume``: one display pixel per voxel (no resampling)."""
    return DisplayGeometry.from_volume(volume, square_pixels=False)


def boxes_drawable(order: DisplayGeometry) -> bool:
    """Whether the stored slices are the axial display plane (the only plane with boxes)."""
    return order.axial_is_stored


def _display_rect(order: DisplayGeometry, x0: float, y0: float, x1: float, y1: float
                  ) -> tuple[float, float, float, float]:
    """Stored (x0, y0, x1, y1) -> display (col0, row0, col1, row1) on an axial slice."""
    spans: dict[int, tuple[float, float]] = {}
    for axis, lo, hi in ((1, min(y0, y1), max(y0, y1)), (2, min(x0, x1), max(x0, x1))):
        d, a, b = order.edges_to_display(axis, lo, hi)
        spans[d] = (a, b)
    return spans[2][0], spans[1][0], spans[2][1], spans[1][1]


def _source_rect(order: DisplayGeometry, c0: float, r0: float, c1: float, r1: float
                 ) -> tuple[float, float, float, float]:
    """Display (col0, row0, col1, row1) on an axial slice -> stored (x0, y0, x1, y1)."""
    spans: dict[int, tuple[float, float]] = {}
    for d, lo, hi in ((1, min(r0, r1), max(r0, r1)), (2, min(c0, c1), max(c0, c1))):
        a, e0, e1 = order.edges_to_source(d, lo, hi)
        spans[a] = (e0, e1)
    return spans[2][0], spans[1][0], spans[2][1], spans[1][1]


def to_display(boxes: Iterable[ViewerBox], order: DisplayGeometry,
               editable: bool) -> list[dict[str, Any]]:
    """The boxes as the browser takes them (display axial slice, columns/rows), JSON-ready."""
    if not boxes_drawable(order):
        return []
    out = []
    for box in boxes:
        if not 0 <= int(box.slice) < order.shape[0]:
            continue
        k = order.source_to_display((int(box.slice), 0, 0))[0]
        c0, r0, c1, r1 = _display_rect(order, box.x0, box.y0, box.x1, box.y1)
        out.append({
            "id": str(box.id), "version": int(box.version), "slice": int(k),
            "x0": c0, "y0": r0, "x1": c1, "y1": r1,
            "kind": box.kind, "level": box.level, "label": box.label, "reader": box.reader,
            "colour": box.colour, "editable": bool(editable and box.is_editable),
        })
    return out


def focus_to_display(focus: tuple[float, float, float, float] | None,
                     order: DisplayGeometry) -> list[float] | None:
    """A stored region (x0, y0, x1, y1) on the axial slices as the browser's display
    [col0, row0, col1, row1], or None (no focus, or the stored slices are not axial)."""
    if focus is None or not boxes_drawable(order):
        return None
    x0, y0, x1, y1 = (float(v) for v in focus)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputError("focus region: coordinates must be finite numbers")
    return list(_display_rect(order, x0, y0, x1, y1))


def _number(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"box event field {name} is not a number: {value!r}") from exc
    if not math.isfinite(out):
        raise InputError(f"box event field {name} is not finite")
    return out


def _client_key(value: Any) -> str | None:
    """A created event's key (None when the browser sent none)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"box event field client_key: a non-empty string is required, got {value!r:.40}")
    if len(value.strip()) > CLIENT_KEY_MAX:
        raise InputError(f"box event field client_key: longer than {CLIENT_KEY_MAX} characters")
    return value.strip()


def event_from_browser(raw: Mapping[str, Any], order: DisplayGeometry) -> BoxEvent:
    """A browser event (display coordinates) as a :class:`BoxEvent` (stored coordinates).

    Raises InputError for anything malformed (the browser is not trusted).
    """
    kind = raw.get("type")
    if kind not in ("created", "changed", "deleted"):
        raise InputError(f"unknown box event type {kind!r}")
    box_id = raw.get("id")
    if not isinstance(box_id, str) or not box_id:
        raise InputError("box event without an id")
    base = raw.get("base_version")
    base_version = None if base is None else int(_number(base, "base_version"))
    x0, y0 = _number(raw.get("x0"), "x0"), _number(raw.get("y0"), "y0")
    x1, y1 = _number(raw.get("x1"), "x1"), _number(raw.get("y1"), "y1")
    index = int(_number(raw.get("slice"), "slice"))
    if not boxes_drawable(order):
        raise InputError("boxes are drawn on stored axial slices; this series is not axial")
    if not 0 <= index < order.display_shape[0]:
        raise InputError(f"box event on slice {index}, outside 0..{order.display_shape[0] - 1}")
    k = order.display_to_source((index, 0, 0))[0]
    sx0, sy0, sx1, sy1 = _source_rect(order, x0, y0, x1, y1)
    return BoxEvent(kind, box_id, base_version, int(k), sx0, sy0, sx1, sy1,
                     client_key=_client_key(raw.get("client_key")) if kind == "created" else None)
