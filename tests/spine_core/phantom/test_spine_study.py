"""Thoracolumbar and whole-spine phantoms: determinism, transitional anatomy, compressions."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.errors import InputError
from spine_core.genant import Morphology, grade_from_height_loss
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.compression import (
    LOSS_BANDS,
    MEASURE_INSET,
    Compression,
    compress,
    draw_compression,
    sample_compressions,
)
from spine_core.phantom.spine_anatomy import (
    P_ELEVEN_RIBS,
    P_L6,
    P_SACRALISED_L5,
    P_THIRTEEN_RIBS,
    Transitional,
    level_specs,
    sample_transitional,
)
from spine_core.phantom.spine_study import SpineStudy, generate_spine_study
from spine_core.phantom.vertebra import build_vertebra

SMALL = (112, 48, 48)
#: Seeds whose drawn spine is transitional (see sample_transitional).
SEED_11_RIBS, SEED_L6, SEED_SACRALISED, SEED_T13 = 1, 3, 4, 52


def test_same_seed_same_bytes_and_seeds_differ() -> None:
    a = generate_spine_study(7, SMALL, region="thoracolumbar")
    b = generate_spine_study(7, SMALL, region="thoracolumbar")
    c = generate_spine_study(8, SMALL, region="thoracolumbar")
    assert a.image.array.tobytes() == b.image.array.tobytes()
    assert a.labels.array.tobytes() == b.labels.array.tobytes()
    assert a.compressions == b.compressions and a.orientation == b.orientation
    assert np.array_equal(a.image.affine, b.image.affine)
    assert a.image.array.tobytes() != c.image.array.tobytes()


def test_whole_spine_runs_from_c1_to_the_sacrum() -> None:
    s = generate_spine_study(0, (160, 48, 48), region="whole", noise=False)
    lab = s.labels.array
    assert lab.dtype == np.uint8 and s.image.array.dtype == np.int16
    present = set(np.unique(lab).tolist()) - {0}
    assert {1, 2, 7, 8, 19, 20, 24, 26} <= present
    assert present == set(s.centroids)
    # Craniocaudal order: C1 above T1 above L1 above the sacrum (LPS z grows superior).
    z = {lid: s.centroids[lid][2] for lid in (1, 8, 20, 26)}
    assert z[1] > z[8] > z[20] > z[26]
    # Bone is bright, ribs are bone without a label.
    hu = s.image.array
    assert np.median(hu[lab == 20]) > 150
    assert np.count_nonzero((hu > 500) & (lab == 0)) > 100


def test_thoracolumbar_starts_in_the_thoracic_spine() -> None:
    s = generate_spine_study(2, SMALL, region="thoracolumbar")
    present = set(s.centroids)
    assert not present & set(range(1, 8))
    assert {20, 21, 22, 23, 24, 26} <= present


@pytest.mark.parametrize(("seed", "finding", "must", "must_not"), [
    (SEED_11_RIBS, "11 ribs", {18, 20}, {19, 28}),
    (SEED_T13, "T13", {19, 28, 20}, set()),
    (SEED_L6, "L6", {24, 25, 26}, {28}),
    (SEED_SACRALISED, "sacralised L5", {24, 26}, {25}),
])
def test_transitional_anatomy_is_in_the_labels(seed: int, finding: str, must: set[int],
                                               must_not: set[int]) -> None:
    s = generate_spine_study(seed, SMALL, region="thoracolumbar")
    assert finding in s.transitional.findings
    present = set(np.unique(s.labels.array).tolist())
    assert must <= present
    assert not must_not & present


def test_sacralised_l5_reaches_the_sacrum() -> None:
    normal = generate_spine_study(SEED_SACRALISED, SMALL, region="thoracolumbar",
                                  transitional=Transitional(), noise=False)
    fused = generate_spine_study(SEED_SACRALISED, SMALL, region="thoracolumbar", noise=False)

    def gap(study: SpineStudy) -> float:
        lab, vol = study.labels.array, study.labels
        l5 = vol.index_to_lps(np.argwhere(lab == 24))
        sacrum = vol.index_to_lps(np.argwhere(lab == 26))
        return float(l5[:, 2].min() - sacrum[:, 2].max())

    assert gap(fused) < gap(normal)


def test_transitional_rates() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_transitional(rng) for _ in range(4000)]
    rate = {f: np.mean([f in d.findings for d in draws])
            for f in ("11 ribs", "T13", "L6", "sacralised L5")}
    expected = {"11 ribs": P_ELEVEN_RIBS, "T13": P_THIRTEEN_RIBS, "L6": P_L6,
                "sacralised L5": P_SACRALISED_L5}
    for f, p in expected.items():
        assert abs(rate[f] - p) < 0.015, (f, rate[f])
    names = Transitional(13, 6).names
    assert names[-4:] == ("L4", "L5", "L6", "S") and "T13" in names


def _heights(vert_body_grid: tuple[np.ndarray, np.ndarray], step: float) -> float:
    """Length of the inside (sdf <= 0) run along w, with sub-voxel zero crossings."""
    d, _ = vert_body_grid
    inside = np.flatnonzero(d <= 0)
    lo, hi = int(inside[0]), int(inside[-1])
    start = lo - d[lo] / (d[lo] - d[lo - 1])  # zero crossing below (index units)
    stop = hi + d[hi] / (d[hi] - d[hi + 1])
    return float((stop - start) * step)


def _measured_loss(level: str, c: Compression) -> float:
    spec = next(s for s in level_specs(Transitional()) if s.name == level)
    vert = compress(build_vertebra(spec), c)
    body = vert.part("body")
    hb = body.radii[1]
    step = 0.02
    w = np.arange(-spec.h - 4, spec.h + 4, step, dtype=np.float32)
    heights = []
    for v0 in (-hb + MEASURE_INSET, 0.0, hb - MEASURE_INSET):
        d = body.sdf(np.zeros_like(w), np.full_like(w, v0), w)
        heights.append(_heights((d, w), step))
    return 1.0 - min(heights) / (2 * spec.h)


@pytest.mark.parametrize("morphology", list(Morphology))
@pytest.mark.parametrize("grade", [1, 2, 3])
def test_genant_grade_matches_the_measured_height_loss(grade: int, morphology: Morphology) -> None:
    rng = np.random.default_rng(grade * 10 + len(morphology.value))
    for level in ("T7", "L1"):
        c = draw_compression(rng, level, grade, morphology)
        lo, hi = LOSS_BANDS[grade]
        assert lo <= c.height_loss <= hi
        loss = _measured_loss(level, c)
        assert abs(loss - c.height_loss) < 0.004, (level, loss, c)
        assert grade_from_height_loss(loss) == grade


def test_compressions_land_at_the_usual_levels() -> None:
    rng = np.random.default_rng(1)
    levels = [s.name for s in level_specs(Transitional())]
    counts: dict[str, int] = {}
    for _ in range(1500):
        for c in sample_compressions(rng, levels):
            counts[c.level] = counts.get(c.level, 0) + 1
    assert not any(lv.startswith("C") or lv in ("T1", "T2", "T3", "S") for lv in counts)
    junction = counts["T12"] + counts["L1"]
    assert junction > counts["T7"] + counts["T8"] > counts["L4"] + counts["L5"]


def test_compression_is_rendered_and_recorded() -> None:
    c = Compression("L1", 3, Morphology.CRUSH, 0.5)
    shape = (160, 64, 64)
    intact = generate_spine_study(9, shape, region="thoracolumbar", compressions=[], noise=False)
    broken = generate_spine_study(9, shape, region="thoracolumbar", compressions=[c], noise=False)
    assert broken.compressions == (c,)
    lid = LEVEL_IDS["L1"]
    before = np.count_nonzero(intact.labels.array == lid)
    after = np.count_nonzero(broken.labels.array == lid)
    assert after < 0.9 * before


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InputError, match="region"):
        generate_spine_study(1, SMALL, region="lumbar")
    with pytest.raises(InputError, match="too small"):
        generate_spine_study(1, (10, 10, 10), region="whole")
    with pytest.raises(InputError, match="not in this spine"):
        generate_spine_study(1, SMALL, region="whole", transitional=Transitional(),
                             compressions=[Compression("L6", 1, Morphology.WEDGE, 0.22)])
    with pytest.raises(ValueError, match="not grade"):
        Compression("L1", 1, Morphology.WEDGE, 0.3)



def test_whole_spine_can_carry_cervical_trauma_fractures_too() -> None:
    s = generate_spine_study(13, (128, 48, 48), region="whole")
    assert s.trauma and all(lv.startswith("C") for lv in s.trauma)
    assert not generate_spine_study(13, (128, 48, 48), region="thoracolumbar").trauma
