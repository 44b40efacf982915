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
    """Occiput (a shell), foramen magnum, clivus, condyles and mastoids in C1's frame."""
    k = anat.levels[0].canal_depth / 24.0
    outer = Part("skull_outer", "capsule", (0.0, 22 * k, 52 * k), (0.0, 22 * k, 52 * k),
                 (66 * k, 58 * k, 42 * k))
    inner = Part("skull_inner", "capsule", (0.0, 22 * k, 52 * k), (0.0, 22 * k, 52 * k),
                 (59 * k, 51 * k, 35.5 * k))
    foramen = Part("foramen_magnum", "cylinder", (0.0, 12 * k, 0.0), radii=(15 * k, 18 * k, 1.0))
    solid = [
        Part("clivus", "capsule", (0.0, -8 * k, 15 * k), (0.0, -26 * k, 46 * k),
             (11 * k, 5.5 * k, 5.5 * k)),
        Part("condyle_L", "capsule", (14.5 * k, 2 * k, 11.5 * k), (14.5 * k, 8 * k, 12.5 * k),
             (5.5 * k, 7 * k, 3.0 * k)),
        Part("condyle_R", "capsule", (-14.5 * k, 2 * k, 11.5 * k), (-14.5 * k, 8 * k, 12.5 * k),
             (5.5 * k, 7 * k, 3.0 * k)),
        Part("mastoid_L", "capsule", (52 * k, 8 * k, 12 * k), (52 * k, 10 * k, 26 * k),
             (8 * k, 10 * k, 9 * k)),
        Part("mastoid_R", "capsule", (-52 * k, 8 * k, 12 * k), (-52 * k, 10 * k, 26 * k),
             (8 * k, 10 * k, 9 * k)),
    ]
    return [outer, inner], solid, foramen


def render_skull_base(canvas: BoneCanvas, rng: np.random.Generator) -> None:
    """The bottom of the skull when the field of view reaches above C1 (label 0)."""
    anat = canvas.anat
    k = anat.levels[0].canal_depth / 24.0
    g = local_grid(anat, anat.frames["C1"], (-70 * k, -45 * k, 6 * k), (70 * k, 85 * k, 95 * k))
    if g is None:
        return
    (outer, inner), solid, foramen = skull_base_parts(anat)
    shell = np.maximum(outer.sdf(g.u, g.v, g.w), -inner.sdf(g.u, g.v, g.w))
    d = np.maximum(shell, -foramen.sdf(g.u, g.v, g.w))
    for p in solid:
        d = np.minimum(d, p.sdf(g.u, g.v, g.w))
    canvas.add(g, d, canvas._bone_hu(d, rng, max(1.6, anat.voxel)), 0)
