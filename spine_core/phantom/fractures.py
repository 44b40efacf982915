"""Which levels break, how, and the cracks that make the break visible.

Levels follow the RSNA 2022 cervical fracture data: about half the studies are positive and a
level is fractured in roughly C1 7 %, C2 14 %, C3 4 %, C4 5 %, C5 8 %, C6 13 %, C7 19 % of all
studies (several levels per positive study are common). Each fractured level gets a kind typical
of it (odontoid and hangman's fractures at C2, Jefferson's at C1, wedge compressions, teardrops,
laminar, pillar and spinous-process fractures below) made of one or more :class:`Crack` (a lucent
wavy gap through the bone, cortex included), optional anterior height loss and an optional
small displacement of a fragment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spine_core.phantom.sdf import Field
from spine_core.phantom.vertebra import Displacement, Part, Vertebra

Vec3 = tuple[float, float, float]

#: Fraction of all studies with a fracture at each level (RSNA 2022 training set, rounded).
LEVEL_PREVALENCE: dict[str, float] = {
    "C1": 0.07, "C2": 0.14, "C3": 0.04, "C4": 0.05, "C5": 0.08, "C6": 0.13, "C7": 0.19,
}
POSITIVE_RATE = 0.5
# Per-level probabilities given a positive study are drawn independently and redrawn when none
# comes up; 0.6 makes the resulting marginals match LEVEL_PREVALENCE (solved numerically).
_CONDITIONAL_SCALE = 0.6

_KINDS: dict[str, tuple[tuple[str, float], ...]] = {
    "C1": (("jefferson", 0.6), ("posterior_arch", 0.4)),
    "C2": (("dens", 0.5), ("hangman", 0.2), ("body", 0.3)),
    "C7": (("compression", 0.3), ("spinous", 0.25), ("lamina", 0.15), ("body", 0.1),
           ("pillar", 0.1), ("teardrop", 0.1)),
    "sub": (("compression", 0.35), ("body", 0.15), ("teardrop", 0.15), ("lamina", 0.15),
            ("pillar", 0.1), ("spinous", 0.1)),
    "T": (("compression", 1.0),),
}


@dataclass(frozen=True)
class Crack:
    """A lucent gap of half-width ``half_gap`` about a wavy plane through ``centre`` (local mm),
    limited to a sphere of ``radius`` and to the bone of ``part`` (None: the whole vertebra)."""

    centre: Vec3
    normal: Vec3
    radius: float
    half_gap: float
    wave: float
    wavelength: float
    part: str | None = None

    def field(self, u: Field, v: Field, w: Field, vertebra: Vertebra, voxel: float) -> Field:
        """Fraction (0–1) of each voxel lying in the gap."""
        f = np.float32
        c, n = self.centre, np.asarray(self.normal, dtype=np.float64)
        du, dv, dw = u - f(c[0]), v - f(c[1]), w - f(c[2])
        # In-plane direction for the waviness.
        helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(n, helper)
        e1 /= np.linalg.norm(e1)
        along = du * f(e1[0]) + dv * f(e1[1]) + dw * f(e1[2])
        dist = du * f(n[0]) + dv * f(n[1]) + dw * f(n[2])
        k = f(2 * np.pi / self.wavelength)
        wave = np.sin(along * k) + f(0.45) * np.sin(along * k * f(2.7) + f(1.3))
        dist = dist + f(self.wave) * wave
        gap = np.clip((f(self.half_gap) - np.abs(dist)) / f(voxel) + f(0.5), 0, 1)
        r = np.sqrt(du * du + dv * dv + dw * dw)
        gap *= np.clip((f(self.radius) - r) / f(voxel) + f(0.5), 0, 1)
        if self.part is not None:
            gap *= vertebra.part(self.part).sdf(u, v, w) <= f(0.8)
        return gap


@dataclass(frozen=True)
class FracturePlan:
    """How one level is broken."""

    level: str
    kind: str
    cracks: tuple[Crack, ...]
    wedge_mm: float = 0.0
    displacement: Displacement | None = None


def sample_fractured_levels(rng: np.random.Generator, positive: bool | None = None) -> list[str]:
    """Fractured cervical levels of one study (empty for a negative study).

    ``positive`` forces a positive (levels drawn as in positive RSNA studies) or negative study;
    None draws that too (half the studies).
    """
    if positive is None:
        positive = bool(rng.random() < POSITIVE_RATE)
    if not positive:
        return []
    names = list(LEVEL_PREVALENCE)
    q = np.array([LEVEL_PREVALENCE[n] for n in names]) / POSITIVE_RATE * _CONDITIONAL_SCALE
    while True:
        hit = rng.random(len(names)) < q
        if hit.any():
            return [n for n, h in zip(names, hit) if h]


def _unit(*x: float) -> Vec3:
    a = np.asarray(x, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return (float(a[0]), float(a[1]), float(a[2]))


def _gap(rng: np.random.Generator, voxel: float) -> float:
    return max(0.6, 0.75 * voxel) + float(rng.uniform(0.0, 0.45))


def _crack(rng: np.random.Generator, voxel: float, centre: Vec3, normal: Vec3, radius: float,
           part: str | None) -> Crack:
    jitter = rng.normal(0.0, 0.12, 3)
    n = _unit(*(np.asarray(normal) + jitter))
    return Crack(centre, n, radius, _gap(rng, voxel), float(rng.uniform(0.15, 0.45)),
                 float(rng.uniform(7.0, 14.0)), part)


def _across(rng: np.random.Generator, voxel: float, part: Part, t: float, radius: float) -> Crack:
    """A crack across an elongated part at fraction ``t`` of its axis."""
    a, b = np.asarray(part.a), np.asarray(part.b)
    if part.kind == "stadium":
        b = np.array([b[0], b[1], a[2]])
    centre = a + t * (b - a)
    return _crack(rng, voxel, (float(centre[0]), float(centre[1]), float(centre[2])), _unit(*(b - a)),
                  radius, part.name)


def _ring_point(vert: Vertebra, u: float, front: bool) -> tuple[Vec3, Vec3]:
    """Point on the mid-line of C1's ring at ``u`` (front or back arch) and the ring's tangent."""
    ring = vert.part("ring")
    cu, cv = ring.a[0], ring.a[1]
    ru = (ring.radii[0] + ring.b[0]) / 2
    rv = (ring.radii[1] + ring.b[1]) / 2
    theta = float(np.arccos(np.clip((u - cu) / ru, -1, 1)))
    theta = -theta if front else theta
    point = (cu + ru * np.cos(theta), cv + rv * np.sin(theta), 0.0)
    tangent = _unit(-ru * np.sin(theta), rv * np.cos(theta), 0.0)
    return (float(point[0]), float(point[1]), 0.0), tangent


def _choose_kind(rng: np.random.Generator, level: str) -> str:
    key = level if level in _KINDS else ("T" if level.startswith("T") else "sub")
    kinds, weights = zip(*_KINDS[key])
    p = np.asarray(weights) / np.sum(weights)
    return str(kinds[int(rng.choice(len(kinds), p=p))])


def plan_fracture(rng: np.random.Generator, vert: Vertebra, voxel: float) -> FracturePlan:
    """Draw a kind for ``vert``'s level and place its cracks on that vertebra's bone."""
    s = vert.spec
    kind = _choose_kind(rng, s.name)
    side = 1.0 if rng.random() < 0.5 else -1.0
    sfx = "_L" if side > 0 else "_R"
    opp = "_R" if side > 0 else "_L"
    a, b, h = s.a, s.b, s.h
    cracks: list[Crack] = []
    wedge = 0.0
    disp: Displacement | None = None

    if kind == "jefferson" or kind == "posterior_arch":
        k = s.canal_depth / 24.0
        if kind == "jefferson":
            p, tangent = _ring_point(vert, side * float(rng.uniform(4.0, 8.0)) * k, front=True)
            cracks.append(_crack(rng, voxel, p, tangent, 5.5 * k, "ring"))
            sides = [-side]
        else:
            sides = [1.0, -1.0]
        for sd in sides:
            p, tangent = _ring_point(vert, sd * float(rng.uniform(8.0, 12.0)) * k, front=False)
            cracks.append(_crack(rng, voxel, p, tangent, 5.5 * k, "ring"))
    elif kind == "dens":
        r = float(vert.extras["dens_radius"])
        centre = (0.0, -1.0, h + float(rng.uniform(0.0, 2.5)))
        cracks.append(_crack(rng, voxel, centre, (float(rng.uniform(-0.2, 0.2)),
                                                  float(rng.uniform(-0.35, 0.35)), 1.0),
                             2.2 * r, "dens"))
        shift = float(rng.uniform(0.0, 2.0)) * (1 if rng.random() < 0.6 else -1)
        disp = Displacement(centre, cracks[0].normal, (r + 2.5, r + 2.5, s.dens + 4.0),
                            (0.0, shift, 0.0))
    elif kind == "hangman":
        for sfx_i in ("_L", "_R"):
            cracks.append(_across(rng, voxel, vert.part("pars" + sfx_i),
                                  float(rng.uniform(0.4, 0.65)), 5.5))
    elif kind == "compression":
        wedge = float(rng.uniform(0.2, 0.45)) * 2 * h
        centre = (float(rng.uniform(-a / 3, a / 3)), -b + 2.0, h - wedge - 1.5)
        cracks.append(_crack(rng, voxel, centre, (0.0, 0.75, 1.0), 0.8 * a, "body"))
    elif kind == "body":
        upper = s.name == "C2"
        centre = (float(rng.uniform(-a / 3, a / 3)), float(rng.uniform(-b / 3, b / 4)),
                  (h - 4.0) if upper else float(rng.uniform(-h / 3, h / 3)))
        normal = (0.0, -0.5, 1.0) if upper else (1.0, float(rng.uniform(-0.5, 0.5)),
                                                 float(rng.uniform(-0.3, 0.3)))
        cracks.append(_crack(rng, voxel, centre, normal, 1.3 * max(a, b, h), "body"))
    elif kind == "teardrop":
        centre = (0.0, -b + 3.5, -h + 3.5)
        cracks.append(_crack(rng, voxel, centre, (0.0, -1.0, -1.1), 1.1 * a, "body"))
        n = cracks[0].normal
        shift = float(rng.uniform(0.8, 2.0))
        disp = Displacement(centre, n, (a + 2, b, h), (0.0, shift * n[1], shift * n[2]))
    elif kind == "lamina":
        cracks.append(_across(rng, voxel, vert.part("lamina" + sfx),
                              float(rng.uniform(0.3, 0.6)), 5.0))
    elif kind == "pillar":
        part = vert.part("pillar" + opp)
        cracks.append(_crack(rng, voxel, part.a, (float(rng.uniform(-0.3, 0.3)), 1.0,
                                                  float(rng.uniform(-0.5, 0.5))), 6.5, part.name))
    elif kind == "spinous":
        part = vert.part("spinous")
        t = float(rng.uniform(0.4, 0.65))
        crack = _across(rng, voxel, part, t, 5.5)
        cracks.append(crack)
        length = float(np.linalg.norm(np.subtract(part.b, part.a)))
        shift = float(rng.uniform(0.6, 1.6))
        disp = Displacement(crack.centre, crack.normal, (8.0, length, length),
                            (0.0, 0.3 * shift, -shift))
    else:  # pragma: no cover - _KINDS lists every kind handled above
        raise ValueError(kind)
    return FracturePlan(s.name, kind, tuple(cracks), wedge, disp)
