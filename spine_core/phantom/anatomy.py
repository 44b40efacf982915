"""Per-study anatomy: grid (field of view, spacing), spine curve, and a frame per vertebra.

Sizes are adult means in millimetres (body half-width ``a``, half-depth ``b``, half-height ``h``),
scaled per study. Every vertebra has a local frame: origin at its body centre (C1: on the dens
axis at mid-height of the lateral masses), ``u`` towards the patient's left, ``v`` posterior and
``w`` superior along the spine curve. The curve is a cervical lordosis (mid-cervical spine
anterior) that turns into the thoracic kyphosis, with a little scoliosis and axial rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.io.dicom_write import ct_affine
from spine_core.labels import LEVEL_IDS

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LevelSpec:
    """Dimensions of one vertebra (mm) and of the spaces around it."""

    name: str
    a: float  # body half-width (left-right)
    b: float  # body half-depth (antero-posterior)
    h: float  # body half-height
    disc_below: float  # gap to the next body (disc height), 0 for C1
    canal_half_width: float
    canal_depth: float
    spinous_len: float
    spinous_drop_deg: float
    bifid: bool
    tp_reach: float  # distance of the transverse process tip from the midline
    dens: float = 0.0  # C2 only: height of the dens above the body

    @property
    def level_id(self) -> int:
        return LEVEL_IDS[self.name]

    @property
    def kind(self) -> str:
        if self.name == "C1":
            return "atlas"
        if self.name == "C2":
            return "axis"
        return "cervical" if self.name.startswith("C") else "thoracic"

    def scaled(self, s: float) -> LevelSpec:
        fields: dict[str, Any] = {
            k: (v * s if isinstance(v, float) else v) for k, v in self.__dict__.items()
        }
        fields["spinous_drop_deg"] = self.spinous_drop_deg
        return LevelSpec(**fields)


def _base_specs() -> list[LevelSpec]:
    c = [
        LevelSpec("C1", 0.0, 0.0, 6.0, 0.0, 14.0, 24.0, 0.0, 0.0, False, 36.0),
        LevelSpec("C2", 8.5, 8.0, 10.0, 5.0, 12.0, 16.0, 14.0, 22.0, True, 21.0, dens=13.0),
        LevelSpec("C3", 8.5, 7.5, 6.5, 5.5, 12.0, 14.5, 11.0, 18.0, True, 24.0),
        LevelSpec("C4", 9.0, 7.6, 6.5, 5.5, 12.5, 14.5, 11.0, 18.0, True, 25.0),
        LevelSpec("C5", 9.5, 7.8, 6.6, 5.5, 12.5, 14.5, 12.0, 20.0, True, 26.0),
        LevelSpec("C6", 10.5, 8.0, 6.8, 5.5, 12.5, 14.5, 15.0, 24.0, True, 27.0),
        LevelSpec("C7", 11.5, 8.2, 7.0, 5.5, 12.0, 14.5, 22.0, 28.0, False, 32.0),
    ]
    t: list[LevelSpec] = []
    for i in range(1, 13):
        f = (i - 1) / 11.0
        t.append(
            LevelSpec(
                f"T{i}",
                a=12.5 + 7.0 * f,
                b=8.5 + 6.0 * f,
                h=8.0 + 3.0 * f,
                disc_below=5.0 + 2.0 * f,
                canal_half_width=9.0 - 1.0 * f,
                canal_depth=14.5 - 0.5 * f,
                spinous_len=25.0 + 5.0 * f,
                spinous_drop_deg=38.0 + 20.0 * min(1.0, 3 * f),
                bifid=False,
                tp_reach=36.0 - 4.0 * f,
            )
        )
    return c + t


BASE_SPECS: tuple[LevelSpec, ...] = tuple(_base_specs())


@dataclass(frozen=True)
class Frame:
    """Local frame of a vertebra: ``origin`` and unit axes ``u`` (left), ``v`` (posterior),
    ``w`` (superior), all in LPS mm."""

    origin: FloatArray
    u: FloatArray
    v: FloatArray
    w: FloatArray

    @property
    def rotation(self) -> FloatArray:
        """Columns u, v, w: local -> LPS direction."""
        return np.stack([self.u, self.v, self.w], axis=1)

    def to_lps(self, local: npt.ArrayLike) -> FloatArray:
        return np.asarray(local, dtype=np.float64) @ self.rotation.T + self.origin


@dataclass(frozen=True)
class Anatomy:
    """Everything about one study's body that does not depend on fractures."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (slice step, row, column) mm
    affine: FloatArray
    levels: tuple[LevelSpec, ...]  # levels placed (C1 downwards), possibly beyond the field of view
    frames: dict[str, Frame]
    curve_depth: FloatArray  # depth below C1 (mm), sampled
    curve_points: FloatArray  # (n, 3) LPS points of the body-centre curve at those depths
    hu: dict[str, float]  # tissue values of this study
    noise_sd: float
    skull_top_margin: float

    @property
    def voxel(self) -> float:
        return float(np.prod(self.spacing)) ** (1.0 / 3.0)

    def axis_coords(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """LPS z of each slice, y of each row, x of each column (axis-aligned grid)."""
        n0, n1, n2 = self.shape
        o = self.affine[:3, 3]
        z = o[2] + self.affine[2, 0] * np.arange(n0)
        y = o[1] + self.affine[1, 1] * np.arange(n1)
        x = o[0] + self.affine[0, 2] * np.arange(n2)
        return z, y, x

    def spine_at_z(self, z: npt.ArrayLike) -> FloatArray:
        """(…, 3) point of the body-centre curve at LPS heights ``z`` (clamped to the curve)."""
        pts = self.curve_points
        order = np.argsort(pts[:, 2])
        zs = pts[order, 2]
        zq = np.asarray(z, dtype=np.float64)
        return np.stack(
            [np.interp(zq, zs, pts[order, 0]), np.interp(zq, zs, pts[order, 1]), zq], axis=-1
        )


def _level_arclengths(levels: list[LevelSpec]) -> list[float]:
    """Arc length from C1's centre down to each level's body centre."""
    s = [0.0]
    c2 = levels[1]
    s.append(levels[0].h + 1.5 + c2.h)  # C1 lateral masses sit on C2's superior facets
    for prev, cur in zip(levels[1:-1], levels[2:]):
        s.append(s[-1] + prev.h + prev.disc_below + cur.h)
    return s


def build_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> Anatomy:
    """Draw one study's anatomy and grid."""
    n0, n1, n2 = shape
    scale = float(rng.uniform(0.9, 1.1))
    levels = [spec.scaled(scale) for spec in BASE_SPECS]
    s_levels = _level_arclengths(levels)
    s_t1 = s_levels[7]

    # Field of view: top margin above C1 (skull base visible when it is large enough), bottom
    # margin below T1's centre; slice step follows, kept within 0.625–1.25 mm when it can be.
    top_margin = float(rng.uniform(12.0, 34.0))
    bottom_margin = float(rng.uniform(10.0, 45.0))
    extent = top_margin + s_t1 + bottom_margin
    dz = extent / n0
    if dz < 0.625:
        dz = 0.625
    dz = round(dz, 4)
    fov = float(rng.uniform(140.0, 205.0))
    dxy = round(fov / max(n1, n2), 4)
    spacing = (dz, dxy, dxy)

    # Spine curve in LPS, as x(d), y(d) of the depth d below C1's centre.
    z_c1 = float(rng.uniform(-60.0, 60.0))
    x0 = float(rng.uniform(-6.0, 6.0))
    y0 = float(rng.uniform(-24.0, -4.0))
    lordosis = float(rng.uniform(-3.0, 14.0)) * scale
    lean = float(rng.uniform(-0.18, 0.18))
    scoliosis = float(rng.uniform(-3.5, 3.5))
    scol_phase = float(rng.uniform(0, np.pi))
    length = s_t1 * 1.05
    d = np.linspace(-80.0, 450.0, 2121)
    y = y0 - lordosis * np.sin(np.pi * d / length) + lean * d
    y = y - (-lordosis * np.sin(np.pi * 40 / length) + lean * 40)  # y0 is mid-cervical (C4)
    x = x0 + scoliosis * np.sin(np.pi * d / length + scol_phase)
    z = z_c1 - d
    steps = np.sqrt(np.diff(d) ** 2 + np.diff(x) ** 2 + np.diff(y) ** 2)
    s = np.concatenate([[0.0], np.cumsum(steps)])
    s -= np.interp(0.0, d, s)
    pts = np.stack([x, y, z], axis=1)

    # Grid: top slice a margin above C1, columns/rows centred on x = 0 / y = 0.
    z_top = z_c1 + top_margin
    origin = (-dxy * (n2 - 1) / 2, -dxy * (n1 - 1) / 2, z_top - dz * (n0 - 1))
    affine = ct_affine(shape, spacing, origin=origin)
    z_bottom = origin[2]

    frames: dict[str, Frame] = {}
    rotation0 = float(rng.uniform(-4.0, 4.0))
    placed: list[LevelSpec] = []
    for spec, s_i in zip(levels, s_levels):
        centre = np.array([np.interp(s_i, s, pts[:, k]) for k in range(3)])
        if centre[2] + 2 * spec.h < z_bottom - 40.0:
            break
        tangent = np.array([np.interp(s_i + 0.5, s, pts[:, k]) - np.interp(s_i - 0.5, s, pts[:, k])
                            for k in range(3)])
        w_ax = -tangent / np.linalg.norm(tangent)
        u_ax = np.array([1.0, 0.0, 0.0]) - w_ax[0] * w_ax
        u_ax /= np.linalg.norm(u_ax)
        v_ax = np.cross(w_ax, u_ax)
        psi = np.deg2rad(rotation0 + float(rng.uniform(-2.5, 2.5)))
        u_r = np.cos(psi) * u_ax + np.sin(psi) * v_ax
        v_r = -np.sin(psi) * u_ax + np.cos(psi) * v_ax
        frames[spec.name] = Frame(centre, u_r, v_r, w_ax)
        placed.append(spec)

    cortex = float(rng.uniform(1050.0, 1450.0))
    hu = {
        "air": -1000.0,
        "fat": float(rng.uniform(-115.0, -85.0)),
        "soft": float(rng.uniform(35.0, 48.0)),
        "muscle": float(rng.uniform(48.0, 62.0)),
        "csf": float(rng.uniform(5.0, 15.0)),
        "cord": float(rng.uniform(28.0, 38.0)),
        "disc": float(rng.uniform(72.0, 95.0)),
        "cortex": cortex,
        "cancellous": float(rng.uniform(210.0, 380.0)),
        "lung": float(rng.uniform(-880.0, -820.0)),
        "hematoma": float(rng.uniform(45.0, 70.0)),
        "fat_thickness": float(rng.uniform(3.0, 12.0)),
        "cortex_mm": float(rng.uniform(0.9, 1.4)),
    }
    return Anatomy(
        shape=shape,
        spacing=spacing,
        affine=affine,
        levels=tuple(placed),
        frames=frames,
        curve_depth=d,
        curve_points=pts,
        hu=hu,
        noise_sd=float(rng.uniform(8.0, 26.0)),
        skull_top_margin=top_margin,
    )


@dataclass(frozen=True)
class LocalGrid:
    """The voxels of a box-shaped region, with their coordinates in a vertebra's frame."""

    slices: tuple[slice, slice, slice]
    u: npt.NDArray[np.float32]
    v: npt.NDArray[np.float32]
    w: npt.NDArray[np.float32]
    frame: Frame
    world_to_index: FloatArray  # 4x4, LPS -> global array index

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.u.shape

    def sub(self, lo: npt.ArrayLike, hi: npt.ArrayLike) -> tuple[slice, slice, slice] | None:
        """Slices of this grid's arrays covering the local box ``lo``–``hi`` (None: outside)."""
        start, stop = _index_box(self.frame, self.world_to_index, lo, hi)
        offset = np.array([s.start for s in self.slices])
        start = np.maximum(start - offset, 0)
        stop = np.minimum(stop - offset, self.shape)
        if np.any(stop <= start):
            return None
        return (slice(int(start[0]), int(stop[0])), slice(int(start[1]), int(stop[1])),
                slice(int(start[2]), int(stop[2])))


def _index_box(frame: Frame, world_to_index: FloatArray, lo: npt.ArrayLike,
               hi: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    idx = frame.to_lps(corners) @ world_to_index[:3, :3].T + world_to_index[:3, 3]
    start = np.floor(idx.min(axis=0)).astype(np.int64) - 1
    return start, np.ceil(idx.max(axis=0)).astype(np.int64) + 2


def local_grid(
    anat: Anatomy, frame: Frame, lo: npt.ArrayLike, hi: npt.ArrayLike
) -> LocalGrid | None:
    """Voxels of the grid covering the local box ``lo``–``hi`` (mm); None if it misses the grid."""
    inv = np.asarray(np.linalg.inv(anat.affine), dtype=np.float64)  # stubs: floating[Any]
    start, stop = _index_box(frame, inv, lo, hi)
    start = np.maximum(start, 0)
    stop = np.minimum(stop, anat.shape)
    if np.any(stop <= start):
        return None
    z, y, x = anat.axis_coords()
    zz = (z[start[0]:stop[0]] - frame.origin[2]).astype(np.float32)[:, None, None]
    yy = (y[start[1]:stop[1]] - frame.origin[1]).astype(np.float32)[None, :, None]
    xx = (x[start[2]:stop[2]] - frame.origin[0]).astype(np.float32)[None, None, :]
    r = frame.rotation.astype(np.float32)  # columns u, v, w in LPS
    u = xx * r[0, 0] + yy * r[1, 0] + zz * r[2, 0]
    v = xx * r[0, 1] + yy * r[1, 1] + zz * r[2, 1]
    w = xx * r[0, 2] + yy * r[1, 2] + zz * r[2, 2]
    sl = (slice(int(start[0]), int(stop[0])), slice(int(start[1]), int(stop[1])),
          slice(int(start[2]), int(stop[2])))
    return LocalGrid(sl, u, v, w, frame, inv)
