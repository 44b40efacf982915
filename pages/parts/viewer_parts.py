"""Viewer building blocks shared by the viewer, demonstration and annotation pages.

* :func:`load_study` opens a study's image (and vertebra mask) once per server process, through
  ``st.cache_resource`` keyed by database ids and the source files' fingerprint — never by arrays
  — after checking the source files are still the ones imported.
* :func:`plane_image_png` renders only the slice on screen (``spine_core.render``).
* :func:`slice_view` (from :mod:`pages.parts.slice_view`) shows a slice as a clickable image; the
  ``*_items`` helpers here give it level names, boxes and the crosshair for one plane and crop, and
  :func:`clicked_at` reads a click back in full-plane display pixels.
* :func:`window_controls`, :func:`overlay_controls` and :func:`level_toggles` (legend and
  per-vertebra show/hide) are the common widgets; :func:`figure_3d` the cached 3-D view.

Coordinates are those of :mod:`spine_core.render`: display pixels of the full (un-zoomed) plane
image, edge convention (pixel ``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``).
"""

from __future__ import annotations

import functools
import html
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import streamlit as st

from pages.parts.common import SignedInUser, workspace
from pages.parts.slice_view import PLANE_TITLES
from spine_core.boxes import Box
from spine_core.colours import RGB
from spine_core.errors import NotFound
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_IDS, LEVEL_NAMES, level_colour_hex
from spine_core.render import (
    WINDOW_PRESETS,
    Cursor,
    DisplayGeometry,
    LevelAnchor,
    OverlayStyle,
    Plane,
    Window,
    ZoomBox,
    encode_png,
    level_anchors,
    plane_pixels,
    render_slice,
    spine_bbox,
)
from spine_core.volume import Volume

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from spine_core.mesh import VertebraMesh

#: The three planes in the order the viewer shows them side by side.
PLANES: tuple[Plane, ...] = (Plane.AXIAL, Plane.SAGITTAL, Plane.CORONAL)
#: LPS axis named by each plane's slice position ("z = 12.0 mm" for axial slices).
_POSITION_AXIS = {Plane.AXIAL: "z", Plane.SAGITTAL: "x", Plane.CORONAL: "y"}


# --------------------------------------------------------------------------------------------
# Opening a study
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInfo:
    """What the database says about a study and its annotated series (plain values)."""

    study_id: int
    study_uid: str
    dataset: str
    status: str
    patient_id: str
    description: str
    n_slices: int
    source_path: str
    series_id: int
    series_uid: str
    mask_id: int | None
    mask_levels: tuple[str, ...]
    report_fractured: tuple[str, ...] | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class StudyView:
    """An opened study: image, optional mask and how to display them. Shared, read-only.

    Attributes:
        info: the database facts.
        image: the CT volume (memory-mapped int16 HU).
        mask: canonical vertebra ids on the image grid, or None (no mask, or opened without it).
        geometry: the display geometry of the image grid.
        levels: level ids present in the mask, head to feet.
        spine_zoom: per plane, a square crop around the spine (None where none was found).
        centre: display voxel (S, P, L indices) at the centre of the spine (or of the volume).
        fingerprint: the source files' fingerprint the view was opened from.
    """

    info: StudyInfo
    image: Volume
    mask: Volume | None
    geometry: DisplayGeometry
    levels: tuple[int, ...]
    spine_zoom: Mapping[Plane, ZoomBox | None]
    centre: tuple[int, int, int]
    fingerprint: str = ""
    _stamps: tuple[tuple[str, int, int, int], ...] = field(default=(), repr=False)

    @property
    def mask_id(self) -> int | None:
        return self.info.mask_id if self.mask is not None else None

    def slice_count(self, plane: Plane) -> int:
        return self.geometry.slice_count(plane)


def study_info(study_id: int) -> StudyInfo:
    """The study's database facts; raises NotFound when it does not exist or has no series."""
    from db import models as m
    from db.annotations import primary_series
    from db.catalogue import fractured_levels
    from db.reports import report_of
    from db.studies import primary_mask

    with workspace().sessions() as session:
        study = session.get(m.Study, int(study_id))
        if study is None:
            raise NotFound(f"study {study_id} does not exist (any more); choose one in the "
                           "case list")
        series = primary_series(session, study.id)
        mask = primary_mask(series)
        report = report_of(session, study.id)
        return StudyInfo(
            study_id=study.id, study_uid=study.study_uid, dataset=study.dataset,
            status=study.status, patient_id=study.patient_id, description=study.description,
            n_slices=study.n_slices, source_path=study.source_path, series_id=series.id,
            series_uid=series.series_uid, mask_id=mask.id if mask is not None else None,
            mask_levels=tuple(mask.levels) if mask is not None else (),
            report_fractured=None if report is None else fractured_levels(report.labels),
            warnings=tuple(str(w) for w in [*(study.warnings or []), *(series.warnings or [])]),
        )


def _source_fingerprint(series_id: int) -> str:
    """Check the series' files are still the imported ones; their current fingerprint.

    Raises SourceChangedError (files missing or changed) with a re-import hint.
    """
    from db import models as m
    from db.studies import check_sources
    from spine_core.io.cache import fingerprint_files

    with workspace().sessions() as session:
        series = session.get(m.Series, series_id)
        if series is None:
            raise NotFound(f"series {series_id} was removed; re-import the study")
        return fingerprint_files(check_sources(series))


def _file_stamps(*volumes: Volume | None) -> tuple[tuple[str, int, int, int], ...]:
    """(path, size, mtime, inode) of the memory-mapped files behind the volumes."""
    stamps = []
    for vol in volumes:
        name = getattr(vol.array, "filename", None) if vol is not None else None
        if name:
            s = os.stat(name)
            stamps.append((str(name), s.st_size, s.st_mtime_ns, s.st_ino))
    return tuple(stamps)


def view_is_current(view: StudyView) -> bool:
    """False when a memory-mapped cache file behind ``view`` was replaced or cut short.

    Reading such a map would crash the server process (SIGBUS); reopen with :func:`load_study`.
    """
    return _stamps_valid(view)


def _stamps_valid(view: StudyView) -> bool:
    for name, size, mtime, ino in view._stamps:
        try:
            s = os.stat(name)
        except OSError:
            return False
        if (s.st_size, s.st_mtime_ns, s.st_ino) != (size, mtime, ino):
            return False
    return True


@st.cache_resource(max_entries=6, show_spinner="Opening the study…")
def _open_view(study_id: int, mask_id: int | None, fingerprint: str) -> StudyView:
    """Open image and mask through the memory-mapped volume cache (keyed by ids, not arrays)."""
    from db import models as m
    from db.annotations import primary_series
    from db.studies import open_image, open_mask

    ws = workspace()
    info = study_info(study_id)
    with ws.sessions() as session:
        series = primary_series(session, study_id)
        image = open_image(ws, series)
        mask = None
        if mask_id is not None:
            row = session.get(m.Mask, mask_id)
            mask = open_mask(ws, series, image, row) if row is not None else None
    geometry = DisplayGeometry.from_volume(image)
    levels: tuple[int, ...] = ()
    if mask is not None:
        present = {LEVEL_IDS[n] for n in info.mask_levels if n in LEVEL_IDS}
        levels = tuple(lid for lid in CRANIOCAUDAL_ORDER if lid in present)
    zoom = {p: spine_bbox(geometry, p, mask=mask, image=None if mask is not None else image,
                          margin_mm=12.0, square=True) for p in PLANES}
    return StudyView(info, image, mask, geometry, levels, zoom, _centre(geometry, mask),
                     fingerprint, _file_stamps(image, mask))


def _centre(geometry: DisplayGeometry, mask: Volume | None) -> tuple[int, int, int]:
    """Display voxel at the centre of the labelled voxels (or of the volume)."""
    shape = geometry.display_shape
    if mask is None:
        return tuple(n // 2 for n in shape)  # type: ignore[return-value]
    view = geometry.view(np.asarray(mask.array))
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(view.any(axis=other))
        out.append(int((hit[0] + hit[-1]) // 2) if hit.size else shape[axis] // 2)
    return tuple(out)  # type: ignore[return-value]


def load_study(study_id: int, *, with_mask: bool = True) -> StudyView:
    """The opened study (cached per server process), after checking its files.

    Raises:
        NotFound: no such study.
        SourceChangedError: its files were deleted or changed since import (re-import it).
        MaskError: the mask is missing or no longer fits the image (open it without the mask).
        CacheError, DicomError: the volume cannot be read.
    """
    info = study_info(study_id)
    fingerprint = _source_fingerprint(info.series_id)
    mask_id = info.mask_id if with_mask else None
    view = _open_view(info.study_id, mask_id, fingerprint)
    if not _stamps_valid(view):  # a cache file was replaced or damaged under the memory map
        forget_studies()
        view = _open_view(info.study_id, mask_id, fingerprint)
    return view


def forget_studies() -> None:
    """Drop every opened study of this server process (e.g. after a re-import)."""
    _open_view.clear()
    _study_png.cache_clear()
    _study_anchors.cache_clear()


def open_in_page(study_id: int, page: str = "pages/viewer.py") -> None:
    """Open a study in the viewer (or another page that reads ``viewer_study_id``)."""
    st.session_state["viewer_study_id"] = int(study_id)
    st.switch_page(page)


def back_to_cases_button(label: str = "Back to the case list", key: str = "back_to_cases") -> None:
    """A button that returns to the case browser."""
    if st.button(label, key=key, icon=":material/arrow_back:"):
        st.switch_page("pages/cases.py")


def selected_study_id() -> int | None:
    """The study chosen in the case browser, if any."""
    value = st.session_state.get("viewer_study_id")
    return int(value) if value is not None else None


# --------------------------------------------------------------------------------------------
# Slices, cursor, boxes
# --------------------------------------------------------------------------------------------


def initial_slices(view: StudyView) -> dict[Plane, int]:
    """Each plane's slice through the centre of the spine."""
    dv = view.centre
    return {Plane.AXIAL: dv[0], Plane.CORONAL: dv[1], Plane.SAGITTAL: dv[2]}


def cursor_at(view: StudyView, slices: Mapping[Plane, int]) -> Cursor:
    """The linked cursor where the three current slices cross, with its HU value."""
    dv = (int(slices[Plane.AXIAL]), int(slices[Plane.CORONAL]), int(slices[Plane.SAGITTAL]))
    voxel = view.geometry.display_to_source(dv)
    return view.geometry.cursor_at_voxel(voxel, view.image)


def slices_through(view: StudyView, plane: Plane, index: int, row: float, col: float
                   ) -> dict[Plane, int]:
    """The three planes' slices through the voxel at display pixel (row, col) of a slice."""
    return dict(view.geometry.cursor(plane, index, row, col).slices)


def position_text(view: StudyView, plane: Plane, index: int) -> str:
    """'Axial 41/96 · z = −87.4 mm' (slice numbers from 1)."""
    mm = view.geometry.slice_position_mm(plane, index)
    return (f"{PLANE_TITLES[plane]} {index + 1}/{view.slice_count(plane)} · "
            f"{_POSITION_AXIS[plane]} = {mm:.1f} mm")


@dataclass(frozen=True)
class ShownBox:
    """A fracture box to draw: where it is stored, its colour, its label and whose it is."""

    source: Box
    colour: RGB
    label: str
    group: str = ""


def reader_boxes(study_id: int, user: SignedInUser) -> list[ShownBox]:
    """The boxes this user may see (``db.annotations`` applies the blinding rules); on a film
    each caption names the vertebra as a radiologist reads it (the sacrum's top one: "S1")."""
    from db import models as m
    from db.annotations import visible_core_boxes
    from db.film_reading import is_film_study
    from spine_core.colours import reader_colours
    from spine_core.film_labels import shown_level

    with workspace().sessions() as session:
        actor = session.get(m.User, user.id)
        if actor is None:
            return []
        boxes: list[Box] = visible_core_boxes(session, actor, study_id)
        film = is_film_study(session, study_id)
    colours = reader_colours(b.reader for b in boxes)
    out = []
    for b in boxes:
        who = "you" if b.reader == user.username else str(b.reader)
        level = shown_level(b.level) if film and b.level else b.level
        label = f"{who} {level}" if level else who
        out.append(ShownBox(Box(b.slice_index, b.x, b.y, b.width, b.height),
                            colours[str(b.reader)], label, who))
    return out


def recent_reader_boxes(study_id: int, user: SignedInUser, max_age_s: float = 5.0
                        ) -> list[ShownBox]:
    """:func:`reader_boxes`, re-read at most every ``max_age_s`` within this user's session
    (slice steps then cost no database query; the session is the user's, so blinding holds)."""
    key = "_viewer_boxes"
    now = time.monotonic()
    cached = st.session_state.get(key)
    if cached is not None and cached[0] == (study_id, user.id) and now - cached[1] < max_age_s:
        return list(cached[2])
    boxes = reader_boxes(study_id, user)
    st.session_state[key] = ((study_id, user.id), now, tuple(boxes))
    return boxes


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


#: Default of ``mask`` in :func:`plane_image`: the study's own (dataset) mask.
STUDY_MASK: Any = object()


def plane_image(view: StudyView, plane: Plane, index: int, window: Window,
                overlay: OverlayStyle | None, zoom: ZoomBox | None = None, *,
                mask: Volume | None = STUDY_MASK) -> npt.NDArray[np.uint8]:
    """RGB pixels of one slice cropped to ``zoom``, a mask blended in when ``overlay`` is given.

    ``mask`` defaults to the study's mask; pass another on the same grid (a model's prediction)
    or None for the bare image.
    """
    shown = view.mask if mask is STUDY_MASK else mask
    return render_slice(view.image, shown, plane, index, window, overlay=overlay,
                        zoom=zoom, geometry=view.geometry)


def plane_image_png(view: StudyView, plane: Plane, index: int, window: Window,
                    overlay: OverlayStyle | None, zoom: ZoomBox | None = None, *,
                    mask: Volume | None = STUDY_MASK) -> bytes:
    """:func:`plane_image` as PNG bytes (fast zlib level 1).

    With the study's own mask the result is kept in a small per-process cache, so a step in one
    plane re-encodes only that plane (the crosshair is drawn by the browser, not in the pixels).
    """
    if mask is STUDY_MASK:
        return _study_png(view, plane, int(index), window, overlay, zoom)
    return encode_png(plane_image(view, plane, index, window, overlay, zoom, mask=mask))


@functools.lru_cache(maxsize=96)
def _study_png(view: StudyView, plane: Plane, index: int, window: Window,
               overlay: OverlayStyle | None, zoom: ZoomBox | None) -> bytes:
    return encode_png(plane_image(view, plane, index, window, overlay, zoom))


def shown_zoom(view: StudyView, plane: Plane, zoom_to_spine: bool) -> ZoomBox:
    """The crop shown: the spine box when asked and found, else the full plane."""
    if zoom_to_spine and view.spine_zoom.get(plane) is not None:
        return view.spine_zoom[plane]  # type: ignore[return-value]
    h, w = view.geometry.plane_shape(plane)
    return ZoomBox(0, 0, h, w)


def level_label_items(view: StudyView, plane: Plane, index: int, zoom: ZoomBox,
                      visible: Iterable[int] | None = None, *,
                      mask: Volume | None = STUDY_MASK) -> list[dict[str, Any]]:
    """Level names beside each level of the slice, as :func:`slice_view` label items."""
    if mask is STUDY_MASK:
        anchors = _study_anchors(view, plane, int(index), zoom)
    else:
        anchors = _anchors(mask, view.geometry, plane, int(index), zoom)
    keep = None if visible is None else set(visible)
    h, w = zoom.shape
    return [
        {"x": a.text_col / w, "y": a.text_row / h, "text": a.name,
         "colour": level_colour_hex(a.level_id),
         "anchor": "right" if a.text_anchor == "rm" else "left"}
        for a in anchors
        if keep is None or a.level_id in keep
    ]


def _anchors(mask: Volume | None, geometry: DisplayGeometry, plane: Plane, index: int,
             zoom: ZoomBox) -> tuple[LevelAnchor, ...]:
    if mask is None:
        return ()
    return tuple(level_anchors(plane_pixels(mask.array, geometry, plane, index, zoom=zoom)))


@functools.lru_cache(maxsize=96)
def _study_anchors(view: StudyView, plane: Plane, index: int, zoom: ZoomBox
                   ) -> tuple[LevelAnchor, ...]:
    return _anchors(view.mask, view.geometry, plane, index, zoom)


def box_items(view: StudyView, boxes: Sequence[ShownBox], plane: Plane, index: int,
              zoom: ZoomBox) -> list[dict[str, Any]]:
    """The boxes crossing this slice, as :func:`slice_view` rectangle items (image fractions).

    Labels are written in the acquisition plane only (elsewhere a box is a one-slice sliver).
    """
    h, w = zoom.shape
    labelled = plane is view.geometry.acquisition_plane
    out = []
    for b in boxes:
        d = view.geometry.box_in_plane(b.source, plane, index)
        if d is None:
            continue
        out.append({
            "x0": (d.col0 - zoom.col0) / w, "y0": (d.row0 - zoom.row0) / h,
            "x1": (d.col1 - zoom.col0) / w, "y1": (d.row1 - zoom.row0) / h,
            "colour": "#{:02x}{:02x}{:02x}".format(*b.colour),
            "label": b.label if labelled else "",
        })
    return out


def cursor_item(cursor: Cursor | None, plane: Plane, zoom: ZoomBox) -> dict[str, float] | None:
    """The crosshair position (image fractions, pixel centre) in this plane's crop."""
    if cursor is None:
        return None
    row, col = cursor.pixels[plane]
    h, w = zoom.shape
    return {"x": (col + 0.5 - zoom.col0) / w, "y": (row + 0.5 - zoom.row0) / h}


# --------------------------------------------------------------------------------------------
# Controls
# --------------------------------------------------------------------------------------------

WINDOW_CHOICES: tuple[str, ...] = (*WINDOW_PRESETS, "custom")


def window_controls(key: str = "win", container: Any = None) -> Window:
    """Window preset (bone, soft tissue, brain) or a custom width/level; returns the window."""
    box = container if container is not None else st
    name = box.selectbox("Window", WINDOW_CHOICES, key=f"{key}_preset",
                         format_func=lambda n: n.capitalize())
    if name != "custom":
        return WINDOW_PRESETS[name]
    c1, c2 = box.columns(2)
    width = c1.number_input("Width (HU)", min_value=1.0, max_value=10000.0, value=1800.0,
                            step=50.0, key=f"{key}_width")
    level = c2.number_input("Level (HU)", min_value=-2000.0, max_value=5000.0, value=400.0,
                            step=10.0, key=f"{key}_level")
    return Window(float(width), float(level))


def overlay_controls(view: StudyView, key: str = "ovl", container: Any = None
                     ) -> OverlayStyle | None:
    """Mask opacity and outline; None when there is no mask to draw.

    The vertebrae shown are those chosen with :func:`level_toggles` under the same ``key``.
    """
    box = container if container is not None else st
    if view.mask is None:
        return None
    opacity = box.slider("Mask opacity", 0.0, 1.0, 0.35, 0.05, key=f"{key}_opacity")
    outline = box.toggle("Outline only", value=False, key=f"{key}_outline")
    return OverlayStyle(opacity=float(opacity), visible=frozenset(shown_levels(view, key)),
                        outline=bool(outline))


def _levels_key(view: StudyView, key: str) -> str:
    return f"{key}_levels_{view.info.study_id}"


def shown_levels(view: StudyView, key: str = "ovl") -> tuple[int, ...]:
    """Level ids the user keeps visible (all until :func:`level_toggles` says otherwise)."""
    chosen = st.session_state.get(_levels_key(view, key))
    if chosen is None:
        return view.levels
    names = set(chosen)
    return tuple(lid for lid in view.levels if LEVEL_NAMES[lid] in names)


def level_toggles(view: StudyView, key: str = "ovl", container: Any = None) -> tuple[int, ...]:
    """The legend (colour and name of each level) and a toggle per vertebra to show or hide it."""
    box = container if container is not None else st
    if view.mask is None or not view.levels:
        return ()
    names = [LEVEL_NAMES[lid] for lid in view.levels]
    shown = set(shown_levels(view, key))
    box.markdown(legend_html(view.levels, set(view.levels) - shown), unsafe_allow_html=True)
    box.pills("Vertebrae shown", names, selection_mode="multi", default=names,
              key=_levels_key(view, key), label_visibility="collapsed",
              help="Click a level to hide or show it")
    return shown_levels(view, key)


def legend_html(level_ids: Iterable[int], hidden: Iterable[int] = ()) -> str:
    """Colour swatches with level names (hidden levels struck through)."""
    off = set(hidden)
    parts = []
    for lid in level_ids:
        name = html.escape(LEVEL_NAMES[lid])
        text = f"<s>{name}</s>" if lid in off else name
        parts.append(
            f"<span style='display:inline-block;margin:0 10px 4px 0;white-space:nowrap'>"
            f"<span style='display:inline-block;width:12px;height:12px;border-radius:2px;"
            f"vertical-align:-1px;margin-right:4px;background:{level_colour_hex(lid)}'></span>"
            f"{text}</span>"
        )
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# 3-D
# --------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner="Building the vertebra surfaces…")
def vertebra_surfaces(series_id: int, mask_id: int, fingerprint: str, _mask: Volume
                      ) -> list[VertebraMesh]:
    """One surface per vertebra, cached per (series, mask, source fingerprint)."""
    from spine_core.mesh import vertebra_meshes

    del series_id, mask_id, fingerprint  # the cache key
    return vertebra_meshes(_mask)


def figure_3d(view: StudyView, boxes: Sequence[ShownBox] = (), levels: Iterable[int] | None = None,
              *, height: int = 600) -> go.Figure:
    """Coloured, named vertebra meshes and the boxes as 3-D boxes (LPS mm, seen from the front)."""
    from spine_core.mesh import box_mesh, plotly_figure

    if view.mask is None or view.mask_id is None:
        meshes: list[VertebraMesh] = []
    else:
        meshes = vertebra_surfaces(view.info.series_id, view.mask_id, view.fingerprint,
                                   view.mask)
    keep = None if levels is None else set(levels)
    meshes = [m for m in meshes if keep is None or m.level_id in keep]
    cubes = [box_mesh(view.image.affine, (b.source.slice_index, b.source.slice_index),
                      b.source.x, b.source.y, b.source.width, b.source.height,
                      name=f"box: {b.label}", colour=b.colour) for b in boxes]
    fig = plotly_figure(meshes, cubes, height=height)
    # one legend entry per reader's boxes (clicking it hides them all); hover names each box
    seen: set[str] = set()
    for trace, b in zip(fig.data[len(meshes):], boxes):
        group = f"boxes: {b.group or b.label}"
        trace.update(legendgroup=group, name=group, showlegend=group not in seen,
                     hovertemplate=f"box: {html.escape(b.label)}<extra></extra>")
        seen.add(group)
    # a long column seen from 2 scene units away overflows the frame: step back to see it all,
    # the further the longer the column is against its width (a whole spine: about 10 times)
    fig.update_layout(scene_camera={"eye": {"x": 0.0, "y": -2.6 * _slenderness(meshes), "z": 0.0},
                                    "up": {"x": 0.0, "y": 0.0, "z": 1.0}})
    return fig


def _slenderness(meshes: Sequence[VertebraMesh]) -> float:
    """How much further than for a neck the camera stands: 1 up to a column 2.5 times as long as
    it is wide, then growing with the square root of that ratio."""
    if not meshes:
        return 1.0
    points = np.concatenate([m.vertices for m in meshes])
    span = points.max(axis=0) - points.min(axis=0)
    ratio = float(span[2]) / max(float(span[0]), float(span[1]), 1.0)
    return max(1.0, ratio / 2.5) ** 0.5
