"""Soft tissues of the neck, chest, abdomen and pelvis around a whole or thoracolumbar spine.

Per-slice ellipses that follow the spine curve (body outline with subcutaneous fat, paraspinal
muscles, psoas, lungs, trachea, aorta, abdominal organs), painted a slab of slices at a time on
broadcast 1-D coordinates, each ellipse only on the rows and columns that can hold it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spine_core.phantom import sdf
from spine_core.phantom.anatomy import Anatomy
from spine_core.phantom.tissues import _blend, _col, _ellipse, _window

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _z(anat: Anatomy, name: str) -> float:
    return float(anat.frames[name].origin[2])


def _profiles(anat: Anatomy, rng: np.random.Generator, z: F64) -> dict[str, F64]:
    """Per-slice parameters (one value per slice) of every soft-tissue ellipse."""
    names = [s.name for s in anat.levels]
    last_t = next(n for n in reversed(names) if n.startswith("T"))
    z_c1, z_t1, z_t5, z_t10 = _z(anat, "C1"), _z(anat, "T1"), _z(anat, "T5"), _z(anat, "T10")
    z_tl, z_l3, z_s = _z(anat, last_t), _z(anat, "L3"), _z(anat, "S")
    spine = anat.spine_at_z(z)
    xs, ys = spine[:, 0], spine[:, 1]
    girth = float(rng.uniform(0.95, 1.2))
    depth = float(rng.uniform(0.95, 1.2))
    # Knots from the bottom (pelvis) up to the head, z ascending.
    kz = [z_s - 120.0, z_s, z_l3, z_tl, z_t5, z_t1 - 15.0, z_t1 + 25.0, z_c1]
    ra = np.interp(z, kz, np.array([175, 170, 150, 160, 165, 170, 70, 62]) * girth)
    rb = np.interp(z, kz, np.array([110, 115, 115, 120, 115, 100, 68, 66]) * depth)
    off = np.interp(z, kz, [20.0, 25.0, 30.0, 35.0, 35.0, 20.0, -8.0, -10.0]) * depth
    p: dict[str, F64] = {
        "z": z, "xs": xs, "ys": ys, "ra": ra, "rb": rb,
        "cx": xs + float(rng.uniform(-4, 4)), "cy": ys - off,
        # Paraspinal muscles beside the spinous processes (one block in the neck).
        "m_dx": np.interp(z, kz, [32, 34, 36, 30, 26, 24, 0, 0]),
        "m_ra": np.interp(z, kz, [26, 30, 34, 26, 22, 28, 44, 40]),
        "m_rb": np.interp(z, kz, [18, 20, 22, 20, 18, 20, 28, 26]),
        "m_dy": np.interp(z, kz, [38, 42, 44, 42, 40, 40, 46, 46]),
        "psoas": np.interp(z, [z_s - 40, z_s, z_l3, z_tl - 10, z_tl], [22, 24, 18, 6, 0]),
    }
    lung_top = z_t1 + float(rng.uniform(-5.0, 15.0))
    diaphragm = z_t10 + float(rng.uniform(-15.0, 15.0))
    up = np.clip((lung_top - z) / 50.0, 0.0, 1.0)
    down = np.clip((z - diaphragm) / 35.0, 0.0, 1.0)
    p["lung"] = np.sqrt(up * down)
    p["trachea"] = ((z < z_c1 - 50.0) & (z > z_t5)).astype(np.float64)
    p["aorta"] = ((z < z_t5 + 10.0) & (z > z_l3 - 30.0)).astype(np.float64)
    p["organs"] = ((z < diaphragm + 10.0) & (z > z_s - 60.0)).astype(np.float64)
    return p


def paint_torso(anat: Anatomy, rng: np.random.Generator, slab: int = 16) -> F32:
    """A float32 HU volume of the soft tissues (bones come later)."""
    z, y, x = anat.axis_coords()
    p = _profiles(anat, rng, z)
    img = np.empty(anat.shape, dtype=np.float32)
    xg = x.astype(np.float32)[None, None, :]
    yg = y.astype(np.float32)[None, :, None]
    for k0 in range(0, anat.shape[0], slab):
        k1 = min(k0 + slab, anat.shape[0])
        part = {key: _col(val[k0:k1]) for key, val in p.items()}
        img[k0:k1] = _paint_slab(anat, part, xg, yg)
    return img


def _paint(out: F32, anat: Anatomy, xg: F32, yg: F32, cx: F32, cy: F32, rx: F32, ry: F32,
           hu: float, weight: F32 | None = None) -> None:
    """Blend one per-slice ellipse of tissue ``hu`` into ``out`` (only where it can be)."""
    if float(np.max(rx)) <= 0.0 or float(np.max(ry)) <= 0.0:
        return
    rows, cols = _window(xg, yg, cx, cy, rx, ry)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return
    d = _ellipse(xg[..., cols], yg[:, rows], cx, cy, np.maximum(rx, 1e-3), np.maximum(ry, 1e-3))
    occ = sdf.occupancy(d, anat.voxel)
    if weight is not None:
        occ = occ * weight
    _blend(out, (slice(None), rows, cols), occ, hu)


def _paint_slab(anat: Anatomy, p: dict[str, F32], xg: F32, yg: F32) -> F32:
    hu = anat.hu
    f = np.float32
    xs, ys, ra, rb, cx, cy = p["xs"], p["ys"], p["ra"], p["rb"], p["cx"], p["cy"]
    out = np.full(np.broadcast_shapes(xs.shape, xg.shape, yg.shape), hu["air"], dtype=np.float32)
    skin = _ellipse(xg, yg, cx, cy, ra, rb)
    _blend(out, None, sdf.occupancy(skin, anat.voxel), hu["fat"])
    fat = f(hu["fat_thickness"]) * (1 + f(0.4) * np.clip((yg - cy) / rb, -1, 1))
    inner = _ellipse(xg, yg, cx, cy, ra - fat, rb - fat)
    _blend(out, None, sdf.occupancy(inner, anat.voxel), hu["soft"])

    organs = p["organs"]
    _paint(out, anat, xg, yg, cx, cy + f(10.0), (ra - f(hu["fat_thickness"]) - 25) * organs,
           (rb - f(hu["fat_thickness"]) - 25) * organs, hu["organ"])
    for side in (-1.0, 1.0):
        _paint(out, anat, xg, yg, xs + f(side) * p["m_dx"], ys + p["m_dy"], p["m_ra"], p["m_rb"],
               hu["muscle"])
        _paint(out, anat, xg, yg, xs + f(side) * (p["psoas"] + 18), ys - f(4.0),
               p["psoas"] * f(0.8), p["psoas"], hu["muscle"])
        lung = p["lung"]
        # Inside the rib cage (see trunk.rib_parts), not the body outline.
        _paint(out, anat, xg, yg, xs + f(side * 56.0), ys - f(44.0), f(50.0) * lung,
               f(62.0) * lung, hu["lung"], weight=(lung > 0.05).astype(np.float32))
    _paint(out, anat, xg, yg, xs, ys - f(34.0), f(9.0) * p["trachea"], f(8.0) * p["trachea"],
           hu["air"])
    _paint(out, anat, xg, yg, xs + f(22.0), ys - f(32.0), f(12.0) * p["aorta"],
           f(12.0) * p["aorta"], hu["blood"])
    return out
