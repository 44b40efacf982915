"""Bones into the image and the label map: cortex, cancellous core, fracture cracks, skull base.

Each vertebra's signed distance is evaluated on its own bounding box. A voxel belongs to the bone
whose surface it lies deepest inside; its HU is cortical near the surface (``cortex_mm`` deep) and
cancellous (with a smooth texture) deeper, and partial-volume edges blend it into the soft tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.phantom import sdf
from spine_core.phantom.anatomy import Anatomy, LocalGrid, local_grid
from spine_core.phantom.fractures import FracturePlan
from spine_core.phantom.vertebra import Part, Vertebra

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FractureVoxels:
    """The voxels of one crack of a level's fracture (within its bone), on a box of the grid."""

    level: str
    slices: tuple[slice, slice, slice]
    mask: npt.NDArray[np.bool_]


class BoneCanvas:
    """Accumulates bones: nearest-surface distance, bone HU and labels over the whole grid."""

    def __init__(self, anat: Anatomy) -> None:
        self.anat = anat
        self.dist = np.full(anat.shape, 50.0, dtype=np.float32)
        self.hu = np.zeros(anat.shape, dtype=np.float32)
        self.labels = np.zeros(anat.shape, dtype=np.uint8)
        self.touched: list[tuple[slice, slice, slice]] = []
        self.regions: dict[int, tuple[slice, slice, slice]] = {}  # label -> box holding it

    def _bone_hu(self, d: F32, rng: np.random.Generator, cortex_mm: float,
                 core: F32 | None = None) -> F32:
        """Cortical HU near the surface, textured cancellous HU deeper; thin parts (not in
        ``core``) are denser inside, as laminae and processes look on CT."""
        hu = self.anat.hu
        texture = rng.standard_normal(d.shape, dtype=np.float32)
        texture = ndimage.gaussian_filter(texture, 1.0, mode="nearest", truncate=2.5)
        texture *= np.float32(45.0 / max(float(texture.std()), 1e-3))
        cort = np.clip((np.float32(cortex_mm) + d) / np.float32(self.anat.voxel) + np.float32(0.5),
                       0, 1)
        canc = np.float32(hu["cancellous"]) + texture
        if core is not None:
            dense = np.float32(0.45 * hu["cortex"] + 0.55 * hu["cancellous"])
            thin = np.clip((core - d - np.float32(0.3)) / np.float32(self.anat.voxel), 0, 1)
            canc += thin * (dense - canc)
        return canc + cort * (np.float32(hu["cortex"]) - canc)

    def add(self, g: LocalGrid, d: F32, bone_hu: F32, label: int) -> None:
        cur = self.dist[g.slices]
        closer = d < cur
        cur[closer] = d[closer]
        self.hu[g.slices][closer] = bone_hu[closer]
        lab = self.labels[g.slices]
        lab[closer & (d <= 0)] = label
        self.touched.append(g.slices)
        if label:
            self.regions[label] = g.slices

    def composite(self, img: F32) -> None:
        """Blend the bones into ``img`` (partial volume at the surfaces)."""
        if not self.touched:
            return
        lo = [min(s[k].start for s in self.touched) for k in range(3)]
        hi = [max(s[k].stop for s in self.touched) for k in range(3)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        occ = sdf.occupancy(self.dist[region], self.anat.voxel)
        target = img[region]
        target += occ * (self.hu[region] - target)


def render_vertebra(canvas: BoneCanvas, vert: Vertebra, plan: FracturePlan | None,
                    rng: np.random.Generator) -> list[FractureVoxels]:
    """Draw one vertebra (fractured per ``plan``); returns the voxels of each crack."""
    anat = canvas.anat
    g = local_grid(anat, anat.frames[vert.spec.name], *vert.bounds)
    if g is None:
        return []
    disp = plan.displacement if plan is not None else None
    d, core = vert.sdf(g, disp)
    cortex_mm = max(anat.hu["cortex_mm"], 0.9 * anat.voxel)
    bone_hu = canvas._bone_hu(d, rng, cortex_mm, core)
    found: list[FractureVoxels] = []
    if plan is not None:
        if plan.wedge_mm:
            # Compressed trabeculae under the lowered endplate look denser.
            body = vert.part("body")
            below_top = body.top_at(g.v) - g.w
            band = (below_top > 0) & (below_top < 4.0) & (g.v < np.float32(body.radii[1] * 0.3))
            bone_hu += band * (d < -cortex_mm) * np.float32(280.0)
        gap = np.zeros(g.shape, dtype=np.float32)
        u, v, w = (g.u, g.v, g.w) if disp is None else disp.apply(g.u, g.v, g.w)
        for crack in plan.cracks:
            one = crack.field(u, v, w, vert, anat.voxel)
            found.append(FractureVoxels(vert.spec.name, g.slices, (one >= 0.5) & (d <= 0)))
            np.maximum(gap, one, out=gap)
        bone_hu += gap * (np.float32(anat.hu["hematoma"]) - bone_hu)
    canvas.add(g, d, bone_hu, vert.spec.level_id)
    return found


def skull_base_parts(anat: Anatomy) -> tuple[list[Part], list[Part], Part]:
    """Occiput (a bowl around the foramen magnum), clivus, condyles, mastoids, in C1's frame."""
    k = anat.levels[0].canal_depth / 24.0
    centre = (0.0, 14 * k, 60 * k)
    outer = Part("skull_outer", "capsule", centre, centre, (58 * k, 56 * k, 48 * k))
    inner = Part("skull_inner", "capsule", centre, centre, (52.5 * k, 50.5 * k, 42.5 * k))
    foramen = Part("foramen_magnum", "cylinder", (0.0, 11 * k, 0.0), radii=(15 * k, 18 * k, 1.0))
    solid = [
        Part("clivus", "capsule", (0.0, -9 * k, 16 * k), (0.0, -27 * k, 48 * k),
             (11 * k, 5.5 * k, 5.5 * k)),
        Part("condyle_L", "capsule", (14.5 * k, 2 * k, 11.0 * k), (14.5 * k, 8 * k, 12.5 * k),
             (5.5 * k, 7 * k, 3.2 * k)),
        Part("condyle_R", "capsule", (-14.5 * k, 2 * k, 11.0 * k), (-14.5 * k, 8 * k, 12.5 * k),
             (5.5 * k, 7 * k, 3.2 * k)),
        Part("mastoid_L", "capsule", (43 * k, 6 * k, 16 * k), (46 * k, 10 * k, 32 * k),
             (7 * k, 9 * k, 9 * k)),
        Part("mastoid_R", "capsule", (-43 * k, 6 * k, 16 * k), (-46 * k, 10 * k, 32 * k),
             (7 * k, 9 * k, 9 * k)),
    ]
    return [outer, inner], solid, foramen


def render_skull_base(canvas: BoneCanvas, rng: np.random.Generator) -> None:
    """The bottom of the skull when the field of view reaches above C1 (label 0)."""
    anat = canvas.anat
    k = anat.levels[0].canal_depth / 24.0
    g = local_grid(anat, anat.frames["C1"], (-62 * k, -45 * k, 6 * k), (62 * k, 75 * k, 110 * k))
    if g is None:
        return
    (outer, inner), solid, foramen = skull_base_parts(anat)
    shell = np.maximum(outer.sdf(g.u, g.v, g.w), -inner.sdf(g.u, g.v, g.w))
    d = np.maximum(shell, -foramen.sdf(g.u, g.v, g.w))
    for p in solid:
        d = np.minimum(d, p.sdf(g.u, g.v, g.w))
    canvas.add(g, d, canvas._bone_hu(d, rng, max(1.6, anat.voxel)), 0)


def _chain(name: str, points: list[tuple[float, float, float]], radii: tuple[float, float, float]
           ) -> list[Part]:
    return [Part(f"{name}{i}", "capsule", a, b, radii) for i, (a, b) in
            enumerate(zip(points[:-1], points[1:]))]


def thorax_parts(anat: Anatomy, level: str) -> list[Part]:
    """First and second ribs (from ``level``'s transverse processes round to the front) and, for
    T1, the clavicles; in that level's frame, both sides."""
    spec = next(s for s in anat.levels if s.name == level)
    a, b, tp = spec.a, spec.b, spec.tp_reach
    second = level == "T2"
    grow, drop = (8.0, 10.0) if second else (0.0, 0.0)
    parts: list[Part] = []
    for side in (1.0, -1.0):
        pts = [(a + 1.0, b - 1.0, 1.0), (tp, b + 12.0, 0.0),
               (tp + 12 + grow, b + 9.0, -4 - drop / 3), (tp + 22 + grow, b - 4.0, -10 - drop / 2),
               (tp + 22 + grow, -b - 16.0, -18 - drop), (tp + 10 + grow, -b - 32.0, -26 - drop),
               (tp - 6 + grow / 2, -b - 40.0, -32 - drop)]
        pts = [(side * u, v, w) for u, v, w in pts]
        parts += _chain(f"rib{'2' if second else '1'}_{side:+.0f}_", pts, (3.2, 4.5, 3.6))
        if not second:
            clav = [(side * 18.0, -b - 38.0, -10.0), (side * 45.0, -b - 42.0, -4.0),
                    (side * 80.0, -b - 30.0, 4.0), (side * 112.0, -b - 8.0, 10.0)]
            parts += _chain(f"clavicle_{side:+.0f}_", clav, (6.0, 5.5, 5.5))
    return parts


def render_thorax(canvas: BoneCanvas, rng: np.random.Generator) -> None:
    """Ribs 1–2 and the clavicles, where the field of view reaches them (label 0)."""
    anat = canvas.anat
    for level in ("T1", "T2"):
        if level not in anat.frames:
            continue
        parts = thorax_parts(anat, level)
        lo = np.min([p.bounds(3.0)[0] for p in parts], axis=0)
        hi = np.max([p.bounds(3.0)[1] for p in parts], axis=0)
        g = local_grid(anat, anat.frames[level], lo, hi)
        if g is None:
            continue
        d = np.full(g.shape, np.float32(4.0), dtype=np.float32)
        for p in parts:
            rs = g.sub(*p.bounds(3.0))
            if rs is not None:
                np.minimum(d[rs], p.sdf(g.u[rs], g.v[rs], g.w[rs]), out=d[rs])
        canvas.add(g, d, canvas._bone_hu(d, rng, max(1.3, anat.voxel)), 0)
