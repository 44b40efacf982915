"""Display geometry: how a volume grid is shown on screen, in the radiological convention.

:class:`DisplayGeometry` maps stored voxels to the three display planes and back (orientation
letters, square-pixel aspect, slice positions in mm, the linked cursor, stored-slice boxes);
:class:`ZoomBox` and :func:`spine_bbox` crop a plane image.

Display convention
------------------
A volume is shown through a *display view*: its voxels permuted/flipped (numpy views, no copy)
so that display axis 0 increases towards Superior, axis 1 towards Posterior, axis 2 towards the
patient's Left — the semantics of ``Volume.reoriented(("S", "P", "L"))`` — whatever order the
array is stored in (the Volume's affine decides, oblique volumes take the closest orientation).
The three planes are cut from that view:

=========  ===================  ==============================  ===============================
plane      slice index runs     rows, top -> bottom              columns, left -> right
=========  ===================  ==============================  ===============================
axial      Inferior -> Superior  Anterior -> Posterior           patient Right -> Left
sagittal   Right -> Left         Superior -> Inferior            Anterior -> Posterior
coronal    Anterior -> Posterior Superior -> Inferior            patient Right -> Left
=========  ===================  ==============================  ===============================

so the patient's right is on the screen's left in axial and coronal images (radiological view).

Display pixels
--------------
With ``square_pixels=True`` (default) each plane is resampled so a display pixel is square, of the
smaller of the plane's two voxel sizes (anisotropic sagittal/coronal images are stretched, never
squashed). Pixel ``(row, col)`` of a plane image covers ``[row, row + 1) x [col, col + 1)`` in
*display pixel coordinates* (edge convention, as image editors and box tools use); its centre is
at ``(row + 0.5, col + 0.5)``. Boxes (:class:`~spine_core.render.overlays.BoxOverlay`,
:class:`ZoomBox`) use these coordinates, in the full (un-zoomed) plane image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.boxes import Box
from spine_core.errors import InputError, MaskError
from spine_core.volume import Volume


class Plane(str, Enum):
    AXIAL = "axial"
    SAGITTAL = "sagittal"
    CORONAL = "coronal"


@dataclass(frozen=True)
class _Layout:
    normal: int  # display axis the slice index runs along
    row_axis: int  # display axis along rows (after optional reversal)
    row_reversed: bool
    col_axis: int
    edges: tuple[str, str, str, str]  # top, bottom, left, right
    world_axis: int  # LPS component giving the slice position


_LAYOUTS: dict[Plane, _Layout] = {
    Plane.AXIAL: _Layout(0, 1, False, 2, ("A", "P", "R", "L"), 2),
    Plane.SAGITTAL: _Layout(2, 0, True, 1, ("S", "I", "A", "P"), 0),
    Plane.CORONAL: _Layout(1, 0, True, 2, ("S", "I", "R", "L"), 1),
}


def _plane(plane: Plane | str) -> Plane:
    try:
        return Plane(plane)
    except ValueError:
        names = [p.value for p in Plane]
        raise InputError(f"unknown plane '{plane}'; use one of {names}") from None


@dataclass(frozen=True)
class Cursor:
    """The linked cursor: one voxel seen from every plane.

    Attributes:
        voxel: index (a0, a1, a2) in the ORIGINAL volume array.
        lps: its centre in LPS mm.
        slices: display slice index of each plane through the voxel.
        pixels: (row, col) display pixel of the voxel in each plane's full image.
        value: voxel value (HU) when a volume was given.
    """

    voxel: tuple[int, int, int]
    lps: tuple[float, float, float]
    slices: dict[Plane, int]
    pixels: dict[Plane, tuple[int, int]]
    value: float | None = None


@dataclass(frozen=True)
class DisplayBox:
    """A rectangle in display pixel coordinates (edge convention) on one slice of one plane."""

    plane: Plane
    index: int
    row0: float
    col0: float
    row1: float
    col1: float


@dataclass(frozen=True)
class ZoomBox:
    """A crop of a plane image: rows ``row0:row1``, columns ``col0:col1`` of the full image."""

    row0: int
    col0: int
    row1: int
    col1: int

    def __post_init__(self) -> None:
        if self.row1 <= self.row0 or self.col1 <= self.col0:
            raise InputError(f"zoom box {self} is empty: row1/col1 must exceed row0/col0")

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    def clipped(self, shape: tuple[int, int]) -> ZoomBox:
        """The part of the box inside a ``shape`` image (raises if nothing is left)."""
        return ZoomBox(
            max(0, self.row0), max(0, self.col0), min(shape[0], self.row1), min(shape[1], self.col1)
        )

    def to_full(self, row: float, col: float) -> tuple[float, float]:
        """Crop pixel coordinates -> full image pixel coordinates."""
        return row + self.row0, col + self.col0

    def to_crop(self, row: float, col: float) -> tuple[float, float]:
        """Full image pixel coordinates -> crop pixel coordinates."""
        return row - self.row0, col - self.col0


@dataclass(frozen=True, eq=False)
class DisplayGeometry:
    """How a volume grid is shown: which stored axis is each display axis, flipped or not.

    ``perm[d]`` is the stored array axis shown as display axis ``d`` (0 = S, 1 = P, 2 = L) and
    ``flip[d]`` says whether it runs the other way (towards I, A or R). Build it with
    :meth:`from_volume`; it holds no voxels and is cheap to cache.
    """

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]
    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    square_pixels: bool = True

    @classmethod
    def from_volume(cls, volume: Volume, *, square_pixels: bool = True) -> DisplayGeometry:
        return _geometry_cached(volume.shape, volume.affine.tobytes(), square_pixels)

    @classmethod
    def from_affine(
        cls, shape: Sequence[int], affine: npt.ArrayLike, *, square_pixels: bool = True
    ) -> DisplayGeometry:
        import nibabel.orientations as nio

        aff = np.asarray(affine, dtype=np.float64)
        ornt = nio.io_orientation(aff)  # per stored axis: (world axis x/y/z, +-1), LPS world
        perm = [0, 0, 0]
        flip = [False, False, False]
        for axis, (world, sign) in enumerate(ornt):
            display_axis = 2 - int(world)  # world z (S) -> 0, y (P) -> 1, x (L) -> 2
            perm[display_axis] = axis
            flip[display_axis] = bool(sign < 0)
        shp = tuple(int(s) for s in shape)
        return cls(shp, aff, tuple(perm), tuple(flip), square_pixels)  # type: ignore[arg-type]

    # ---- the display view -------------------------------------------------------------------

    def view(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``array`` (on this grid) as a display-ordered (S, P, L) view; no copy."""
        if tuple(array.shape) != self.shape:
            raise MaskError(
                f"array of shape {array.shape} is not on this grid {self.shape}; bring it onto "
                "the image grid first"
            )
        out = array.transpose(self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    @functools.cached_property
    def display_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[a] for a in self.perm)  # type: ignore[return-value]

    @functools.cached_property
    def display_spacing(self) -> tuple[float, float, float]:
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(spacing[a]) for a in self.perm)  # type: ignore[return-value]

    @functools.cached_property
    def display_affine(self) -> npt.NDArray[np.float64]:
        """Display index (S, P, L axes) -> LPS mm, like ``Volume.reoriented`` would give."""
        to_source = np.zeros((4, 4))
        to_source[3, 3] = 1
        for d, a in enumerate(self.perm):
            if self.flip[d]:
                to_source[a, d] = -1
                to_source[a, 3] = self.shape[a] - 1
            else:
                to_source[a, d] = 1
        return self.affine @ to_source

    def display_to_source(self, dv: Sequence[int]) -> tuple[int, int, int]:
        """Display voxel index (S, P, L axes) -> stored array index (a0, a1, a2)."""
        src = [0, 0, 0]
        for d, a in enumerate(self.perm):
            src[a] = self.shape[a] - 1 - int(dv[d]) if self.flip[d] else int(dv[d])
        return tuple(src)  # type: ignore[return-value]

    def source_to_display(self, voxel: Sequence[int]) -> tuple[int, int, int]:
        """Stored array index (a0, a1, a2) -> display voxel index (S, P, L axes)."""
        dv = [0, 0, 0]
        for d, a in enumerate(self.perm):
            dv[d] = self.shape[a] - 1 - int(voxel[a]) if self.flip[d] else int(voxel[a])
        return tuple(dv)  # type: ignore[return-value]

    @property
    def axial_is_stored(self) -> bool:
        """Whether the display's axial slices are the stored slices ``array[k]`` (a0)."""
        return self.perm[0] == 0

    def edges_to_display(self, axis: int, lo: float, hi: float) -> tuple[int, float, float]:
        """A span of edge coordinates along stored axis ``axis`` -> (display axis, lo, hi)."""
        d = self.perm.index(axis)
        n = self.shape[axis]
        return (d, n - hi, n - lo) if self.flip[d] else (d, lo, hi)

    def edges_to_source(self, display_axis: int, lo: float, hi: float) -> tuple[int, float, float]:
        """A span of edge coordinates along a display axis -> (stored axis, lo, hi)."""
        a = self.perm[display_axis]
        n = self.shape[a]
        return (a, n - hi, n - lo) if self.flip[display_axis] else (a, lo, hi)

    # ---- planes -----------------------------------------------------------------------------

    def slice_count(self, plane: Plane | str) -> int:
        return self.display_shape[_LAYOUTS[_plane(plane)].normal]

    def voxel_shape(self, plane: Plane | str) -> tuple[int, int]:
        """(rows, cols) of a plane in voxels, before square-pixel resampling."""
        lay = _LAYOUTS[_plane(plane)]
        return self.display_shape[lay.row_axis], self.display_shape[lay.col_axis]

    def plane_shape(self, plane: Plane | str) -> tuple[int, int]:
        """(rows, cols) of a full plane image in display pixels."""
        lay = _LAYOUTS[_plane(plane)]
        nr, nc = self.voxel_shape(plane)
        if not self.square_pixels:
            return nr, nc
        sr, sc = self.display_spacing[lay.row_axis], self.display_spacing[lay.col_axis]
        target = min(sr, sc)
        return max(1, int(round(nr * sr / target))), max(1, int(round(nc * sc / target)))

    def pixel_spacing(self, plane: Plane | str) -> tuple[float, float]:
        """mm per display pixel (row, col) of a plane image."""
        lay = _LAYOUTS[_plane(plane)]
        (nr, nc), (h, w) = self.voxel_shape(plane), self.plane_shape(plane)
        sr, sc = self.display_spacing[lay.row_axis], self.display_spacing[lay.col_axis]
        return sr * nr / h, sc * nc / w

    def aspect(self, plane: Plane | str) -> float:
        """Height / width of one display pixel (1.0 with square pixels)."""
        sr, sc = self.pixel_spacing(plane)
        return sr / sc

    def edges(self, plane: Plane | str) -> tuple[str, str, str, str]:
        """Orientation letters at the (top, bottom, left, right) edges of a plane image."""
        return _LAYOUTS[_plane(plane)].edges

    def slice_position_mm(self, plane: Plane | str, index: int) -> float:
        """LPS coordinate (x for sagittal, y coronal, z axial) of the centre of a slice."""
        p = _plane(plane)
        lay = _LAYOUTS[p]
        self._check_index(p, index)
        centre = [(n - 1) / 2 for n in self.display_shape]
        centre[lay.normal] = index
        lps = self.display_affine[:3, :3] @ np.asarray(centre) + self.display_affine[:3, 3]
        return float(lps[lay.world_axis])

    def _scale(self, plane: Plane) -> tuple[float, float]:
        (nr, nc), (h, w) = self.voxel_shape(plane), self.plane_shape(plane)
        return h / nr, w / nc

    def _check_index(self, plane: Plane, index: int) -> None:
        n = self.slice_count(plane)
        if not 0 <= int(index) < n:
            raise InputError(f"{plane.value} slice {index} is outside 0..{n - 1}")

    # ---- clicks and the linked cursor ---------------------------------------------------------

    def display_to_voxel(
        self, plane: Plane | str, index: int, row: float, col: float
    ) -> tuple[int, int, int]:
        """Display pixel (row, col) of slice ``index`` of ``plane`` -> stored index (a0, a1, a2)."""
        p = _plane(plane)
        lay = _LAYOUTS[p]
        self._check_index(p, index)
        h, w = self.plane_shape(p)
        if not (0 <= row < h and 0 <= col < w):
            raise InputError(f"pixel ({row}, {col}) lies outside the {p.value} image {h}x{w}")
        sr, sc = self._scale(p)
        nr, nc = self.voxel_shape(p)
        vr = min(nr - 1, int(np.floor((int(row) + 0.5) / sr)))
        vc = min(nc - 1, int(np.floor((int(col) + 0.5) / sc)))
        dv = [0, 0, 0]
        dv[lay.normal] = int(index)
        dv[lay.row_axis] = nr - 1 - vr if lay.row_reversed else vr
        dv[lay.col_axis] = vc
        return self.display_to_source(dv)

    def voxel_to_display(
        self, voxel: Sequence[int]
    ) -> tuple[dict[Plane, int], dict[Plane, tuple[int, int]]]:
        """Stored index -> (slice index of each plane, display (row, col) in each plane)."""
        for v, n in zip(voxel, self.shape, strict=False):
            if not 0 <= int(v) < n:
                raise InputError(f"voxel index {tuple(voxel)} is outside the grid {self.shape}")
        dv = self.source_to_display(voxel)
        slices: dict[Plane, int] = {}
        pixels: dict[Plane, tuple[int, int]] = {}
        for p, lay in _LAYOUTS.items():
            sr, sc = self._scale(p)
            nr, _ = self.voxel_shape(p)
            vr = nr - 1 - dv[lay.row_axis] if lay.row_reversed else dv[lay.row_axis]
            slices[p] = dv[lay.normal]
            vc = dv[lay.col_axis]
            pixels[p] = (int(np.floor((vr + 0.5) * sr)), int(np.floor((vc + 0.5) * sc)))
        return slices, pixels

    def voxel_to_lps(self, voxel: Sequence[float]) -> tuple[float, float, float]:
        lps = self.affine[:3, :3] @ np.asarray(voxel, dtype=np.float64) + self.affine[:3, 3]
        return float(lps[0]), float(lps[1]), float(lps[2])

    def lps_to_voxel(self, lps: Sequence[float]) -> tuple[int, int, int]:
        """Nearest stored voxel of an LPS point (raises if the point is outside the volume)."""
        offset = np.asarray(lps, dtype=np.float64) - self.affine[:3, 3]
        idx = np.linalg.solve(self.affine[:3, :3], offset)
        vox = tuple(int(v) for v in np.rint(idx))
        if any(not 0 <= v < n for v, n in zip(vox, self.shape)):
            raise InputError(f"LPS point {tuple(lps)} mm lies outside the volume")
        return vox  # type: ignore[return-value]

    def cursor_at_voxel(self, voxel: Sequence[int], volume: Volume | None = None) -> Cursor:
        vox = tuple(int(v) for v in voxel)
        slices, pixels = self.voxel_to_display(vox)
        value = float(volume.array[vox]) if volume is not None else None
        return Cursor(vox, self.voxel_to_lps(vox), slices, pixels, value)  # type: ignore[arg-type]

    def cursor(
        self, plane: Plane | str, index: int, row: float, col: float, volume: Volume | None = None
    ) -> Cursor:
        """The linked cursor for a click at display pixel (row, col) of a slice."""
        return self.cursor_at_voxel(self.display_to_voxel(plane, index, row, col), volume)

    # ---- boxes --------------------------------------------------------------------------------

    @property
    def acquisition_plane(self) -> Plane:
        """The plane whose slices are the stored slices ``array[k]`` (boxes are drawn there)."""
        normal = self.perm.index(0)
        return next(p for p, lay in _LAYOUTS.items() if lay.normal == normal)

    def _edge_to_plane(self, plane: Plane, display_axis: int, edge: float) -> float:
        """Display-axis edge coordinate -> row or column edge coordinate of the plane image."""
        lay = _LAYOUTS[plane]
        sr, sc = self._scale(plane)
        n = self.display_shape[display_axis]
        if display_axis == lay.row_axis:
            return (n - edge if lay.row_reversed else edge) * sr
        return edge * sc

    def _plane_to_edge(self, plane: Plane, display_axis: int, coord: float) -> float:
        lay = _LAYOUTS[plane]
        sr, sc = self._scale(plane)
        n = self.display_shape[display_axis]
        if display_axis == lay.row_axis:
            e = coord / sr
            return n - e if lay.row_reversed else e
        return coord / sc

    def box_to_display(self, box: Box) -> DisplayBox:
        """A stored-slice box -> the same rectangle in the acquisition plane's display image."""
        plane = self.acquisition_plane
        lay = _LAYOUTS[plane]
        index = self.source_to_display((int(box.slice_index), 0, 0))[lay.normal]
        coords: dict[int, tuple[float, float]] = {}
        for src_axis, lo, size in ((1, box.y, box.height), (2, box.x, box.width)):
            d = self.perm.index(src_axis)
            n = self.shape[src_axis]
            e0, e1 = (n - lo - size, n - lo) if self.flip[d] else (lo, lo + size)
            a, b = self._edge_to_plane(plane, d, e0), self._edge_to_plane(plane, d, e1)
            coords[d] = (min(a, b), max(a, b))
        rows, cols = coords[lay.row_axis], coords[lay.col_axis]
        return DisplayBox(plane, index, rows[0], cols[0], rows[1], cols[1])

    def box_in_plane(self, box: Box, plane: Plane | str, index: int) -> DisplayBox | None:
        """Where a stored-slice box cuts slice ``index`` of any plane, or None if it misses it.

        The box is one stored slice thick: source edges ``a0`` in ``[k, k + 1)``, ``a1`` in
        ``[y, y + height)``, ``a2`` in ``[x, x + width)``. In the acquisition plane this is
        :meth:`box_to_display` on the box's own slice; in the other planes it is a thin rectangle
        (one slice high or wide) on every slice whose voxel centres pass through the box.
        """
        p = _plane(plane)
        lay = _LAYOUTS[p]
        self._check_index(p, index)
        k = float(box.slice_index)
        source_spans = {0: (k, k + 1.0), 1: (box.y, box.y + box.height),
                        2: (box.x, box.x + box.width)}
        spans: dict[int, tuple[float, float]] = {}
        for d, a in enumerate(self.perm):
            lo, hi = source_spans[a]
            n = self.shape[a]
            spans[d] = (n - hi, n - lo) if self.flip[d] else (lo, hi)
        lo, hi = spans[lay.normal]
        if not lo <= int(index) + 0.5 < hi:
            return None
        r = sorted(self._edge_to_plane(p, lay.row_axis, e) for e in spans[lay.row_axis])
        c = sorted(self._edge_to_plane(p, lay.col_axis, e) for e in spans[lay.col_axis])
        return DisplayBox(p, int(index), r[0], c[0], r[1], c[1])

    def box_from_display(self, box: DisplayBox) -> Box:
        """A rectangle drawn in the acquisition plane -> the stored-slice box the database keeps."""
        plane = self.acquisition_plane
        if _plane(box.plane) is not plane:
            raise InputError(
                f"boxes are drawn on the stored slices of this series ({plane.value}), "
                f"not on {Plane(box.plane).value} images"
            )
        lay = _LAYOUTS[plane]
        self._check_index(plane, box.index)
        dv = [0, 0, 0]
        dv[lay.normal] = int(box.index)
        slice_index = self.display_to_source(dv)[0]
        spans: dict[int, tuple[float, float]] = {}
        sides = ((lay.row_axis, (box.row0, box.row1)), (lay.col_axis, (box.col0, box.col1)))
        for d, (c0, c1) in sides:
            a = self.perm[d]
            n = self.shape[a]
            e0, e1 = self._plane_to_edge(plane, d, c0), self._plane_to_edge(plane, d, c1)
            if self.flip[d]:
                e0, e1 = n - e0, n - e1
            spans[a] = (min(e0, e1), max(e0, e1))
        (y0, y1), (x0, x1) = spans[1], spans[2]
        return Box(slice_index, x0, y0, x1 - x0, y1 - y0)


@functools.lru_cache(maxsize=64)
def _geometry_cached(shape: tuple[int, int, int], affine: bytes, square: bool) -> DisplayGeometry:
    aff = np.frombuffer(affine, dtype=np.float64).reshape(4, 4).copy()
    return DisplayGeometry.from_affine(shape, aff, square_pixels=square)


# --------------------------------------------------------------------------------------------
# Zoom to the spine
# --------------------------------------------------------------------------------------------


def _runs(profile: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) of each run of True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], profile.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _spine_foreground(
    view: npt.NDArray[Any], step: tuple[int, int, int], spacing: tuple[float, ...], threshold: float
) -> npt.NDArray[np.bool_]:
    """Heuristic spine voxels of a subsampled CT display view.

    Bone in a 70 mm band around the left-right centre of all bone, then the anterior-posterior
    run holding the most of that bone: the vertebral column rather than the sternum.
    """
    bone = view[:: step[0], :: step[1], :: step[2]] > threshold
    if not bone.any():
        return bone
    lr = bone.sum(axis=(0, 1)).astype(np.float64)
    centre = int((lr * np.arange(lr.size)).sum() / lr.sum())
    half = int(np.ceil(35.0 / (spacing[2] * step[2])))
    band = np.zeros(lr.size, dtype=bool)
    band[max(0, centre - half) : centre + half + 1] = True
    bone &= band[None, None, :]
    ap = bone.sum(axis=(0, 2)).astype(np.float64)
    if ap.max() <= 0:
        return bone
    heavy = max(_runs(ap >= 0.2 * ap.max()), key=lambda r: ap[r[0] : r[1]].sum())
    keep = np.zeros(ap.size, dtype=bool)
    keep[heavy[0] : heavy[1]] = True
    return bone & keep[None, :, None]


def _mask_bounds(
    geometry: DisplayGeometry, arr: npt.NDArray[Any]
) -> list[tuple[float, float]] | None:
    """Exact edge bounds of the nonzero voxels along each display axis (two passes, no copy)."""
    plane_any = np.asarray(arr.any(axis=0))
    if not plane_any.any():
        return None
    per_source = [
        np.flatnonzero(arr.any(axis=(1, 2))),
        np.flatnonzero(plane_any.any(axis=1)),
        np.flatnonzero(plane_any.any(axis=0)),
    ]
    bounds = []
    for d, a in enumerate(geometry.perm):
        lo, hi = float(per_source[a][0]), float(per_source[a][-1] + 1)
        n = geometry.shape[a]
        bounds.append((n - hi, n - lo) if geometry.flip[d] else (lo, hi))
    return bounds


def _image_bounds(
    geometry: DisplayGeometry, arr: npt.NDArray[Any], threshold: float
) -> list[tuple[float, float]] | None:
    """Edge bounds of the heuristic spine voxels, from a ~4 mm subsample of the display view."""
    sp = geometry.display_spacing
    step = tuple(max(1, int(4.0 // s)) for s in sp)
    fg = _spine_foreground(geometry.view(arr), step, sp, threshold)  # type: ignore[arg-type]
    if not fg.any():
        return None
    bounds = []
    for d in range(3):
        hit = np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != d)))
        lo = max(0, hit[0] * step[d] - (step[d] - 1))
        hi = min(geometry.display_shape[d], (hit[-1] + 1) * step[d])
        bounds.append((float(lo), float(hi)))
    return bounds


def spine_bbox(
    geometry: DisplayGeometry,
    plane: Plane | str,
    *,
    mask: Volume | npt.NDArray[Any] | None = None,
    image: Volume | npt.NDArray[Any] | None = None,
    margin_mm: float = 10.0,
    threshold_hu: float = 250.0,
    square: bool = False,
) -> ZoomBox | None:
    """Crop box (display pixels) around the spine in ``plane``, stable across slices.

    With a ``mask`` the box bounds exactly every labelled voxel projected onto the plane. Without
    one the ``image`` is searched heuristically on a ~4 mm subsample (bone above ``threshold_hu``
    in a band around the midline, the densest anterior-posterior run: the vertebral column rather
    than the sternum). ``margin_mm`` is added on every side; ``square`` widens the shorter side.
    Returns None when nothing is found. Compute it once per series, not per slice.
    """
    p = _plane(plane)
    lay = _LAYOUTS[p]
    source = mask if mask is not None else image
    if source is None:
        raise InputError("spine_bbox needs a mask or an image")
    arr = source.array if isinstance(source, Volume) else np.asarray(source)
    geometry.view(arr)  # checks the grid
    if mask is not None:
        bounds = _mask_bounds(geometry, arr)
    else:
        bounds = _image_bounds(geometry, arr, threshold_hu)
    if bounds is None:
        return None
    r = sorted(geometry._edge_to_plane(p, lay.row_axis, e) for e in bounds[lay.row_axis])
    c = sorted(geometry._edge_to_plane(p, lay.col_axis, e) for e in bounds[lay.col_axis])
    ps = geometry.pixel_spacing(p)
    mr, mc = margin_mm / ps[0], margin_mm / ps[1]
    r0, r1, c0, c1 = r[0] - mr, r[1] + mr, c[0] - mc, c[1] + mc
    if square:
        side = max(r1 - r0, c1 - c0)
        rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
        r0, r1, c0, c1 = rc - side / 2, rc + side / 2, cc - side / 2, cc + side / 2
    h, w = geometry.plane_shape(p)
    box = ZoomBox(int(np.floor(r0)), int(np.floor(c0)), int(np.ceil(r1)), int(np.ceil(c1)))
    return box.clipped((h, w))
