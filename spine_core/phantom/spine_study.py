"""One synthetic thoracolumbar or whole-spine CT: image, labels, centroids, fractures, truth.

:func:`generate_spine_study` draws, deterministically per seed, the anatomy
(:mod:`~spine_core.phantom.spine_anatomy`, transitional anatomy included), soft tissues
(:mod:`~spine_core.phantom.torso`), vertebrae with ribs and the sacrum
(:mod:`~spine_core.phantom.trunk`), osteoporotic compression fractures graded by Genant
(:mod:`~spine_core.phantom.compression`) and, in whole-spine studies, the cervical trauma
fractures of the cervical generator. The grid is an axial LPS stack (see
:mod:`spine_core.volume`); ``orientation`` says how a NIfTI writer should store it (the scanner's
orientation, kept by VerSe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError
from spine_core.io.dicom_write import uid_from_seed
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.anatomy import Anatomy
from spine_core.phantom.bones import BoneCanvas, render_skull_base, render_vertebra
from spine_core.phantom.compression import (
    Compression,
    compress,
    render_compressed,
    sample_compressions,
    top_loss_mm,
)
from spine_core.phantom.fractures import FracturePlan, plan_fracture, sample_fractured_levels
from spine_core.phantom.spine_anatomy import (
    Transitional,
    build_spine_anatomy,
    sample_transitional,
)
from spine_core.phantom.tissues import paint_canal, paint_discs
from spine_core.phantom.torso import paint_torso
from spine_core.phantom.trunk import build_sacrum, render_pelvis, render_ribs, sacralise
from spine_core.phantom.vertebra import Vertebra, build_vertebra
from spine_core.volume import Volume

#: NIfTI orientations (nibabel axis codes of the stored file, i, j, k) studies are written in.
ORIENTATIONS: tuple[tuple[str, str, str], ...] = (("L", "P", "S"), ("R", "A", "S"), ("P", "I", "R"))
#: Probability that a whole-spine study also has cervical trauma fractures.
P_CERVICAL_TRAUMA = 0.15
MIN_SHAPE = (64, 48, 48)


@dataclass(frozen=True)
class SpineStudy:
    """A synthetic spine CT with everything known about it.

    ``image`` (int16 HU) and ``labels`` (uint8 canonical = VerSe ids: 1–7 C, 8–19 T, 20–25 L,
    26 sacrum, 28 T13) share one axial LPS grid. ``centroids`` maps each label present to its
    centre of mass (LPS mm). ``compressions`` are the Genant-graded fractures, ``trauma`` the
    cervical fractures (level -> kind), ``orientation`` the NIfTI axis codes to store it in.
    """

    seed: int
    region: str
    subject: str
    image: Volume
    labels: Volume
    centroids: dict[int, npt.NDArray[np.float64]]
    compressions: tuple[Compression, ...]
    trauma: dict[str, str]
    transitional: Transitional
    orientation: tuple[str, str, str]

    @property
    def present_levels(self) -> tuple[int, ...]:
        return tuple(sorted(self.centroids))


def _levels_in_view(anat: Anatomy, margin: float = 5.0) -> list[str]:
    """Levels whose whole body lies inside the grid (``margin`` mm inside its top and bottom)."""
    z, _, _ = anat.axis_coords()
    lo, hi = float(min(z[0], z[-1])), float(max(z[0], z[-1]))
    out = []
    for spec in anat.levels:
        zc = float(anat.frames[spec.name].origin[2])
        if lo + spec.h + margin < zc < hi - spec.h - margin:
            out.append(spec.name)
    return out


def _body_centroids(labels: npt.NDArray[np.uint8], vol: Volume,
                    regions: dict[int, tuple[slice, slice, slice]], anat: Anatomy,
                    verts: dict[str, Vertebra]) -> dict[int, npt.NDArray[np.float64]]:
    """Centre of mass (LPS mm) of each level's vertebral body voxels, as VerSe's centroids are;
    C1 (no body) and levels whose body is cut off: of all the level's voxels."""
    out: dict[int, npt.NDArray[np.float64]] = {}
    for name, vert in verts.items():
        lid = LEVEL_IDS[name]
        if lid not in regions:
            continue
        box = regions[lid]
        idx = np.argwhere(labels[box] == lid) + np.array([s.start for s in box])
        if not idx.size:
            continue
        lps = vol.index_to_lps(idx)
        frame = anat.frames[name]
        local = (lps - frame.origin) @ frame.rotation
        body = [p for p in vert.parts if p.name == "body"]
        if body:
            c, r = np.asarray(body[0].a), np.asarray(body[0].radii)
            inside = np.all(np.abs(local - c) <= r, axis=1)
            if np.count_nonzero(inside) >= 4:
                lps = lps[inside]
        out[lid] = lps.mean(axis=0)
    return out


def _check(shape: tuple[int, int, int], region: str, seed: int) -> tuple[int, int, int]:
    if region not in ("thoracolumbar", "whole"):
        raise InputError(f"region {region!r}: use thoracolumbar or whole (cervical: generate_study)")
    if seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed}")
    if len(shape) != 3 or any(int(s) < m for s, m in zip(shape, MIN_SHAPE)):
        raise InputError(f"phantom shape {tuple(shape)} is too small: use (slices, rows, columns) "
                         f"of at least {MIN_SHAPE}, e.g. (512, 256, 256)")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def generate_spine_study(
    seed: int,
    shape: tuple[int, int, int] = (512, 256, 256),
    *,
    region: str = "whole",
    transitional: Transitional | None = None,
    compressions: list[Compression] | None = None,
    orientation: tuple[str, str, str] | None = None,
    noise: bool = True,
) -> SpineStudy:
    """Generate one thoracolumbar or whole-spine CT, deterministic per ``seed``.

    Args:
        seed: any non-negative int.
        shape: (slices, rows, columns) of the axial grid; spacing follows from the field of view.
        region: "whole" (skull base to below the sacrum) or "thoracolumbar".
        transitional: force a segmentation (None: drawn at realistic rates).
        compressions: force these compression fractures (None: drawn; [] for none).
        orientation: NIfTI axis codes to store it in (None: drawn from :data:`ORIENTATIONS`).
        noise: add CT noise.

    Raises:
        InputError: a bad region, seed or shape.
    """
    shape = _check(shape, region, seed)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 12]).spawn(7)]
    r_trans, r_anat, r_frac, r_soft, r_bone, r_noise, r_meta = streams
    tr = sample_transitional(r_trans) if transitional is None else transitional
    anat = build_spine_anatomy(r_anat, shape, region, tr)
    in_view = _levels_in_view(anat)
    comps = (sample_compressions(r_frac, in_view) if compressions is None else list(compressions))
    by_level = {c.level: c for c in comps}
    unknown = [c.level for c in comps if c.level not in anat.frames]
    if unknown:
        raise InputError(f"cannot fracture {unknown}: not in this spine ({', '.join(tr.names)})")
    plans: dict[str, FracturePlan] = {}
    if region == "whole" and r_frac.random() < P_CERVICAL_TRAUMA:
        for lv in sample_fractured_levels(r_frac, positive=True):
            spec = next(s for s in anat.levels if s.name == lv)
            plans[lv] = plan_fracture(r_frac, build_vertebra(spec), anat.voxel)

    verts: dict[str, Vertebra] = {}
    for spec in anat.levels:
        if spec.name == "S":
            verts[spec.name] = build_sacrum(spec)
            continue
        plan = plans.get(spec.name)
        vert = build_vertebra(spec, plan.wedge_mm if plan else 0.0)
        if spec.name == "L5" and tr.sacralised_l5:
            vert = sacralise(vert)
        if spec.name in by_level:
            vert = compress(vert, by_level[spec.name])
        verts[spec.name] = vert

    img = paint_torso(anat, r_soft)
    paint_canal(img, anat)
    wedges = {lv: p.wedge_mm for lv, p in plans.items() if p.wedge_mm}
    wedges.update({c.level: top_loss_mm(verts[c.level], c) for c in comps})
    paint_discs(img, anat, wedges)

    canvas = BoneCanvas(anat)
    for spec in anat.levels:
        if spec.name in by_level:
            render_compressed(canvas, verts[spec.name], r_bone)
        else:
            render_vertebra(canvas, verts[spec.name], plans.get(spec.name), r_bone)
    render_ribs(canvas, r_bone, tr.n_thoracic)
    render_pelvis(canvas, r_bone)
    if region == "whole":
        render_skull_base(canvas, r_bone)
    canvas.composite(img)
    labels, regions = canvas.labels, canvas.regions
    del canvas
    if noise:
        img += r_noise.standard_normal(img.shape, dtype=np.float32) * np.float32(anat.noise_sd)
    image = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    del img

    if orientation is None:
        orientation = ORIENTATIONS[int(r_meta.integers(len(ORIENTATIONS)))]
    uid = uid_from_seed("spinereview-phantom-spine", seed)
    vol = Volume(image, anat.affine.copy(), {"seed": int(seed), "region": region,
                                             "study_uid": uid})
    lab = vol.with_array(labels, kind="labels")
    centroids = _body_centroids(labels, vol, regions, anat, verts)
    return SpineStudy(
        seed=int(seed), region=region, subject=f"{int(seed) % 1000:03d}", image=vol, labels=lab,
        centroids=centroids,
        compressions=tuple(c for c in comps if LEVEL_IDS[c.level] in centroids),
        trauma={lv: p.kind for lv, p in plans.items()}, transitional=tr,
        orientation=tuple(orientation),  # type: ignore[arg-type]
    )
