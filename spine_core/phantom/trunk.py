"""Bones of the trunk below the neck: the sacrum, a sacralised L5, ribs, sternum and pelvis.

Shapes are :class:`~spine_core.phantom.vertebra.Part` unions in a level's local frame (``u``
left, ``v`` posterior, ``w`` superior; see :mod:`spine_core.phantom.anatomy`). The sacrum is
labelled like a vertebra (VerSe 26); ribs, sternum, hip bones and femora are bone without a
label, as in VerSe's masks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spine_core.phantom import sdf
from spine_core.phantom.anatomy import Anatomy, Frame, LevelSpec, local_grid
from spine_core.phantom.bones import BoneCanvas
from spine_core.phantom.vertebra import Part, Vec3, Vertebra, _bilateral


def _bounds(parts: list[Part], margin: float = 2.0) -> tuple[Vec3, Vec3]:
    lo = np.min([p.bounds(margin)[0] for p in parts], axis=0)
    hi = np.max([p.bounds(margin)[1] for p in parts], axis=0)
    return ((float(lo[0]), float(lo[1]), float(lo[2])), (float(hi[0]), float(hi[1]), float(hi[2])))


def build_sacrum(s: LevelSpec) -> Vertebra:
    """The sacrum: S1's body, the fused segments below curving backwards, alae, dorsal roof."""
    a, b, h, cw, cd = s.a, s.b, s.h, s.canal_half_width, s.canal_depth
    k = a / 25.0
    chain = [(0.0, 0.0, -h + 2.0), (0.0, 4 * k, -30 * k), (0.0, 11 * k, -55 * k),
             (0.0, 21 * k, -76 * k), (0.0, 33 * k, -92 * k)]
    radii = [(0.78 * a, 0.8 * b, 9 * k), (0.62 * a, 0.68 * b, 8 * k), (0.46 * a, 0.55 * b, 7 * k),
             (0.3 * a, 0.45 * b, 6 * k)]
    parts = [Part("body", "body", (0.0, 0.0, 0.0), radii=(a, b, h), rounding=0.55 * b,
                  concave=0.6, core=True)]
    parts += [Part(f"segment{i + 2}", "capsule", p, q, r, core=i < 2)
              for i, (p, q, r) in enumerate(zip(chain[:-1], chain[1:], radii))]
    parts += _bilateral(
        Part("ala_L", "capsule", (0.55 * a, 2.0, -2.0), (a + 20 * k, 6 * k, -7 * k),
             (12 * k, 13 * k, 11 * k), core=True),
        Part("lateral_mass_L", "capsule", (a + 17 * k, 7 * k, -10 * k), (0.65 * a, 14 * k, -48 * k),
             (10 * k, 11 * k, 12 * k), core=True),
        Part("pedicle_L", "capsule", (cw + 2.0, b - 1.0, 0.0), (cw + 3.0, b + cd, -4.0),
             (4.0, 4.0, 7.0)),
        Part("superior_facet_L", "capsule", (cw + 5.0, b + 7.0, h - 1.0), (cw + 5.0, b + 9.0, h + 2),
             (5.0, 5.5, 5.0)),
    )
    parts.append(Part("roof", "capsule", (0.0, b + cd + 4.0, -3.0), (0.0, b + cd + 13 * k, -62 * k),
                      (cw + 5.0, 4.5, 9.0)))
    return Vertebra(s, tuple(parts), (), _bounds(parts))


def sacralise(vert: Vertebra) -> Vertebra:
    """An L5 whose transverse processes grow into wings reaching down to the sacral alae."""
    s = vert.spec
    down = s.h + s.disc_below + 6.0
    wings = _bilateral(Part("wing_L", "capsule", (s.a - 1.0, 4.0, 0.0),
                            (s.tp_reach, 8.0, -down), (8.0, 9.0, 9.0)))
    parts = [p for p in vert.parts if not p.name.startswith(("tp_L", "tp_R", "tp_tip"))] + wings
    return Vertebra(s, tuple(parts), vert.holes, _bounds(parts + list(vert.parts)), vert.extras)


def rib_parts(spec: LevelSpec, index: int, n_thoracic: int, side: float) -> list[Part]:
    """Rib ``index`` (1 = first) on one side (+1 left, -1 right) in its vertebra's frame.

    The rib leaves the body, passes the transverse process, then follows an elliptical arc round
    the chest, descending as it goes; ribs 1–7 reach the front, 8–10 less far, the last two float.
    """
    a, b, tp = spec.a, spec.b, spec.tp_reach
    t = min(index - 1, 7) / 7.0
    wr = 55.0 + 65.0 * float(np.sin(np.pi / 2 * t))
    dr = 40.0 + 40.0 * float(np.sin(np.pi / 2 * t))
    from_last = n_thoracic - index
    end = 150.0 if index <= 7 else 130.0
    if from_last == 1:
        end = 95.0
    elif from_last == 0:
        end = 65.0 if n_thoracic < 13 else 45.0
    drop = 18.0 + 42.0 * float(np.sin(np.pi * min(index, 12) / 13.0))
    cv = b + 22.0 - dr
    phi0 = float(np.arcsin(min((tp + 4.0) / wr, 0.95)))
    phis = np.linspace(phi0, np.deg2rad(end), 6)
    span = max(phis[-1] - phis[0], 1e-6)
    arc = [(wr * float(np.sin(p)), cv + dr * float(np.cos(p)),
            -drop * float(((p - phis[0]) / span) ** 1.2)) for p in phis]
    pts: list[Vec3] = [(a + 3.0, b + 2.0, 2.0), (tp, b + 13.0, 1.0), *arc]
    pts = [(side * u, v, w) for u, v, w in pts]
    name = f"rib{index}_{'L' if side > 0 else 'R'}"
    return [Part(f"{name}_{i}", "capsule", p, q, (3.0, 3.0, 5.5))
            for i, (p, q) in enumerate(zip(pts[:-1], pts[1:]))]


def _render_parts(canvas: BoneCanvas, rng: np.random.Generator, frame: Frame,
                  parts: list[Part], cortex_mm: float) -> None:
    """Unlabelled bone made of ``parts`` (in ``frame``), each evaluated on its own box only."""
    anat: Anatomy = canvas.anat
    lo, hi = _bounds(parts, 3.0)
    g = local_grid(anat, frame, lo, hi)
    if g is None:
        return
    d = np.full(g.shape, np.float32(4.0), dtype=np.float32)
    for p in parts:
        rs = g.sub(*p.bounds(3.0))
        if rs is not None:
            np.minimum(d[rs], p.sdf(g.u[rs], g.v[rs], g.w[rs]), out=d[rs])
    canvas.add(g, d, canvas._bone_hu(d, rng, cortex_mm), 0)


def render_ribs(canvas: BoneCanvas, rng: np.random.Generator, n_thoracic: int) -> None:
    """Every rib of the thoracic levels in the field of view, and the sternum (bone, label 0)."""
    anat: Anatomy = canvas.anat
    cortex_mm = max(1.3, anat.voxel)
    fronts: dict[int, Vec3] = {}
    for spec in anat.levels:
        if not spec.name.startswith("T"):
            continue
        index = int(spec.name[1:])
        for side in (1.0, -1.0):
            parts = rib_parts(spec, index, n_thoracic, side)
            if side > 0:
                fronts[index] = tuple(anat.frames[spec.name].to_lps(parts[-1].b))
            _render_parts(canvas, rng, anat.frames[spec.name], parts, cortex_mm)
    if 2 in fronts and 7 in fronts:
        # The sternum: manubrium at the second ribs' ends, body down to the seventh's.
        top, bottom = np.asarray(fronts[2]), np.asarray(fronts[7])
        x_mid = float(anat.frames["T4"].origin[0])
        upright = Frame(np.array([x_mid, min(top[1], bottom[1]) + 2.0, top[2] + 25.0]),
                        np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                        np.array([0.0, 0.0, 1.0]))
        length = float(top[2] + 25.0 - bottom[2])
        parts = [Part("manubrium", "capsule", (0.0, 0.0, 0.0), (0.0, 0.0, -20.0), (20.0, 6.0, 12.0)),
                 Part("sternum", "capsule", (0.0, 0.0, -20.0), (0.0, 4.0, -length), (13.0, 5.5, 8.0))]
        _render_parts(canvas, rng, upright, parts, cortex_mm)


def pelvis_parts(s: LevelSpec, side: float) -> list[Part]:
    """One hip bone and the top of its femur, in an upright frame at the sacrum's centre."""
    k = s.a / 25.0

    def pt(u: float, v: float, w: float) -> Vec3:
        return (side * u * k, v * k, w * k)

    si, psis, crest, asis = pt(42, 15, -25), pt(38, 35, 8), pt(88, 8, 35), pt(105, -45, 2)
    acet, tuber, pubis = pt(88, -45, -88), pt(62, 2, -140), pt(10, -92, -112)
    parts = [Part("crest0", "capsule", psis, crest, (7.0, 7.0, 7.0)),
             Part("crest1", "capsule", crest, asis, (7.0, 7.0, 7.0)),
             Part("ilium", "capsule", si, acet, (13.0, 13.0, 13.0)),
             Part("asis_acet", "capsule", asis, acet, (8.0, 8.0, 8.0)),
             Part("ischium", "capsule", acet, tuber, (9.0, 9.0, 9.0)),
             Part("ramus_sup", "capsule", acet, pubis, (7.0, 7.0, 7.0)),
             Part("ramus_inf", "capsule", tuber, pubis, (6.0, 6.0, 6.0))]
    head = pt(93, -45, -91)
    neck = pt(120, -40, -118)
    parts += [Part("femoral_head", "capsule", head, head, (22.0, 22.0, 22.0)),
              Part("femoral_neck", "capsule", head, neck, (14.0, 14.0, 14.0)),
              Part("femur", "capsule", neck, pt(132, -35, -260), (15.0, 15.0, 15.0))]
    return parts


def _iliac_wings(canvas: BoneCanvas, rng: np.random.Generator, frame: Frame, k: float) -> None:
    """Both iliac wings: a thin shell of one bowl-shaped ellipsoid, cut to the wings' extent."""
    anat: Anatomy = canvas.anat
    lo, hi = (-125 * k, -60 * k, -75 * k), (125 * k, 45 * k, 42 * k)
    g = local_grid(anat, frame, lo, hi)
    if g is None:
        return
    centre = (0.0, -15 * k, 25 * k)
    thick = 7.0
    outer = sdf.ellipsoid(g.u, g.v, g.w, centre, (100 * k, 62 * k, 62 * k))
    inner = sdf.ellipsoid(g.u, g.v, g.w, centre, (100 * k - thick, 62 * k - thick, 62 * k - thick))
    shell = np.maximum(outer, -inner)
    # Keep the lateral walls between the sacroiliac joints and the anterior spines, below the crest.
    keep = sdf.box(g.u, g.v, g.w, (0.0, -8 * k, -12 * k), (130 * k, 44 * k, 48 * k), 4.0)
    middle = sdf.box(g.u, g.v, g.w, (0.0, 0.0, 0.0), (40 * k, 200.0, 200.0))
    d = np.maximum(np.maximum(shell, keep), -middle)
    canvas.add(g, d, canvas._bone_hu(d, rng, max(1.5, anat.voxel)), 0)


def render_pelvis(canvas: BoneCanvas, rng: np.random.Generator) -> None:
    """Both hip bones and femoral heads, where the field of view reaches them (label 0)."""
    anat: Anatomy = canvas.anat
    spec = next(s for s in anat.levels if s.name == "S")
    upright = Frame(anat.frames["S"].origin, np.array([1.0, 0.0, 0.0]),
                    np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    _iliac_wings(canvas, rng, upright, spec.a / 25.0)
    for side in (1.0, -1.0):
        _render_parts(canvas, rng, upright, pelvis_parts(spec, side), max(1.5, anat.voxel))


def with_body(vert: Vertebra, body: Part) -> Vertebra:
    """``vert`` with its body part replaced (e.g. by a compressed one)."""
    parts = tuple(body if p.name == "body" else p for p in vert.parts)
    return replace(vert, parts=parts)
