"""``workstation()``: the client-side slice viewer as a Streamlit Components v2 element.

The browser keeps the whole int16 volume (and label mask) in typed arrays and renders every slice
itself with Canvas 2D: stepping, window/level, zoom, pan and the crosshair never wait for the
server. Python talks to it only:

* to **stream the volume**: where the server serves ``spine_web.volume_routes`` and the page has
  a session cookie, the first run registers a grant (:mod:`spine_viewer.grants`) and sends its
  chunk URL in the header with the slice on screen; the browser fetches the plan's other chunks
  over HTTP itself, several at a time, with no rerun. Otherwise the first run sends the header
  and the slice on screen; the browser asks for the next slice range of the plan with a trigger
  (one rerun per chunk, at load time only) and the next run answers with that chunk, until it
  says it has everything;
* to send the **view** (layout, plane, slice, window, boxes, label palette...) on each run; the
  browser applies a value only when Python changed it, so a rerun never undoes what the reader did;
* to receive **events**: box created/changed/deleted (on mouse-up, each reported once) and the
  slice the reader settled on (debounced ~400 ms, for the URL). Nothing is sent per slice step.

With ``box_post`` the browser posts box events to the server's box route instead
(:mod:`spine_web.box_routes`, no rerun) and sends Python only a ``refresh`` (``result.refresh``)
when a save changed what the page shows or was refused.

Mount it inside ``st.fragment`` on heavy pages: the chunk reruns then rerun only the fragment.

Coordinates: ``plane``/``slice``/``cursor`` are display indices of
:class:`spine_core.render.display.DisplayGeometry`, the server viewer's convention (axial slices
Inferior→Superior, rows Anterior→Posterior, columns patient Right→Left); boxes and box events are
in stored coordinates (see :mod:`spine_viewer.boxes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import streamlit as st

from spine_core.errors import InputError
from spine_core.labels import LEVEL_COLOURS, LEVEL_NAMES
from spine_core.render.display import DisplayGeometry
from spine_core.render.windowing import Window
from spine_core.volume import Volume
from spine_viewer import grants, transport
from spine_viewer.boxes import (
    BoxEvent,
    ViewerBox,
    boxes_drawable,
    event_from_browser,
    focus_to_display,
    to_display,
)
from spine_viewer.bundle import bundle_js
from spine_viewer.chunks import ChunkStore, default_store
from spine_viewer.keymap import CT_PRESETS, PRESET_ACTIONS, gestures_json, keymap_json

log = logging.getLogger(__name__)

Layout = Literal["single", "three"]
PlaneName = Literal["axial", "sagittal", "coronal"]
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "bone": (1800.0, 400.0), "soft tissue": (400.0, 40.0), "brain": (80.0, 40.0),
}
_PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # display axis each plane's index runs along
_PREFETCH = 2

_component = st.components.v2.component("spinereview_workstation", js=bundle_js())


@dataclass(frozen=True)
class ViewerSource:
    """What the viewer shows: the image (int16 HU, may be a memory map) and optional labels.

    ``mask`` is a uint8 label map on the image grid (a Volume or a bare array), canonical level
    ids of :mod:`spine_core.labels` unless the page passes its own ``labels`` palette.
    """

    image: Volume
    mask: Volume | npt.NDArray[Any] | None = None

    def mask_array(self) -> npt.NDArray[Any] | None:
        if self.mask is None:
            return None
        arr = self.mask.array if isinstance(self.mask, Volume) else np.asarray(self.mask)
        if tuple(arr.shape) != self.image.shape:
            raise InputError(f"label mask {arr.shape} is not on the image grid {self.image.shape}")
        return arr


@dataclass(frozen=True)
class SliceCommit:
    """Where the reader settled (debounced in the browser): a plane's display slice and the
    linked cursor, as display indices and as the stored voxel (a0, a1, a2)."""

    plane: str
    index: int
    cursor: tuple[int, int, int]
    voxel: tuple[int, int, int]


@dataclass(frozen=True)
class WorkstationResult:
    """What this run brought from the browser."""

    events: list[BoxEvent] = field(default_factory=list)
    slice: SliceCommit | None = None
    streaming: bool = True  # False once the browser said it holds the whole volume (or fetches it)
    refresh: Refresh | None = None


@dataclass(frozen=True)
class Refresh:
    """The browser saved a box through the box route and the page must follow (a level newly
    boxed, a level to ask about), or the route refused it: rerun the page and show ``message``
    (``kind``: "toast" or "warning"); ``ask_levels``: levels left without a box, called fractured."""

    message: str
    kind: str
    ask_levels: tuple[str, ...] = ()


@dataclass
class _Stream:
    """Per (session, component key) bookkeeping, kept in st.session_state."""

    volume_id: str = ""
    plan: list[tuple[int, int]] = field(default_factory=list)
    per_chunk: int = 1
    need: tuple[int, int] | None = None
    done: bool = False
    client: str = ""
    seq: int = 0
    delivered: int = 0  # highest event seq the page has seen before a frame was built
    events: list[dict[str, Any]] = field(default_factory=list)
    bad: int = 0
    refresh: Refresh | None = None
    refresh_n: int = 0


def _stream_state(key: str) -> _Stream:
    name = f"_spine_viewer:{key}"
    state = st.session_state.get(name)
    if not isinstance(state, _Stream):
        state = _Stream()
        st.session_state[name] = state
    return state


def _on_msg(key: str) -> None:
    """Trigger callback (runs before the script body): note the chunk asked for and new events.

    The browser always sends its whole outbox of unacknowledged events with the range it needs,
    so a message that Streamlit coalesces away loses nothing; events already seen are skipped.
    """
    state = _stream_state(key)
    try:
        msg = st.session_state[key].get("msg")
    except (KeyError, AttributeError):
        return
    if not isinstance(msg, Mapping) or msg.get("volume") != state.volume_id:
        return
    client = str(msg.get("client", ""))
    if client != state.client:
        state.client, state.seq, state.delivered = client, 0, 0
    if "need" in msg:
        need = msg.get("need")
        if need is None:
            state.need, state.done = None, True
        elif isinstance(need, Sequence) and len(need) == 2:
            try:
                state.need = transport.check_range(need, _n_slices(state), state.per_chunk)
                state.done = False
            except InputError as exc:
                state.bad += 1
                log.warning("viewer %s: ignored a chunk request: %s", key, exc)
    _note_refresh(state, msg.get("refresh"))
    events = msg.get("events")
    if isinstance(events, list):
        for ev in events:
            if isinstance(ev, Mapping) and isinstance(ev.get("seq"), int) and ev["seq"] > state.seq:
                state.seq = int(ev["seq"])
                state.events.append(dict(ev))


def _note_refresh(state: _Stream, raw: Any) -> None:
    """A new ``refresh`` of the browser (each counted once by its ``n``), its text bounded."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("n"), int) or raw["n"] <= state.refresh_n:
        return
    state.refresh_n = int(raw["n"])
    asked = raw.get("ask_levels")
    levels = tuple(str(v)[:16] for v in asked[:30]) if isinstance(asked, list) else ()
    kind = "warning" if raw.get("kind") == "warning" else "toast"
    state.refresh = Refresh(str(raw.get("message") or "")[:500], kind, levels)


def _n_slices(state: _Stream) -> int:
    return max((b for _, b in state.plan), default=0)


def _chunk_url(volume_id: str, has_mask: bool, level: int, plan: list[tuple[int, int]],
               encode: Callable[[tuple[int, int]], transport.EncodedChunk],
               store: ChunkStore) -> str | None:
    """The grant's chunk URL (relative to the page) when this process serves the volume route
    and the page has a session cookie; None: the chunks travel through reruns."""
    where = grants.route()
    if where is None:
        return None
    token = st.context.cookies.get(where.cookie)
    if not token and where.session_key:  # signed in over this connection: the cookie is set,
        token = st.session_state.get(where.session_key)  # but st.context shows it only later
    if not token:
        return None
    grant = grants.default_registry().register(str(token), volume_id, has_mask, level, plan,
                                               encode, store)
    return f"{where.path}/{grant.id}/"


def _window(window: tuple[float, float] | str) -> list[float]:
    if isinstance(window, str):
        try:
            width, level = WINDOW_PRESETS[window]
        except KeyError:
            raise InputError(f"unknown window preset {window!r}; use one of "
                             f"{sorted(WINDOW_PRESETS)} or (width, level)") from None
    else:
        width, level = float(window[0]), float(window[1])
    if not width >= 1:
        raise InputError(f"window width must be >= 1 HU, got {width}")
    return [width, level]


def _palette(labels: Mapping[int, str] | None,
             colours: Mapping[int, Sequence[int] | str] | None) -> list[dict[str, Any]]:
    names = dict(LEVEL_NAMES if labels is None else labels)
    cols: Mapping[int, Any] = LEVEL_COLOURS if colours is None else colours
    out = []
    for lid, name in sorted(names.items()):
        if not 0 < int(lid) < 256:
            raise InputError(f"label id {lid} must lie in 1..255")
        c = cols.get(lid, (255, 255, 0))
        if isinstance(c, str):
            h = c.lstrip("#")
            c = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
        out.append({"id": int(lid), "name": str(name), "colour": [int(v) for v in c[:3]]})
    return out


def _cursor(geometry: DisplayGeometry, plane: str, index: int | None,
            cursor: Sequence[int] | None) -> list[int]:
    shape = geometry.display_shape
    cur = [n // 2 for n in shape] if cursor is None else [int(v) for v in cursor]
    if index is not None:
        cur[_PLANE_AXIS[plane]] = int(index)
    return [min(max(v, 0), n - 1) for v, n in zip(cur, shape)]


def _commit(raw: Any, geometry: DisplayGeometry) -> SliceCommit | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        cur = tuple(int(v) for v in raw["cursor"])
        plane = str(raw["plane"])
        if plane not in _PLANE_AXIS or len(cur) != 3:
            return None
        shape = geometry.display_shape
        if any(not 0 <= v < n for v, n in zip(cur, shape)):
            return None
        voxel = geometry.display_to_source(cur)
        return SliceCommit(plane, cur[_PLANE_AXIS[plane]], (cur[0], cur[1], cur[2]), voxel)
    except (KeyError, TypeError, ValueError):
        return None


def workstation(
    volume_id: str,
    source: ViewerSource | Callable[[], ViewerSource],
    *,
    key: str,
    layout: Layout = "single",
    plane: PlaneName = "axial",
    slice: int | None = None,
    cursor: Sequence[int] | None = None,
    window: tuple[float, float] | str = "bone",
    boxes: Sequence[ViewerBox] | Callable[[], Sequence[ViewerBox]] = (),
    on_event: Callable[[BoxEvent], None] | None = None,
    editable: bool = False,
    labels: Mapping[int, str] | None = None,
    label_colours: Mapping[int, Sequence[int] | str] | None = None,
    overlay: bool = True,
    overlay_opacity: float = 0.35,
    focus: tuple[float, float, float, float] | None = None,
    large_labels: bool = False,
    go_to: int = 0,
    box_post: Mapping[str, Any] | None = None,
    height: int | Literal["fill"] = "fill",
    length_unit: Literal["mm", "px"] = "mm",
    value_unit: str = "HU",
    presets: Sequence[Window] = CT_PRESETS,
    film: Sequence[str] | None = None,
    max_browser_bytes: int = transport.DEFAULT_MAX_BROWSER_BYTES,
    chunk_bytes: int = transport.DEFAULT_CHUNK_BYTES,
    level: int = transport.DEFAULT_LEVEL,
    store: ChunkStore | None = None,
) -> WorkstationResult:
    """Mount the reading workstation's viewer; returns what the browser reported this run.

    Args:
        volume_id: identifies the voxels (e.g. series UID + cache fingerprint): a new id makes the
            browser drop the old volume and stream the new one; compressed chunks are cached
            under it, so it must change whenever the voxels do.
        source: the volume (and mask), or a callable giving it (called on every run; make it
            cheap, e.g. a memory-mapped cache entry).
        key: the element's key (one viewer per key).
        layout: one large plane, or three planes with linked crosshairs.
        plane, slice, cursor: what to show; applied in the browser only when they change between
            runs (display indices, see module docstring). ``slice`` is the index of ``plane``.
        window: (width, level) in HU or a preset name ("bone", "soft tissue", "brain").
        boxes: boxes to draw on axial slices (stored coordinates), interpolated ones dashed; or
            a callable giving them, called after ``on_event`` so this run shows the outcome.
        on_event: called with each new box event before the view is built (store the change
            there and pass ``boxes`` as a callable): the browser then gets the new list in the
            same run. Without it, handle ``result.events`` after the call; the browser keeps
            showing its edit until the next run brings the list.
        editable: whether the reader may draw, move, resize and delete (editable) boxes.
        labels, label_colours: label id -> level name / colour of the mask overlay (default: the
            canonical vertebra levels and their colours).
        overlay, overlay_opacity: initial state of the label overlay (the reader toggles levels
            and opacity inside the viewer).
        focus: a region (x0, y0, x1, y1, stored coordinates of the axial slices) the axial view
            zooms to, centred with a margin (applied when it changes; R resets to the whole slice).
        large_labels: draw box labels large (the committee's view of each reader's boxes).
        go_to: a counter; a new value makes the browser take ``plane``/``slice``/``cursor`` even
            when they equal a slice it reported lately (which it otherwise reads as the echo of
            its own commit): bump it for Back/Forward or an edited address.
        box_post: where the browser posts box events instead of sending them here (no rerun):
            ``{"url": ..., "study": ..., "fracture": ..., "base_study_version": ...}``, the
            fields :mod:`spine_web.box_routes` reads besides the event's own. ``on_event`` then
            sees no events; ``result.refresh`` says when the page must rerun.
        height: pixels, or "fill": down to the bottom of the window.
        length_unit: what lengths and positions are in: "mm", or "px" for an image whose spacing
            is unknown (a radiograph without one: its affine steps are one pixel).
        value_unit: the unit of the voxel read-out ("HU"; "" for a radiograph's values).
        presets: the windows keys 1, 2 and 3 choose (at most three; CT's bone, soft tissue and
            brain by default; a radiograph's come from its values).
        film: for a radiograph, the letters at its top, bottom, left and right edges ("" where
            unknown): the viewer shows the one image as "Film", with no planes to choose.
        max_browser_bytes: refuse volumes whose int16 voxels (+ mask) exceed this in the browser.
        chunk_bytes, level: raw size and zlib level of the streamed chunks.
        store: the chunk cache (default: the process-wide one).

    Raises:
        transport.VolumeTooLargeError: the volume is above ``max_browser_bytes``; show
            server-rendered slices instead (checked before anything is sent).
        InputError: unusable arguments (plane, window, mask grid...).
    """
    if plane not in _PLANE_AXIS:
        raise InputError(f"unknown plane {plane!r}; use axial, sagittal or coronal")
    if layout not in ("single", "three"):
        raise InputError(f"unknown layout {layout!r}; use 'single' or 'three'")
    if film is not None and len(film) != 4:
        raise InputError(f"give a film's four edge letters (top, bottom, left, right), got {film!r}")
    if not 1 <= len(presets) <= len(PRESET_ACTIONS):
        raise InputError(f"give 1 to {len(PRESET_ACTIONS)} window presets, got {len(presets)}")
    src = source() if callable(source) else source
    mask = src.mask_array()
    geometry = transport.display_geometry(src.image)
    shape = geometry.display_shape
    transport.check_browser_memory(shape, mask is not None, max_browser_bytes)
    view_image = geometry.view(src.image.array)
    view_mask = geometry.view(mask) if mask is not None else None
    cur = _cursor(geometry, plane, slice, cursor)

    store = store or default_store()
    has_mask = view_mask is not None

    def encode(rng: tuple[int, int]) -> transport.EncodedChunk:
        return transport.encode_chunk(view_image, view_mask, rng, level)

    def make(rng: tuple[int, int]) -> Callable[[], transport.EncodedChunk]:
        return lambda: encode(rng)

    state = _stream_state(key)
    fresh = state.volume_id != volume_id
    if fresh:
        per_chunk = transport.slices_per_chunk(shape, chunk_bytes)
        plan = transport.chunk_plan(shape[0], cur[0], per_chunk)
        st.session_state[f"_spine_viewer:{key}"] = state = _Stream(
            volume_id=volume_id, plan=plan, per_chunk=max(per_chunk, 1), need=plan[0])
    chunk_url = _chunk_url(volume_id, has_mask, level, state.plan, encode, store)
    inline = state.need if not state.done else None
    if fresh and chunk_url is not None:
        # the slice on screen comes with this frame; the browser fetches the rest over HTTP
        state.need, state.done = None, True

    chunk_entry: dict[str, Any] | None = None
    pieces: list[bytes] = []
    upcoming: list[tuple[int, int]] = []
    if inline is not None:
        rng = inline
        chunk = store.get((volume_id, rng, has_mask, level), make(rng))
        chunk_entry, pieces = transport.chunk_header(chunk)
        if rng in state.plan:
            i = state.plan.index(rng)
            upcoming = state.plan[i + 1:i + 1 + _PREFETCH]

    events: list[BoxEvent] = []
    while state.events:
        try:
            ev = event_from_browser(state.events[0], geometry)
        except InputError as exc:
            log.warning("viewer %s: ignored a box event: %s", key, exc)
            state.events.pop(0)
            continue
        if on_event is not None:
            on_event(ev)  # if it raises, the event stays queued for the next run
        state.events.pop(0)
        events.append(ev)
    if on_event is not None:
        state.delivered = state.seq
    box_list = boxes() if callable(boxes) else boxes

    drawable = boxes_drawable(geometry)
    header = {
        "volume": {**transport.volume_header(volume_id, geometry, has_mask, state.plan,
                                             str(src.image.array.dtype)),
                   "chunk_url": chunk_url},
        "view": {
            "layout": layout, "plane": plane, "cursor": cur, "window": _window(window),
            "editable": bool(editable and drawable), "boxes": to_display(box_list, geometry, editable),
            "labels": _palette(labels, label_colours), "overlay": bool(overlay),
            "opacity": float(min(max(overlay_opacity, 0.0), 1.0)),
            "focus": focus_to_display(focus, geometry), "large_labels": bool(large_labels),
            "go_to": int(go_to),
            "height": height if height == "fill" else int(height),
            "keymap": keymap_json(presets), "gestures": gestures_json(),
            "presets": [[float(w.width), float(w.level)] for w in presets],
            "film": {"letters": [str(v) for v in film]} if film is not None else None,
            "length_unit": length_unit, "value_unit": value_unit,
            "box_post": dict(box_post) if box_post is not None and editable and drawable else None,
        },
        "ack": {"client": state.client, "seq": state.delivered},
        "chunk": chunk_entry,
    }
    frame = transport.pack_frame(header, pieces)
    result = _component(key=key, data=frame, width="stretch", height="content",
                        on_msg_change=lambda: _on_msg(key), on_slice_change=lambda: None)
    # compress the next chunks in the background only once this frame is on its way: started
    # before, they compete with it for the CPU and delay the first slice of a new study
    if fresh and chunk_url is not None:
        upcoming = state.plan[1:]  # the browser fetches them all, nearest first
    for nxt in upcoming:
        store.prefetch((volume_id, nxt, has_mask, level), make(nxt))
    state.delivered = state.seq
    commit = _commit(getattr(result, "slice", None), geometry)
    refresh, state.refresh = state.refresh, None
    return WorkstationResult(events, commit, streaming=not state.done, refresh=refresh)
