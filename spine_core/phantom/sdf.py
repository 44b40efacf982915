"""Signed distance fields of the few shapes bones are built from (numpy, float32).

Every function takes local coordinates ``u, v, w`` in mm (arrays that broadcast against each
other) and returns an (approximate) signed distance in mm: negative inside, positive outside.
Ellipsoidal shapes use the first-order estimate ``f / |grad f|``, exact on the surface and good to
a fraction of a millimetre within the few millimetres that matter (cortical shell, partial volume).

Shapes combine with :func:`union` (minimum) and :func:`subtract` (maximum with the negated hole).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Field = npt.NDArray[np.float32]
Vec3 = Sequence[float]

_EPS = np.float32(1e-6)


def _f32(x: float | np.floating[Any]) -> np.float32:
    return np.float32(x)


def capsule(u: Field, v: Field, w: Field, a: Vec3, b: Vec3, radii: Vec3) -> Field:
    """Segment ``a``–``b`` swept by an axis-aligned ellipsoid of semi-axes ``radii`` (u, v, w).

    With ``a == b`` this is an ellipsoid centred at ``a``.
    """
    ru, rv, rw = (_f32(r) for r in radii)
    # Work in the space where the sweeping ellipsoid is a unit sphere.
    pu, pv, pw = (u - _f32(a[0])) / ru, (v - _f32(a[1])) / rv, (w - _f32(a[2])) / rw
    du, dv, dw = (b[0] - a[0]) / ru, (b[1] - a[1]) / rv, (b[2] - a[2]) / rw
    length2 = du * du + dv * dv + dw * dw
    if length2 > 0:
        t = np.clip((pu * _f32(du) + pv * _f32(dv) + pw * _f32(dw)) / _f32(length2), 0, 1)
        qu, qv, qw = pu - t * _f32(du), pv - t * _f32(dv), pw - t * _f32(dw)
    else:
        qu, qv, qw = pu, pv, pw
    q = np.sqrt(qu * qu + qv * qv + qw * qw)
    grad = np.sqrt((qu / ru) ** 2 + (qv / rv) ** 2 + (qw / rw) ** 2)
    return ((q - 1) * q / np.maximum(grad, _EPS)).astype(np.float32, copy=False)


def ellipsoid(u: Field, v: Field, w: Field, centre: Vec3, radii: Vec3) -> Field:
    """Axis-aligned ellipsoid."""
    return capsule(u, v, w, centre, centre, radii)


def ellipse_2d(u: Field, v: Field, centre: Sequence[float], radii: Sequence[float]) -> Field:
    """Signed distance to an axis-aligned ellipse in the (u, v) plane."""
    ru, rv = _f32(radii[0]), _f32(radii[1])
    pu, pv = (u - _f32(centre[0])) / ru, (v - _f32(centre[1])) / rv
    q = np.sqrt(pu * pu + pv * pv)
    grad = np.sqrt((pu / ru) ** 2 + (pv / rv) ** 2)
    return ((q - 1) * q / np.maximum(grad, _EPS)).astype(np.float32, copy=False)


def segment_2d(u: Field, v: Field, a: Sequence[float], b: Sequence[float], radius: float) -> Field:
    """Signed distance to a 2-D stadium (segment ``a``–``b`` thickened by ``radius``)."""
    du, dv = b[0] - a[0], b[1] - a[1]
    pu, pv = u - _f32(a[0]), v - _f32(a[1])
    length2 = du * du + dv * dv
    t = np.clip((pu * _f32(du) + pv * _f32(dv)) / _f32(max(length2, 1e-9)), 0, 1)
    qu, qv = pu - t * _f32(du), pv - t * _f32(dv)
    return np.sqrt(qu * qu + qv * qv) - _f32(radius)


def extrude(d2: Field, w: Field, w_centre: float | np.float32 | Field,
            half_height: float | np.float32 | Field, rounding: float = 0.0) -> Field:
    """Extrude a 2-D distance along ``w`` between ``w_centre ± half_height``, edges rounded."""
    r = _f32(rounding)
    dz = np.abs(w - w_centre) - half_height + r
    d2 = d2 + r
    outside = np.sqrt(np.maximum(d2, 0) ** 2 + np.maximum(dz, 0) ** 2)
    return (outside + np.minimum(np.maximum(d2, dz), 0) - r).astype(np.float32, copy=False)


def box(u: Field, v: Field, w: Field, centre: Vec3, half: Vec3, rounding: float = 0.0) -> Field:
    """Axis-aligned box with rounded edges (exact)."""
    r = _f32(rounding)
    qu = np.abs(u - _f32(centre[0])) - _f32(half[0]) + r
    qv = np.abs(v - _f32(centre[1])) - _f32(half[1]) + r
    qw = np.abs(w - _f32(centre[2])) - _f32(half[2]) + r
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2 + np.maximum(qw, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(qu, qv), qw), 0)
    return (outside + inside - r).astype(np.float32, copy=False)


def union(*fields: Field) -> Field:
    out = fields[0]
    for f in fields[1:]:
        out = np.minimum(out, f)
    return out


def subtract(shape: Field, hole: Field) -> Field:
    return np.maximum(shape, -hole)


def occupancy(d: Field, voxel: float) -> Field:
    """Fraction of a voxel of size ``voxel`` mm inside the shape (linear partial-volume ramp)."""
    return np.clip(_f32(0.5) - d / _f32(voxel), 0, 1)
