"""Bones of the trunk below the neck: the sacrum, a sacralised L5, and the ribs.

Shapes are :class:`~spine_core.phantom.vertebra.Part` unions in a level's local frame (``u``
left, ``v`` posterior, ``w`` superior; see :mod:`spine_core.phantom.anatomy`). The sacrum is
labelled like a vertebra (VerSe 26); ribs are bone without a label, as in VerSe's masks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spine_core.phantom.anatomy import Anatomy, LevelSpec, local_grid
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
    wr = 55.0 + 75.0 * float(np.sin(np.pi / 2 * t))
    dr = 40.0 + 55.0 * float(np.sin(np.pi / 2 * t))
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


def render_ribs(canvas: BoneCanvas, rng: np.random.Generator, n_thoracic: int) -> None:
    """Every rib of the thoracic levels in the field of view (bone, label 0)."""
    anat: Anatomy = canvas.anat
    cortex_mm = max(1.3, anat.voxel)
    for spec in anat.levels:
        if not spec.name.startswith("T"):
            continue
        index = int(spec.name[1:])
        for side in (1.0, -1.0):
            parts = rib_parts(spec, index, n_thoracic, side)
            lo, hi = _bounds(parts, 3.0)
            g = local_grid(anat, anat.frames[spec.name], lo, hi)
            if g is None:
                continue
            d = np.full(g.shape, np.float32(4.0), dtype=np.float32)
            for p in parts:
                rs = g.sub(*p.bounds(3.0))
                if rs is not None:
                    np.minimum(d[rs], p.sdf(g.u[rs], g.v[rs], g.w[rs]), out=d[rs])
            canvas.add(g, d, canvas._bone_hu(d, rng, cortex_mm), 0)


def with_body(vert: Vertebra, body: Part) -> Vertebra:
    """``vert`` with its body part replaced (e.g. by a compressed one)."""
    parts = tuple(body if p.name == "body" else p for p in vert.parts)
    return replace(vert, parts=parts)
