"""Osteoporotic compression fractures of the thoracolumbar spine, graded by Genant.

A study has 0–3 fractured levels, drawn with the distribution seen in osteoporosis: the
thoracolumbar junction (T12, L1) most often, then the mid-thoracic spine (T7, T8), rarely above
T4. Each gets a Genant grade (mild 40 %, moderate 40 %, severe 20 %), a height loss inside that
grade's band (kept 0.5–1 % away from the bounds so a measurement decides it) and a morphology:
wedge (anterior height lost, 60 %), biconcave (middle, both endplates, 25 %) or crush (the whole
body, 15 %).

Heights are those of the vertebral body on its mid-sagittal plane, endplate to endplate:
anterior and posterior :data:`MEASURE_INSET` mm inside the cortex, middle at the centre. The
reference is the body's intact height ``2 h`` (for wedge and biconcave deformities the posterior
height, which stays intact; for a crush, the height the level should have). A fractured body's
planned height loss is exactly ``1 - min(anterior, middle, posterior) / 2 h`` at those points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from spine_core.genant import GenantGrade, Morphology, check_grade, grade_from_height_loss
from spine_core.phantom.anatomy import local_grid
from spine_core.phantom.bones import BoneCanvas
from spine_core.phantom.trunk import with_body
from spine_core.phantom.vertebra import Vertebra

#: Relative frequency of a fracture at each level (osteoporotic fractures, rounded).
LEVEL_WEIGHTS: dict[str, float] = {
    "T4": 1.0, "T5": 2.0, "T6": 4.0, "T7": 6.0, "T8": 6.0, "T9": 4.0, "T10": 3.0, "T11": 5.0,
    "T12": 10.0, "T13": 5.0, "L1": 10.0, "L2": 6.0, "L3": 4.0, "L4": 3.0, "L5": 2.0, "L6": 1.0,
}
#: Probability of 0, 1, 2, 3 fractured levels in a study.
COUNT_P: tuple[float, ...] = (0.45, 0.30, 0.15, 0.10)
GRADE_P: dict[int, float] = {1: 0.4, 2: 0.4, 3: 0.2}
MORPHOLOGY_P: dict[Morphology, float] = {
    Morphology.WEDGE: 0.6, Morphology.BICONCAVE: 0.25, Morphology.CRUSH: 0.15,
}
#: Height-loss bands drawn for each grade (inside Genant's, away from the bounds).
LOSS_BANDS: dict[int, tuple[float, float]] = {1: (0.205, 0.245), 2: (0.26, 0.39), 3: (0.41, 0.55)}
#: How far inside the anterior and posterior cortex heights are measured (mm).
MEASURE_INSET = 1.5


@dataclass(frozen=True)
class Compression:
    """One fractured level: its grade, morphology and the height it lost (fraction)."""

    level: str
    grade: GenantGrade
    morphology: Morphology
    height_loss: float

    def __post_init__(self) -> None:
        check_grade(self.grade, self.morphology)
        if grade_from_height_loss(self.height_loss) != self.grade:
            raise ValueError(f"{self.level}: height loss {self.height_loss:.3f} is not grade "
                             f"{self.grade}")


def sample_compressions(rng: np.random.Generator, levels: Sequence[str],
                        count: int | None = None) -> list[Compression]:
    """Draw the compression fractures of one study among ``levels`` (those in the field of view)."""
    eligible = [lv for lv in levels if lv in LEVEL_WEIGHTS]
    n = int(rng.choice(len(COUNT_P), p=COUNT_P)) if count is None else int(count)
    n = min(n, len(eligible))
    if n == 0:
        return []
    w = np.array([LEVEL_WEIGHTS[lv] for lv in eligible])
    chosen = rng.choice(len(eligible), size=n, replace=False, p=w / w.sum())
    out = []
    for i in sorted(int(c) for c in chosen):
        out.append(draw_compression(rng, eligible[i]))
    return out


def draw_compression(rng: np.random.Generator, level: str, grade: int | None = None,
                     morphology: Morphology | str | None = None) -> Compression:
    """One compression at ``level``; grade and morphology drawn unless given."""
    if grade is None:
        grade = int(rng.choice(list(GRADE_P), p=list(GRADE_P.values())))
    if morphology is None:
        morphs = list(MORPHOLOGY_P)
        morphology = morphs[int(rng.choice(len(morphs), p=list(MORPHOLOGY_P.values())))]
    check_grade(grade, morphology)
    lo, hi = LOSS_BANDS[grade]
    return Compression(level, grade, Morphology(morphology), round(float(rng.uniform(lo, hi)), 4))


def compress(vert: Vertebra, c: Compression) -> Vertebra:
    """``vert`` with its body deformed as ``c`` says (the inferior endplate stays in place)."""
    body = vert.part("body")
    hb, hh = body.radii[1], body.radii[2]
    lost = c.height_loss * 2.0 * hh
    if c.morphology is Morphology.WEDGE:
        # The wedge grows linearly from the back; scale it so the anterior measuring point loses
        # exactly ``lost``. Flat endplates (no concavity) keep the heights exact.
        new = replace(body, wedge=lost / (1.0 - MEASURE_INSET / (2.0 * hb)), concave=0.0)
    elif c.morphology is Morphology.BICONCAVE:
        new = replace(body, concave=lost / 2.0)
    else:
        new = replace(body, a=(body.a[0], body.a[1], body.a[2] - lost / 2.0),
                      radii=(body.radii[0], body.radii[1], hh - lost / 2.0), concave=0.0)
    return with_body(vert, new)


def top_loss_mm(vert: Vertebra, c: Compression) -> float:
    """How far the superior endplate came down at its lowest point (for the disc above)."""
    body = vert.part("body")
    lost = c.height_loss * 2.0 * body.radii[2]
    if c.morphology is Morphology.WEDGE:
        return lost / (1.0 - MEASURE_INSET / (2.0 * body.radii[1]))
    return lost / 2.0 if c.morphology is Morphology.BICONCAVE else lost


def render_compressed(canvas: BoneCanvas, vert: Vertebra, rng: np.random.Generator) -> None:
    """Draw a compressed vertebra: as any other, plus the dense band of impacted trabeculae
    (a few mm under the superior endplate, denser the more height was lost)."""
    anat = canvas.anat
    g = local_grid(anat, anat.frames[vert.spec.name], *vert.bounds)
    if g is None:
        return
    d, core = vert.sdf(g)
    cortex_mm = max(anat.hu["cortex_mm"], 0.9 * anat.voxel)
    bone_hu = canvas._bone_hu(d, rng, cortex_mm, core)
    body = vert.part("body")
    below_top = body.sdf(g.u, g.v, g.w + np.float32(4.0)) > 0
    band = below_top & (body.sdf(g.u, g.v, g.w) < -cortex_mm) & (d < -cortex_mm)
    bone_hu += band.astype(np.float32) * np.float32(260.0)
    canvas.add(g, d, bone_hu, vert.spec.level_id)
