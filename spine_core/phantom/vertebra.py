"""Vertebra shapes as unions of simple parts, in the vertebra's local frame (see ``anatomy``).

A :class:`Vertebra` is a list of named parts (body, pedicles, pillars, laminae, spinous and
transverse processes...), holes (foramina transversaria) cut from the parts marked ``holed``, and
the local bounding box of it all. Fractures refer to parts by name (``"pars_L"``, ``"lamina_R"``...)
so their cracks land on bone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spine_core.phantom import sdf
from spine_core.phantom.anatomy import LevelSpec, LocalGrid
from spine_core.phantom.sdf import Field

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Part:
    """One convex-ish bone part.

    kind: ``capsule`` (segment a–b swept by an ellipsoid of ``radii``; a == b: ellipsoid),
    ``box`` (centre a, half extents ``radii``, ``rounding``), ``stadium`` (2-D segment a–b in u/v of
    thickness ``radii[0]`` extruded about w = a[2] by ``radii[2]``), ``body`` (rounded rectangle
    a/b half-sizes ``radii[:2]`` extruded by ``radii[2]``; ``wedge`` mm of anterior height loss at
    the top), ``ring`` (elliptical ring: outer radii ``radii[:2]`` about ``a``, inner radii ``b[:2]``,
    half-height ``radii[2]``), ``cylinder`` (vertical elliptical hole, radii ``radii[:2]``).
    ``shear`` tilts the part's w by ``shear * (v - a[1])`` (facet joints slope down posteriorly);
    ``lean`` moves it forwards by ``lean`` mm per mm upwards (laminae lie like roof tiles);
    ``concave`` hollows a body's endplates by that many mm at their centre; ``core`` marks the
    large parts (bodies, dens, lateral masses) that hold marrow, thin parts are denser inside.
    """

    name: str
    kind: str
    a: Vec3
    b: Vec3 = (0.0, 0.0, 0.0)
    radii: Vec3 = (1.0, 1.0, 1.0)
    rounding: float = 0.0
    shear: float = 0.0
    holed: bool = False
    wedge: float = 0.0
    lean: float = 0.0
    concave: float = 0.0
    core: bool = False

    def bounds(self, margin: float, w_range: tuple[float, float] = (-60.0, 60.0)
               ) -> tuple[Vec3, Vec3]:
        """Local box holding the part, grown by ``margin`` mm."""
        a, b, r = np.array(self.a), np.array(self.b), np.array(self.radii)
        if self.kind in ("capsule", "stadium"):
            lo, hi = np.minimum(a, b) - r[0], np.maximum(a, b) + r[0]
            if self.kind == "capsule":
                lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
            else:
                lo[2], hi[2] = a[2] - r[2], a[2] + r[2]
        else:
            lo, hi = a - r, a + r
        if self.kind == "ring":
            lo[:2], hi[:2] = a[:2] - r[:2], a[:2] + r[:2]
        if self.kind == "cylinder":
            lo[2], hi[2] = w_range
        if self.lean:
            grow = abs(self.lean) * max(abs(lo[2] - a[2]), abs(hi[2] - a[2]))
            lo[1], hi[1] = lo[1] - grow, hi[1] + grow
        if self.shear:
            grow = abs(self.shear) * max(abs(lo[1] - a[1]), abs(hi[1] - a[1]))
            lo[2], hi[2] = lo[2] - grow, hi[2] + grow
        lo, hi = lo - margin, hi + margin
        return ((float(lo[0]), float(lo[1]), float(lo[2])),
                (float(hi[0]), float(hi[1]), float(hi[2])))

    def sdf(self, u: Field, v: Field, w: Field) -> Field:
        if self.lean:
            v = v + np.float32(self.lean) * (w - np.float32(self.a[2]))
        if self.shear:
            w = w + np.float32(self.shear) * (v - np.float32(self.a[1]))
        if self.kind == "capsule":
            return sdf.capsule(u, v, w, self.a, self.b, self.radii)
        if self.kind == "box":
            return sdf.box(u, v, w, self.a, self.radii, self.rounding)
        if self.kind == "stadium":
            d2 = sdf.segment_2d(u, v, self.a[:2], self.b[:2], self.radii[0])
            return sdf.extrude(d2, w, self.a[2], self.radii[2], self.rounding)
        if self.kind == "body":
            return self._body(u, v, w)
        if self.kind == "ring":
            outer = sdf.ellipse_2d(u, v, self.a[:2], self.radii[:2])
            inner = sdf.ellipse_2d(u, v, self.a[:2], self.b[:2])
            ring = np.maximum(outer, -inner)
            return sdf.extrude(ring, w, self.a[2], self.radii[2], self.rounding)
        if self.kind == "cylinder":
            return sdf.ellipse_2d(u, v, self.a[:2], self.radii[:2])
        raise ValueError(f"unknown part kind {self.kind}")

    def _body(self, u: Field, v: Field, w: Field) -> Field:
        ha, hb, hh = self.radii
        r = np.float32(min(self.rounding, ha, hb))
        qu = np.abs(u - np.float32(self.a[0])) - np.float32(ha) + r
        qv = np.abs(v - np.float32(self.a[1])) - np.float32(hb) + r
        d2 = (np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
              + np.minimum(np.maximum(qu, qv), 0) - r)
        centre: np.float32 | Field = np.float32(self.a[2])
        half: np.float32 | Field = np.float32(hh)
        if self.concave:
            du = (u - np.float32(self.a[0])) / np.float32(ha)
            dv = (v - np.float32(self.a[1])) / np.float32(hb)
            half = half - np.float32(self.concave) * np.clip(1 - du * du - dv * dv, 0, 1)
        if self.wedge:
            # Top endplate lowered towards the front: 0 at the back, ``wedge`` mm at the front.
            t = np.clip((np.float32(self.a[1] + hb) - v) / np.float32(2 * hb), 0, 1)
            loss = np.float32(self.wedge) * t
            centre, half = centre - loss / 2, half - loss / 2
        return sdf.extrude(d2, w, centre, half, 1.2)

    def top_at(self, v: Field) -> Field:
        """Height of the (possibly wedged) top endplate at ``v`` (body parts only)."""
        hb = self.radii[1]
        t = np.clip((np.float32(self.a[1] + hb) - v) / np.float32(2 * hb), 0, 1)
        return np.float32(self.a[2] + self.radii[2]) - np.float32(self.wedge) * t


@dataclass(frozen=True)
class Vertebra:
    spec: LevelSpec
    parts: tuple[Part, ...]
    holes: tuple[Part, ...] = ()
    bounds: tuple[Vec3, Vec3] = ((0, 0, 0), (0, 0, 0))  # local (min, max) corners
    extras: dict[str, float] = field(default_factory=dict)  # e.g. C2's dens_radius

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"{self.spec.name} has no part '{name}'")

    def sdf(self, grid: LocalGrid, displace: Displacement | None = None
            ) -> tuple[Field, Field]:
        """Signed distance on ``grid`` of the whole bone and of its marrow-holding core parts.

        Exact within ~3 mm of the surfaces, capped further away; each part is evaluated on the
        voxels of its own bounding box only.
        """
        shift = 0.0 if displace is None else float(np.linalg.norm(displace.offset))
        margin = 3.0 + shift
        cap = np.float32(margin + 1.0)
        u, v, w = grid.u, grid.v, grid.w
        if displace is not None:
            u, v, w = displace.apply(u, v, w)
        out = np.full(grid.shape, cap, dtype=np.float32)
        core = np.full(grid.shape, cap, dtype=np.float32)
        holed = np.full(grid.shape, cap, dtype=np.float32) if self.holes else out
        for p in self.parts:
            rs = grid.sub(*p.bounds(margin))
            if rs is None:
                continue
            d = p.sdf(u[rs], v[rs], w[rs])
            target = holed[rs] if p.holed else out[rs]
            np.minimum(target, d, out=target)
            if p.core:
                np.minimum(core[rs], d, out=core[rs])
        if self.holes:
            w_range = (self.bounds[0][2], self.bounds[1][2])
            for hole in self.holes:
                rs = grid.sub(*hole.bounds(margin, w_range))
                if rs is None:
                    continue
                target = holed[rs]
                np.maximum(target, -hole.sdf(u[rs], v[rs], w[rs]), out=target)
            np.minimum(out, holed, out=out)
        return out, core


@dataclass(frozen=True)
class Displacement:
    """Moves the bone beyond a plane (within an ellipsoid of ``radii`` about ``centre``) by
    ``offset`` mm: a displaced fragment."""

    centre: Vec3
    normal: Vec3
    radii: Vec3
    offset: Vec3

    def apply(self, u: Field, v: Field, w: Field) -> tuple[Field, Field, Field]:
        c = [np.float32(x) for x in self.centre]
        n = [np.float32(x) for x in self.normal]
        du, dv, dw = u - c[0], v - c[1], w - c[2]
        side = (du * n[0] + dv * n[1] + dw * n[2]) > 0
        r = [np.float32(x) for x in self.radii]
        inside = (du / r[0]) ** 2 + (dv / r[1]) ** 2 + (dw / r[2]) ** 2 < 1
        moved = (side & inside).astype(np.float32)
        o = [np.float32(x) for x in self.offset]
        return u - moved * o[0], v - moved * o[1], w - moved * o[2]


def _mirror(p: Part) -> Part:
    """The same part on the patient's right (u -> -u), named ``*_R``."""
    return replace(p, name=p.name[:-2] + "_R", a=(-p.a[0], p.a[1], p.a[2]),
                   b=(-p.b[0], p.b[1], p.b[2]))


def _bilateral(*left: Part) -> list[Part]:
    out: list[Part] = []
    for p in left:
        out += [p, _mirror(p)]
    return out


def _spinous(s: LevelSpec, base: Vec3, radii: Vec3, tip: Vec3) -> list[Part]:
    """Spinous process from ``base`` sloping down by the level's angle; the last third thickens
    into one tubercle or, when bifid, two (``tip`` = (offset, radius, vertical radius))."""
    ang = np.deg2rad(s.spinous_drop_deg)
    end = np.array([0.0, base[1] + s.spinous_len * float(np.cos(ang)),
                    base[2] - s.spinous_len * float(np.sin(ang))])
    start = np.asarray(base) + 0.65 * (end - np.asarray(base))
    shaft_end = start + 0.15 * (end - np.asarray(base)) if s.bifid else end
    parts = [Part("spinous", "capsule", base, tuple(shaft_end), radii)]
    if s.bifid:
        parts += _bilateral(Part("spinous_tip_L", "capsule", (tip[0], start[1], start[2]),
                                 (tip[0], end[1], end[2]), (tip[1], tip[1], tip[2])))
    else:
        parts.append(Part("spinous_tip", "capsule", tuple(start), tuple(end),
                          (tip[1], tip[1], tip[2])))
    return parts


def _atlas(s: LevelSpec) -> Vertebra:
    """C1: a ring (anterior arch, lateral masses, posterior arch), no body."""
    k = s.canal_depth / 24.0  # scale
    ring_c = (0.0, 8.4 * k, 0.0)
    parts = [
        Part("ring", "ring", ring_c, (15.7 * k, 15.7 * k, 0.0), (21.0 * k, 20.7 * k, 4.0 * k),
             rounding=1.5 * k),
        Part("anterior_tubercle", "capsule", (0.0, -11.5 * k, 0.0), (0.0, -11.5 * k, 0.0),
             (5.0 * k, 2.8 * k, 5.2 * k)),
        Part("posterior_tubercle", "capsule", (0.0, 28.8 * k, -0.5 * k), (0.0, 28.8 * k, -0.5 * k),
             (4.5 * k, 3.2 * k, 4.6 * k)),
        *_bilateral(
            Part("lateral_mass_L", "capsule", (14.8 * k, 2.5 * k, 0.0), (14.8 * k, 2.5 * k, 0.0),
                 (6.5 * k, 9.0 * k, 7.0 * k), core=True),
            Part("tp_L", "capsule", (18.0 * k, 3.0 * k, 0.0), (s.tp_reach, 4.0 * k, -1.0 * k),
                 (3.5 * k, 4.8 * k, 3.8 * k), holed=True),
            Part("tp_tip_L", "capsule", (s.tp_reach - 3.0 * k, 4.0 * k, -1.0 * k),
                 (s.tp_reach, 4.0 * k, -1.0 * k), (4.0 * k, 4.6 * k, 4.2 * k)),
        ),
    ]
    holes = tuple(_bilateral(Part("foramen_L", "cylinder", (22.5 * k, 3.5 * k, 0.0),
                                  radii=(2.6 * k, 2.9 * k, 1.0))))
    r = s.tp_reach + 6
    return Vertebra(s, tuple(parts), holes, ((-r, -18.0 * k, -10.0 * k), (r, 36.0 * k, 10.0 * k)))


def _axis(s: LevelSpec) -> Vertebra:
    """C2: tall body, dens projecting up into C1's ring, big bifid spinous process."""
    a, b, h, cw, cd = s.a, s.b, s.h, s.canal_half_width, s.canal_depth
    r_dens = 0.56 * a
    parts = [
        Part("body", "body", (0.0, 0.0, 0.0), radii=(a, b, h), rounding=3.5, core=True),
        Part("anterior_lip", "capsule", (0.0, -b + 1.5, -h + 1.0), (0.0, -b + 1.5, -h + 1.0),
             (0.6 * a, 2.5, 2.5)),
        Part("dens", "capsule", (0.0, -1.0, h - 2.0), (0.0, -1.0, h + s.dens - r_dens),
             (r_dens, 1.05 * r_dens, r_dens), core=True),
        Part("lamina_C", "stadium", (-2.5, b + cd + 3.0, -3.0), (2.5, b + cd + 3.0, 0.0),
             (3.2, 0.0, 5.5), rounding=1.5, lean=0.5),
        *_bilateral(
            Part("superior_facet_L", "capsule", (a + 2.5, 0.5, h - 2.5), (a + 2.5, 0.5, h - 2.5),
                 (6.0, 8.0, 3.8), core=True),
            Part("pars_L", "capsule", (a - 1.0, b - 2.0, 1.0), (cw + 3.5, b + 8.5, -2.5),
                 (3.2, 3.5, 4.5)),
            Part("pillar_L", "box", (cw + 4.0, b + 9.0, -h + 4.0), radii=(4.5, 5.0, 5.5),
                 rounding=3.0, shear=0.7),
            Part("lamina_L", "stadium", (cw + 2.0, b + 11.0, -3.0), (2.5, b + cd + 3.0, 0.0),
                 (3.0, 0.0, 5.5), rounding=1.5, lean=0.5),
            Part("tp_L", "capsule", (a + 1.0, 1.0, h - 8.0), (s.tp_reach, 3.0, h - 9.0),
                 (2.5, 3.2, 3.2), holed=True),
        ),
        *_spinous(s, (0.0, b + cd + 3.0, -3.0), (3.4, 3.6, 5.0), (3.6, 3.6, 5.2)),
    ]
    holes = tuple(_bilateral(Part("foramen_L", "cylinder", (a + 5.0, 1.8, 0.0),
                                  radii=(2.3, 2.5, 1.0))))
    r = s.tp_reach + 6
    post = b + cd + 6 + s.spinous_len
    return Vertebra(s, tuple(parts), holes,
                    ((-r, -b - 5, -h - 6 - s.spinous_len * 0.5), (r, post, h + s.dens + 4)),
                    {"dens_radius": r_dens})


def _subaxial(s: LevelSpec) -> Vertebra:
    """C3–C7 and thoracic levels."""
    a, b, h, cw, cd = s.a, s.b, s.h, s.canal_half_width, s.canal_depth
    thoracic = s.kind == "thoracic"
    pillar_h = h + s.disc_below / 2 - 0.8
    shear = 0.35 if thoracic else 0.85
    lean = 0.3 if thoracic else 0.55
    lam_w = -1.5
    parts = [
        Part("body", "body", (0.0, 0.0, 0.0), radii=(a, b, h),
             rounding=(0.6 * b if thoracic else 0.55 * b), concave=0.8, core=True),
        Part("anterior_lip", "capsule", (0.0, -b + 1.4, -h + 0.6), (0.0, -b + 1.4, -h + 0.6),
             (0.5 * a, 1.6, 1.6)),
        Part("lamina_C", "stadium", (-2.5, b + cd + 2.3, lam_w), (2.5, b + cd + 2.3, lam_w),
             (3.0, 0.0, h - 0.8), rounding=1.0, lean=lean),
        *_bilateral(
            Part("pedicle_L", "capsule", (a - (3.0 if thoracic else 1.8), b - 2.0, 0.5),
                 (cw + 2.6, b + (7.0 if thoracic else 4.5), 0.5),
                 (2.4, 2.4, 4.0 if thoracic else 3.2)),
            Part("pillar_L", "box", (cw + 4.6, b + 7.0, -1.0),
                 radii=((3.8, 5.0, pillar_h) if thoracic else (4.6, 5.6, pillar_h)),
                 rounding=3.2, shear=shear),
            Part("lamina_L", "stadium", (cw + 2.5, b + 9.5, lam_w), (2.0, b + cd + 2.3, lam_w),
                 (2.2, 0.0, h - 0.8), rounding=1.0, lean=lean),
        ),
        *_spinous(s, (0.0, b + cd + 2.5, lam_w - 0.5),
                  (3.0, 3.2, 4.0) if not thoracic else (3.2, 3.6, 4.6),
                  (3.6, 2.6, 3.6) if s.bifid else (0.0, 3.8, 4.8)),
    ]
    if thoracic:
        parts += _bilateral(
            Part("tp_L", "capsule", (cw + 4.0, b + 8.0, 0.5), (s.tp_reach, b + 13.0, 1.0),
                 (3.6, 4.0, 4.4)),
            Part("tp_tip_L", "capsule", (s.tp_reach - 3.0, b + 12.5, 1.0),
                 (s.tp_reach, b + 13.0, 1.0), (4.3, 4.6, 4.8)),
        )
        holes: tuple[Part, ...] = ()
    else:
        parts += _bilateral(
            Part("uncinate_L", "capsule", (a - 1.3, 0.8, h - 0.5), (a - 1.3, 0.8, h - 0.5),
                 (1.7, 0.55 * b, 2.8)),
        )
        foramen = s.name != "C7"
        tip = (s.tp_reach, 0.5, -1.0)
        if foramen:  # C7 has no anterior root (or only a tiny one)
            parts += _bilateral(
                Part("tp_anterior_L", "capsule", (a - 1.0, -2.5, 0.0),
                     (tip[0] - 1.0, -1.6, tip[2]), (2.3, 2.4, 3.0), holed=True))
        parts += _bilateral(
            Part("tp_posterior_L", "capsule", (cw + 2.0, b + 3.0, 0.0), (tip[0], 2.0, tip[2]),
                 (2.4, 2.4, 3.0), holed=foramen),
            Part("tp_tip_L", "capsule", (tip[0] - 1.5, 0.2, tip[2]), tip, (2.7, 3.0, 3.2),
                 holed=foramen),
        )
        holes = (tuple(_bilateral(Part("foramen_L", "cylinder", (a + 6.0, 0.6, 0.0),
                                       radii=(2.7, 2.7, 1.0)))) if foramen else ())
    r = max(s.tp_reach + 6.0, cw + 12.0)
    ang = np.deg2rad(s.spinous_drop_deg)
    post = b + cd + 2 + s.spinous_len * float(np.cos(ang)) + 6
    drop = s.spinous_len * float(np.sin(ang)) + 7
    return Vertebra(s, tuple(parts), holes,
                    ((-r, -b - 4, -max(pillar_h, h) - drop), (r, post, pillar_h + 4)))


def build_vertebra(spec: LevelSpec, wedge_mm: float = 0.0) -> Vertebra:
    """The vertebra of ``spec``; ``wedge_mm`` lowers the front of the top endplate."""
    if spec.kind == "atlas":
        v = _atlas(spec)
    elif spec.kind == "axis":
        v = _axis(spec)
    else:
        v = _subaxial(spec)
    if wedge_mm:
        parts = tuple(replace(p, wedge=wedge_mm) if p.name == "body" else p for p in v.parts)
        v = Vertebra(v.spec, parts, v.holes, v.bounds, v.extras)
    return v
