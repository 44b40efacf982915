"""Anatomy of the thoracolumbar and whole spine: levels (with transitional anatomy), curve, grid.

Builds the same :class:`~spine_core.phantom.anatomy.Anatomy` the cervical generator uses, so the
vertebra, canal and disc painters work unchanged, for a spine from C1 to the sacrum:

* **Levels.** C1–C7, T1–T12, L1–L5 and the sacrum (``S``), with transitional anatomy drawn at
  about the rates seen in CT series: 11 rib-bearing vertebrae (no T12) in ~5 %, 13 (a ``T13``)
  in ~6 %, six lumbar vertebrae (``L6``) in ~7 % and a sacralised L5 in ~8 % of studies.
* **Curve.** A sagittal profile through knots (cervical lordosis, thoracic kyphosis, lumbar
  lordosis, the sacrum sweeping backwards) and, in some studies, a mild scoliosis.
* **Grid.** ``region`` "whole" covers the skull base to below the sacrum; "thoracolumbar" starts
  between T3 and T10 and ends below the sacrum. Slice step and pixel size follow from the field of
  view and the grid shape; the grid is an axial LPS stack as in :mod:`spine_core.phantom.anatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from spine_core.io.dicom_write import ct_affine
from spine_core.phantom.anatomy import BASE_SPECS, Anatomy, Frame, LevelSpec, _level_arclengths

#: Regions the generators cover.
REGIONS: tuple[str, ...] = ("cervical", "thoracolumbar", "whole")

#: Rates of transitional anatomy (fraction of studies).
P_ELEVEN_RIBS = 0.05
P_THIRTEEN_RIBS = 0.06
P_L6 = 0.07
P_SACRALISED_L5 = 0.08


@dataclass(frozen=True)
class Transitional:
    """The segmentation of one spine: rib-bearing and lumbar vertebra counts, sacralised L5."""

    n_thoracic: int = 12
    n_lumbar: int = 5
    sacralised_l5: bool = False

    def __post_init__(self) -> None:
        if self.n_thoracic not in (11, 12, 13) or self.n_lumbar not in (5, 6):
            raise ValueError(f"unsupported spine: {self.n_thoracic} thoracic, {self.n_lumbar} lumbar")
        if self.sacralised_l5 and self.n_lumbar != 5:
            raise ValueError("a sacralised L5 needs five lumbar vertebrae")

    @property
    def names(self) -> tuple[str, ...]:
        """Level names from C1 to the sacrum (T13 after T12, L6 after L5)."""
        return (*(f"C{i}" for i in range(1, 8)), *(f"T{i}" for i in range(1, self.n_thoracic + 1)),
                *(f"L{i}" for i in range(1, self.n_lumbar + 1)), "S")

    @property
    def findings(self) -> tuple[str, ...]:
        """What is unusual, as short words ('11 ribs', 'T13', 'L6', 'sacralised L5')."""
        out = []
        if self.n_thoracic == 11:
            out.append("11 ribs")
        if self.n_thoracic == 13:
            out.append("T13")
        if self.n_lumbar == 6:
            out.append("L6")
        if self.sacralised_l5:
            out.append("sacralised L5")
        return tuple(out)


def sample_transitional(rng: np.random.Generator) -> Transitional:
    """Draw a spine's segmentation at the rates of this module's ``P_*`` constants."""
    r = float(rng.random())
    n_t = 11 if r < P_ELEVEN_RIBS else (13 if r < P_ELEVEN_RIBS + P_THIRTEEN_RIBS else 12)
    r = float(rng.random())
    n_l = 6 if r < P_L6 else 5
    sacral = n_l == 5 and r >= 1.0 - P_SACRALISED_L5
    return Transitional(n_t, n_l, sacral)


def _thoracic(i: int) -> LevelSpec:
    if i <= 12:
        return BASE_SPECS[6 + i]
    t12 = BASE_SPECS[18]
    return LevelSpec("T13", t12.a + 0.6, t12.b + 0.4, t12.h + 0.3, t12.disc_below + 0.5,
                     t12.canal_half_width, t12.canal_depth, t12.spinous_len, t12.spinous_drop_deg,
                     False, t12.tp_reach)


def _lumbar(i: int) -> LevelSpec:
    f = min(i - 1, 4) / 4.0
    return LevelSpec(
        f"L{i}", a=21.0 + 4.0 * f, b=15.0 + 2.0 * f, h=12.5 + 1.0 * f - 0.6 * max(0.0, f - 0.75),
        disc_below=9.0 + 2.0 * f, canal_half_width=11.0 + 1.0 * f, canal_depth=15.0 + 1.5 * f,
        spinous_len=31.0 - 4.0 * f, spinous_drop_deg=14.0 - 6.0 * f, bifid=False,
        tp_reach=38.0 + 8.0 * np.sin(np.pi * min(f * 1.3, 1.0)),
    )


SACRUM = LevelSpec("S", a=25.0, b=17.5, h=13.0, disc_below=0.0, canal_half_width=12.0,
                   canal_depth=12.0, spinous_len=0.0, spinous_drop_deg=0.0, bifid=False,
                   tp_reach=52.0)


def level_specs(tr: Transitional) -> list[LevelSpec]:
    """Specs of every level of ``tr`` from C1 to the sacrum (unscaled adult means)."""
    specs = list(BASE_SPECS[:7])
    specs += [_thoracic(i) for i in range(1, tr.n_thoracic + 1)]
    specs += [_lumbar(i) for i in range(1, tr.n_lumbar + 1)]
    if tr.n_lumbar == 6:  # L6 takes the size of an L5; the real L5 is a little smaller
        specs[-1] = LevelSpec("L6", *[getattr(specs[-2], k) for k in
                                      ("a", "b", "h", "disc_below", "canal_half_width",
                                       "canal_depth", "spinous_len", "spinous_drop_deg",
                                       "bifid", "tp_reach")])
    if tr.sacralised_l5:
        from dataclasses import replace

        specs[-1] = replace(specs[-1], disc_below=3.5, tp_reach=specs[-1].tp_reach + 8.0)
    return [*specs, SACRUM]


def _profile(rng: np.random.Generator, names: list[str], s_levels: list[float], scale: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Depths d (mm below C1), and x (left), y (posterior) of the body-centre curve at each d."""
    at = dict(zip(names, s_levels))
    last_t = next(n for n in reversed(names) if n.startswith("T"))
    last_l = next(n for n in reversed(names) if n.startswith("L"))
    params = {
        "lordosis_c": float(rng.uniform(-2.0, 12.0)) * scale,
        "kyphosis": float(rng.uniform(12.0, 36.0)) * scale,
        "lordosis_l": float(rng.uniform(10.0, 28.0)) * scale,
        "sacral": float(rng.uniform(12.0, 22.0)) * scale,
        "scoliosis": float(rng.uniform(6.0, 16.0) * rng.choice([-1.0, 1.0])) if rng.random() < 0.3
        else float(rng.uniform(-3.0, 3.0)),
    }
    knots_d = [-80.0, 0.0, at["C4"], at["T1"], at["T7"], at[last_t], at["L3"], at[last_l],
               at["S"], at["S"] + 60.0, at["S"] + 160.0]
    knots_y = [-4.0, 0.0, -params["lordosis_c"], 0.0, params["kyphosis"], 0.0,
               -params["lordosis_l"], -params["lordosis_l"] * 0.3,
               params["sacral"] - params["lordosis_l"] * 0.2,
               params["sacral"] + 30.0, params["sacral"] + 70.0]
    d = np.linspace(-80.0, at["S"] + 160.0, 3000)
    y = PchipInterpolator(knots_d, knots_y)(d)
    t0, t1 = at["T1"], at[last_l]
    phase = np.clip((d - t0) / (t1 - t0), 0.0, 1.0)
    x = params["scoliosis"] * np.sin(np.pi * phase) + 0.15 * params["scoliosis"] * np.sin(
        3 * np.pi * phase)
    return d, x, y, params


def build_spine_anatomy(rng: np.random.Generator, shape: tuple[int, int, int], region: str,
                        tr: Transitional) -> Anatomy:
    """Draw one study's thoracolumbar or whole-spine anatomy and grid (see the module docstring)."""
    if region not in ("thoracolumbar", "whole"):
        raise ValueError(f"region {region!r}: use 'thoracolumbar' or 'whole'")
    n0, n1, n2 = shape
    scale = float(rng.uniform(0.92, 1.08))
    levels = [spec.scaled(scale) for spec in level_specs(tr)]
    names = [s.name for s in levels]
    s_levels = _level_arclengths(levels)
    # The sacrum's centre (its S1 body) sits one disc below the last lumbar body.
    d, x, y, _ = _profile(rng, names, s_levels, scale)
    x0, y0, z_c1 = (float(rng.uniform(-6.0, 6.0)), float(rng.uniform(15.0, 45.0)),
                    float(rng.uniform(-100.0, 100.0)))
    x, y, z = x + x0, y + y0, z_c1 - d
    steps = np.sqrt(np.diff(d) ** 2 + np.diff(x) ** 2 + np.diff(y) ** 2)
    s = np.concatenate([[0.0], np.cumsum(steps)])
    s -= np.interp(0.0, d, s)
    pts = np.stack([x, y, z], axis=1)

    def centre_of(name: str) -> np.ndarray:
        si = s_levels[names.index(name)]
        return np.array([np.interp(si, s, pts[:, k]) for k in range(3)])

    z_sacrum = float(centre_of("S")[2])
    if region == "whole":
        top = z_c1 + float(rng.uniform(15.0, 40.0))
    else:
        start = f"T{int(rng.integers(3, 11))}"
        top = float(centre_of(start)[2]) + float(rng.uniform(5.0, 25.0))
    bottom = z_sacrum - float(rng.uniform(55.0, 110.0))
    dz = round(max((top - bottom) / n0, 0.5), 4)
    fov = float(rng.uniform(300.0, 420.0)) if region == "whole" else float(rng.uniform(320.0, 440.0))
    dxy = round(fov / max(n1, n2), 4)
    spacing = (dz, dxy, dxy)
    origin = (-dxy * (n2 - 1) / 2, -dxy * (n1 - 1) / 2 + float(rng.uniform(-10.0, 10.0)),
              top - dz * (n0 - 1))
    affine = ct_affine(shape, spacing, origin=origin)

    frames: dict[str, Frame] = {}
    rotation0 = float(rng.uniform(-3.0, 3.0))
    slope = np.gradient(x, s)
    for spec, s_i in zip(levels, s_levels):
        centre = np.array([np.interp(s_i, s, pts[:, k]) for k in range(3)])
        tangent = np.array([np.interp(s_i + 0.5, s, pts[:, k]) - np.interp(s_i - 0.5, s, pts[:, k])
                            for k in range(3)])
        w_ax = -tangent / np.linalg.norm(tangent)
        u_ax = np.array([1.0, 0.0, 0.0]) - w_ax[0] * w_ax
        u_ax /= np.linalg.norm(u_ax)
        v_ax = np.cross(w_ax, u_ax)
        # Scoliotic curves rotate the vertebrae towards their convexity.
        twist = 25.0 * float(np.interp(s_i, s, slope))
        psi = np.deg2rad(rotation0 + twist + float(rng.uniform(-2.0, 2.0)))
        u_r = np.cos(psi) * u_ax + np.sin(psi) * v_ax
        v_r = -np.sin(psi) * u_ax + np.cos(psi) * v_ax
        frames[spec.name] = Frame(centre, u_r, v_r, w_ax)

    cortex = float(rng.uniform(1000.0, 1400.0))
    hu = {
        "air": -1000.0,
        "fat": float(rng.uniform(-115.0, -85.0)),
        "soft": float(rng.uniform(35.0, 48.0)),
        "muscle": float(rng.uniform(48.0, 62.0)),
        "csf": float(rng.uniform(5.0, 15.0)),
        "cord": float(rng.uniform(28.0, 38.0)),
        "disc": float(rng.uniform(72.0, 95.0)),
        "cortex": cortex,
        "cancellous": float(rng.uniform(150.0, 330.0)),
        "lung": float(rng.uniform(-880.0, -820.0)),
        "hematoma": float(rng.uniform(45.0, 70.0)),
        "fat_thickness": float(rng.uniform(6.0, 28.0)),
        "cortex_mm": float(rng.uniform(0.9, 1.4)),
        "organ": float(rng.uniform(45.0, 60.0)),
        "blood": float(rng.uniform(35.0, 50.0)),
    }
    return Anatomy(
        shape=shape, spacing=spacing, affine=affine, levels=tuple(levels), frames=frames,
        curve_depth=d, curve_points=pts, hu=hu, noise_sd=float(rng.uniform(10.0, 30.0)),
        skull_top_margin=top - z_c1,
    )
