"""Soft tissues around the spine: neck outline, fat, muscles, airway, lung apices, canal, discs.

Everything is painted into a float32 HU volume with partial-volume edges. The neck outline and
airway vary slice by slice along the spine curve (computed on broadcast 1-D coordinates); the
spinal canal and the discs are painted in the frames of their vertebrae, on the voxels of their
bounding boxes only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.phantom import sdf
from spine_core.phantom.anatomy import Anatomy, Frame, local_grid
from spine_core.phantom.vertebra import Part

F32 = npt.NDArray[np.float32]
F32S = F32 | np.float32  # an array, or one value for all voxels


def _blend(img: F32, region: tuple[slice, ...] | None, occ: npt.NDArray[np.floating[Any]],
           hu: float | F32) -> None:
    target = img if region is None else img[region]
    target += occ * (hu - target) if isinstance(hu, np.ndarray) else occ * (np.float32(hu) - target)


def _ellipse(x: F32, y: F32, cx: F32S, cy: F32S, rx: F32S, ry: F32S) -> F32:
    """Signed distance (approx.) to per-slice ellipses; inputs broadcast to (slices, rows, cols)."""
    px, py = (x - cx) / rx, (y - cy) / ry
    q = np.sqrt(px * px + py * py)
    grad = np.sqrt((px / rx) ** 2 + (py / ry) ** 2)
    return (q - 1) * q / np.maximum(grad, np.float32(1e-6))


def _col(a: npt.ArrayLike) -> F32:
    return np.asarray(a, dtype=np.float32)[:, None, None]


def paint_body(anat: Anatomy, rng: np.random.Generator, slab: int = 12) -> F32:
    """Air, the neck/shoulder outline with subcutaneous fat, muscles, airway and lung apices.

    Outlines are per-slice ellipses that follow the spine curve; the volume is painted a slab of
    slices at a time (keeps the working arrays in cache).
    """
    z, y, x = anat.axis_coords()
    spine = anat.spine_at_z(z)
    z_c1 = anat.frames["C1"].origin[2]
    t1 = anat.frames.get("T1")
    tn = (z_c1 - z) / ((z_c1 - t1.origin[2]) if t1 is not None else 130.0)  # 0 at C1, 1 at T1

    neck_a = float(rng.uniform(52.0, 64.0))
    neck_b = float(rng.uniform(60.0, 70.0))
    shoulder = 1.0 / (1.0 + np.exp(-(tn - float(rng.uniform(0.88, 1.05))) / 0.08))
    face = 1.0 / (1.0 + np.exp((tn - 0.12) / 0.06))
    p: dict[str, npt.NDArray[np.float64]] = {
        "xs": spine[:, 0],
        "ys": spine[:, 1],
        "ra": neck_a + 6.0 * face + 120.0 * shoulder,
        "rb": neck_b + 12.0 * face + 34.0 * shoulder,
        "cx": spine[:, 0] + float(rng.uniform(-3, 3)),
        "cy": spine[:, 1] + 10.0 - 12.0 * face + 10.0 * shoulder,
    }
    # Airway: pharynx above, larynx, then a round trachea; in front of the vertebral bodies.
    knots = np.array([-0.4, 0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 3.0])
    p["air_ru"] = np.interp(tn, knots, [9.0, 14.0, 13.0, 11.0, 8.0, 8.5, 9.5, 9.5])
    p["air_rv"] = np.interp(tn, knots, [5.0, 7.0, 8.0, 8.5, 6.0, 7.5, 8.0, 8.0])
    pre = np.interp(tn, [0.0, 0.35, 0.6, 0.75], [5.0, 6.0, 13.0, 15.0])  # prevertebral tissue
    body_b = np.interp(tn, [0.0, 0.2, 1.0], [8.0, 8.0, 8.5])
    p["air_y"] = spine[:, 1] - body_b - pre - p["air_rv"]
    p["air_on"] = (tn > -0.35).astype(np.float64)
    lung_top = (t1.origin[2] + float(rng.uniform(-8.0, 4.0))) if t1 is not None else None
    p["z"] = z

    img = np.empty(anat.shape, dtype=np.float32)
    xg = x.astype(np.float32)[None, None, :]
    yg = y.astype(np.float32)[None, :, None]
    for k0 in range(0, anat.shape[0], slab):
        k1 = min(k0 + slab, anat.shape[0])
        part = {key: _col(val[k0:k1]) for key, val in p.items()}
        img[k0:k1] = _paint_slab(anat, part, xg, yg, lung_top)
    return img


def _window(xg: F32, yg: F32, cx: F32, cy: F32, rx: F32 | float, ry: F32 | float,
            pad: float = 3.0) -> tuple[slice, slice]:
    """Rows and columns of the slab that can hold the per-slice ellipses (plus ``pad`` mm)."""
    rx, ry = np.broadcast_to(rx, cx.shape), np.broadcast_to(ry, cy.shape)
    x, y = xg.ravel(), yg.ravel()
    cols = np.flatnonzero((x >= (cx - rx).min() - pad) & (x <= (cx + rx).max() + pad))
    rows = np.flatnonzero((y >= (cy - ry).min() - pad) & (y <= (cy + ry).max() + pad))
    if cols.size == 0 or rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _paint_slab(anat: Anatomy, p: dict[str, F32], xg: F32, yg: F32,
                lung_top: float | None) -> F32:
    hu, vox = anat.hu, anat.voxel
    f = np.float32
    xs, ys, ra, rb = p["xs"], p["ys"], p["ra"], p["rb"]
    out = np.full(np.broadcast_shapes(xs.shape, xg.shape, yg.shape), hu["air"], dtype=np.float32)
    skin = _ellipse(xg, yg, p["cx"], p["cy"], ra, rb)
    _blend(out, None, sdf.occupancy(skin, vox), hu["fat"])
    # Fat is thicker at the back of the neck.
    fat = f(hu["fat_thickness"]) * (1 + f(0.5) * np.clip((yg - p["cy"]) / rb, -1, 1))
    inner = _ellipse(xg, yg, p["cx"], p["cy"], ra - fat, rb - fat)
    _blend(out, None, sdf.occupancy(inner, vox), hu["soft"])

    # Posterior neck muscles with a faint fat plane around them and a midline septum.
    mra = np.minimum(ra - f(hu["fat_thickness"]) - 4, f(44.0))
    rows, cols = _window(xg, yg, xs, ys + f(46.0), mra, 28.0)
    x, y, region = xg[..., cols], yg[:, rows], (slice(None), rows, cols)
    muscle = _ellipse(x, y, xs, ys + f(46.0), mra, f(28.0))
    _blend(out, region, sdf.occupancy(muscle, vox), hu["muscle"])
    _blend(out, region, np.clip(1 - np.abs(muscle) / f(0.8), 0, 1) * f(0.5), hu["fat"])
    septum = (np.abs(x - xs) < 1.0) & (y > ys + f(38.0)) & (muscle < 0)
    _blend(out, region, septum.astype(np.float32) * f(0.5), hu["fat"])
    for side in (-1.0, 1.0):  # sternocleidomastoid muscles
        cx = xs + f(side) * (ra * f(0.62))
        rows, cols = _window(xg, yg, cx, ys - f(14.0), 10.0, 6.5)
        scm = _ellipse(xg[..., cols], yg[:, rows], cx, ys - f(14.0), f(10.0), f(6.5))
        _blend(out, (slice(None), rows, cols), sdf.occupancy(scm, vox), hu["muscle"])

    rows, cols = _window(xg, yg, xs, p["air_y"], p["air_ru"], p["air_rv"])
    airway = _ellipse(xg[..., cols], yg[:, rows], xs, p["air_y"], p["air_ru"], p["air_rv"])
    _blend(out, (slice(None), rows, cols), sdf.occupancy(airway, vox) * p["air_on"], hu["air"])

    if lung_top is not None and float(p["z"].min()) < lung_top + 2.0:
        # Lung apices rise to about T1, either side of the trachea.
        lz = (p["z"] - f(lung_top - 80.0)) / f(80.0)
        for side in (-1.0, 1.0):
            lung = np.sqrt(((xg - xs - f(side * 52.0)) / f(36.0)) ** 2
                           + ((yg - ys - f(6.0)) / f(46.0)) ** 2 + lz * lz) - 1
            lung = np.maximum(lung * f(36.0), inner + f(10.0))  # inside the chest wall
            _blend(out, None, sdf.occupancy(lung, vox), hu["lung"])
    return out


def paint_canal(img: F32, anat: Anatomy) -> None:
    """CSF-filled spinal canal with the cord inside, level by level (continuous across discs)."""
    vox = anat.voxel
    for spec in anat.levels:
        f = anat.frames[spec.name]
        if spec.kind == "atlas":
            k = spec.canal_depth / 24.0
            c, r = (0.0, 14.0 * k), (13.0 * k, 10.0 * k)
            lo, hi = (-16 * k, 0.0, -14.0), (16 * k, 28 * k, 60.0)
            w_lo, w_hi = -14.0, 60.0
        else:
            c = (0.0, spec.b + spec.canal_depth / 2)
            r = (spec.canal_half_width - 0.3, spec.canal_depth / 2)
            w_lo, w_hi = -(spec.h + spec.disc_below + 2.0), spec.h + 2.0
            lo = (-r[0] - 2, c[1] - r[1] - 2, w_lo)
            hi = (r[0] + 2, c[1] + r[1] + 2, w_hi)
        g = local_grid(anat, f, lo, hi)
        if g is None:
            continue
        cut = np.maximum(g.w - np.float32(w_hi), np.float32(w_lo) - g.w)
        canal = np.maximum(sdf.ellipse_2d(g.u, g.v, c, r), cut)
        _blend(img, g.slices, sdf.occupancy(canal, vox), anat.hu["csf"])
        cord = np.maximum(sdf.ellipse_2d(g.u, g.v, c, (0.45 * r[0], 0.6 * r[1])), cut)
        _blend(img, g.slices, sdf.occupancy(cord, vox), anat.hu["cord"])


def _disc_frame(upper: Frame, lower: Frame, h_up: float, h_low: float) -> tuple[Frame, float]:
    top = lower.to_lps((0.0, 0.0, h_low))
    bottom = upper.to_lps((0.0, 0.0, -h_up))
    w = bottom - top
    gap = float(np.linalg.norm(w))
    w /= gap
    u = (upper.u + lower.u) / 2
    u -= np.dot(u, w) * w
    u /= np.linalg.norm(u)
    return Frame((top + bottom) / 2, u, np.cross(w, u), w), gap


def paint_discs(img: F32, anat: Anatomy, wedges: dict[str, float]) -> None:
    """Intervertebral discs between consecutive bodies from C2/C3 down."""
    vox = anat.voxel
    specs = anat.levels
    for up, low in zip(specs[1:-1], specs[2:]):
        fu, fl = anat.frames[up.name], anat.frames[low.name]
        frame, gap = _disc_frame(fu, fl, up.h, low.h)
        a = (up.a + low.a) / 2 - 0.4
        b = (up.b + low.b) / 2 - 0.4
        # Cover the wedge-shaped gap of a curved spine, and a compressed endplate below.
        half = gap / 2 + 2.0 + 0.1 * b + wedges.get(low.name, 0.0)
        centre = (0.0, 0.0, wedges.get(low.name, 0.0) * -0.5)
        disc = Part("disc", "body", centre, radii=(a, b, half), rounding=3.0)
        g = local_grid(anat, frame, (-a - 2, -b - 2, -half - 2), (a + 2, b + 2, half + 2))
        if g is None:
            continue
        _blend(img, g.slices, sdf.occupancy(disc.sdf(g.u, g.v, g.w), vox), anat.hu["disc"])
