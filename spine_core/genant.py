"""Genant's semiquantitative grading of vertebral compression fractures (pure, no I/O).

A vertebra's grade follows from its height loss: the fraction by which its most reduced height
(anterior, middle or posterior) falls short of the height it should have (its own posterior
height for a wedge or biconcave deformity, the neighbours' height for a crush)::

    grade 0  normal          height loss < 20 %
    grade 1  mild            20–25 %
    grade 2  moderate        25–40 %
    grade 3  severe          over 40 %

The morphology says where the height is lost: ``wedge`` (anterior), ``biconcave`` (middle, both
endplates) or ``crush`` (the whole body, posterior included). A grade-0 level has no morphology.
(Genant HK et al., J Bone Miner Res 1993;8:1137–48.)
"""

from __future__ import annotations

import math
from enum import Enum

from spine_core.errors import InputError

#: Lower bound of the height loss of grades 1, 2 and 3 (a loss at a bound takes the higher grade).
GRADE_THRESHOLDS: tuple[float, float, float] = (0.20, 0.25, 0.40)

#: Grades as ints 0–3 (0 normal, 1 mild, 2 moderate, 3 severe).
GenantGrade = int
GRADES: tuple[GenantGrade, ...] = (0, 1, 2, 3)


class Morphology(str, Enum):
    """Where a fractured vertebra lost its height."""

    WEDGE = "wedge"
    BICONCAVE = "biconcave"
    CRUSH = "crush"


class GenantError(InputError, ValueError):
    """A Genant grade or morphology that cannot be (grade outside 0–3, morphology on grade 0...)."""


def grade_from_height_loss(fraction: float) -> GenantGrade:
    """Genant grade (0–3) of a height loss given as a fraction (0.3 = 30 %).

    Raises:
        GenantError: ``fraction`` is not a number between 0 and 1.
    """
    f = float(fraction)
    if not math.isfinite(f) or f < 0.0 or f > 1.0:
        raise GenantError(f"height loss {fraction!r} is not a fraction between 0 and 1 (0.3 = 30 %)")
    return sum(1 for t in GRADE_THRESHOLDS if f >= t)


def height_loss_range(grade: GenantGrade) -> tuple[float, float]:
    """The height-loss fractions [low, high) of ``grade`` (grade 3: up to 1.0)."""
    check_grade(grade, None)
    bounds = (0.0, *GRADE_THRESHOLDS, 1.0)
    return bounds[grade], bounds[grade + 1]


def parse_morphology(value: str | Morphology | None) -> Morphology | None:
    """A morphology from its name (case-insensitive); None or '' for none.

    Raises:
        GenantError: an unknown name.
    """
    if value is None or isinstance(value, Morphology):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    try:
        return Morphology(text)
    except ValueError:
        names = ", ".join(m.value for m in Morphology)
        raise GenantError(f"morphology {value!r} is not one of {names}") from None


def check_grade(grade: object, morphology: str | Morphology | None) -> None:
    """Check a Genant grade (int 0–3) and its morphology (none at grade 0; optional above).

    Raises:
        GenantError: one line saying what is wrong.
    """
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in GRADES:
        raise GenantError(f"Genant grade {grade!r} is not one of 0, 1, 2, 3")
    morph = parse_morphology(morphology)
    if grade == 0 and morph is not None:
        raise GenantError(f"a grade-0 (normal) vertebra has no morphology, got {morph.value!r}")


#: Which calls readers make on a study's levels.
CALL_SCHEMES: tuple[str, ...] = ("fracture", "genant")
#: Datasets read with Genant grades by default (whole-spine datasets that grade by Genant).
GENANT_DATASETS: frozenset[str] = frozenset({"verse", "ctspine1k"})


def scheme_for_dataset(dataset: str) -> str:
    """The default reading scheme of a dataset: "genant" for VerSe and CTSpine1K, else "fracture"."""
    return "genant" if dataset in GENANT_DATASETS else "fracture"
