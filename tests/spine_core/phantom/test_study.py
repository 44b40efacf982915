"""The synthetic spine CT generator: determinism, tissue values, anatomy order, fractures, readers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from spine_core.errors import InputError
from spine_core.labels import CERVICAL, LEVEL_IDS
from spine_core.phantom import PhantomStudy, generate_study
from spine_core.phantom.fractures import LEVEL_PREVALENCE, sample_fractured_levels

SMALL = (120, 128, 128)


@pytest.fixture(scope="module")
def fractured() -> PhantomStudy:
    """C2 and C6 fractured, C4 intact; the report misses nothing."""
    return generate_study(21, SMALL, fractured_levels=["C2", "C6"], report_miss=False)


def test_same_seed_gives_identical_bytes() -> None:
    a = generate_study(5, SMALL)
    b = generate_study(5, SMALL)
    assert a.image.array.tobytes() == b.image.array.tobytes()
    assert a.labels.array.tobytes() == b.labels.array.tobytes()
    assert np.array_equal(a.image.affine, b.image.affine)
    assert a.boxes == b.boxes and a.reader_boxes == b.reader_boxes
    assert a.report == b.report and a.study_uid == b.study_uid


def test_different_seeds_differ() -> None:
    a = generate_study(5, SMALL)
    b = generate_study(6, SMALL)
    assert a.study_uid != b.study_uid
    assert not np.array_equal(a.image.spacing, b.image.spacing)
    assert a.image.array.tobytes() != b.image.array.tobytes()


def test_grid_is_an_int16_axial_stack_with_labels_on_it(fractured: PhantomStudy) -> None:
    img, lab = fractured.image, fractured.labels
    assert img.array.dtype == np.int16 and img.shape == SMALL
    assert lab.array.dtype == np.uint8 and lab.shape == SMALL
    assert np.array_equal(img.affine, lab.affine)
    assert img.axcodes == ("S", "P", "L")
    values = set(np.unique(lab.array).tolist())
    assert {0, *range(1, 9)} <= values  # C1–C7 and at least T1 in the field of view
    assert values <= set(range(0, 20))


def test_tissue_values_follow_the_label_map(fractured: PhantomStudy) -> None:
    hu = fractured.image.array.astype(np.float32)
    lab = fractured.labels.array
    spacing = fractured.image.spacing
    bone = lab > 0
    depth = ndimage.distance_transform_edt(bone, sampling=spacing)
    cancellous = hu[bone & (depth > 3.0)]  # only vertebral bodies are this thick
    assert cancellous.size > 1000
    assert 150 <= np.median(cancellous) <= 450
    cortex = np.percentile(hu[bone], 95)
    assert 850 <= cortex <= 1600
    assert cortex - np.median(cancellous) > 500
    air = hu[:, :6, :6]  # corners of the field of view lie outside the neck
    assert np.median(air) < -950
    soft = hu[~bone & (hu > -300) & (hu < 300)]
    assert -60 <= np.median(soft) <= 90  # neck soft tissue and muscle


def test_levels_run_craniocaudally(fractured: PhantomStudy) -> None:
    z = [fractured.centroids[name][2] for name in (*CERVICAL, "T1")]
    assert all(upper > lower for upper, lower in zip(z, z[1:])), z  # LPS z points Superior
    # C1 occupies the most superior labelled slices (a0 ascends towards Superior).
    lab = fractured.labels.array
    top = [int(np.flatnonzero((lab == LEVEL_IDS[n]).any(axis=(1, 2))).max()) for n in CERVICAL]
    assert top[0] >= max(top[1:]) - 1 and top[1] > top[3]


def test_centroids_are_the_mask_centres(fractured: PhantomStudy) -> None:
    lab = fractured.labels.array
    for name in ("C1", "C4", "C7"):
        idx = np.argwhere(lab == LEVEL_IDS[name]).mean(axis=0)
        assert np.allclose(fractured.labels.index_to_lps(idx), fractured.centroids[name])


def test_fracture_boxes_lie_on_their_vertebra(fractured: PhantomStudy) -> None:
    assert fractured.fractured_levels == {"C2", "C6"}
    assert {b.level for b in fractured.boxes} == {"C2", "C6"}
    lab = fractured.labels.array
    for box in fractured.boxes:
        rows, cols = np.nonzero(lab[box.slice_index] == LEVEL_IDS[box.level])
        assert rows.size, f"no {box.level} on slice {box.slice_index}"
        assert box.x >= cols.min() and box.x + box.width - 1 <= cols.max()
        assert box.y >= rows.min() and box.y + box.height - 1 <= rows.max()
    # The boxes follow the fracture over consecutive slices.
    for level in ("C2", "C6"):
        slices = sorted({b.slice_index for b in fractured.boxes if b.level == level})
        assert len(slices) >= 2 and slices[-1] - slices[0] + 1 <= len(slices) + 2


def _shell(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def test_cortex_is_broken_in_the_boxes(fractured: PhantomStudy) -> None:
    hu = fractured.image.array.astype(np.float32)
    lab = fractured.labels.array
    broken: list[np.ndarray] = []
    for box in fractured.boxes:
        shell = _shell(lab[box.slice_index] == LEVEL_IDS[box.level])
        window = np.zeros_like(shell)
        y0, x0, y1, x1 = int(box.y), int(box.x), int(box.y + box.height), int(box.x + box.width)
        window[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
        broken.append(hu[box.slice_index][shell & window])
    intact_id = LEVEL_IDS["C4"]
    intact = [hu[k][_shell(lab[k] == intact_id)]
              for k in np.flatnonzero((lab == intact_id).any(axis=(1, 2)))]
    in_boxes, at_c4 = np.concatenate(broken), np.concatenate(intact)
    assert in_boxes.mean() < at_c4.mean() - 100
    assert np.mean(in_boxes < 300) > 0.05 > np.mean(at_c4 < 300)  # lucent gaps in the cortex


def test_negative_study_has_no_boxes() -> None:
    study = generate_study(8, SMALL, fractured_levels=[])
    assert study.fractures == () and study.boxes == ()
    assert "No acute" in study.report or "Negative" in study.report


def test_report_can_miss_a_visible_fracture() -> None:
    study = generate_study(3, SMALL, fractured_levels=["C7"], report_miss=True)
    assert study.missed_levels == {"C7"} and study.reported_levels == set()
    assert any(b.level == "C7" for b in study.boxes)  # still visible in the image
    assert "C7" not in study.report and "No acute" in study.report


def test_readers_copy_the_truth_with_noise(fractured: PhantomStudy) -> None:
    readers = {b.reader for b in fractured.reader_boxes}
    assert readers <= {"reader1", "reader2", "reader3"} and len(readers) >= 2
    truth = {(b.slice_index, b.level): b for b in fractured.boxes}
    matched = 0
    for b in fractured.reader_boxes:
        t = truth.get((b.slice_index, b.level))
        if t is not None:
            matched += 1
            assert abs(b.x - t.x) < 8 and abs(b.y - t.y) < 8
    assert matched >= len(fractured.reader_boxes) * 0.6
    assert any((b.x, b.y) != (truth[(b.slice_index, b.level)].x, truth[(b.slice_index, b.level)].y)
               for b in fractured.reader_boxes if (b.slice_index, b.level) in truth)
    for reader, calls in fractured.reader_calls.items():
        drawn = {b.level for b in fractured.reader_boxes if b.reader == reader}
        assert set(calls) == set(CERVICAL)
        assert {lv for lv, c in calls.items() if c} == drawn


def test_instance_numbers_are_a_permutation(fractured: PhantomStudy) -> None:
    n = SMALL[0]
    numbers = fractured.instance_numbers
    assert sorted(numbers) == list(range(1, n + 1))
    assert numbers[0] == (n if fractured.superior_first else 1)


def test_fractured_levels_follow_rsna_rates() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_fractured_levels(rng) for _ in range(6000)]
    assert abs(np.mean([bool(d) for d in draws]) - 0.5) < 0.03
    for level, rate in LEVEL_PREVALENCE.items():
        assert abs(np.mean([level in d for d in draws]) - rate) < 0.02, level


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"shape": (10, 128, 128)}, "too small"), ({"fractured_levels": ["T4"]}, "C1–C7")],
)
def test_bad_arguments_say_what_to_do(kwargs: dict, needle: str) -> None:
    args = {"shape": SMALL, **kwargs}
    with pytest.raises(InputError, match=needle):
        generate_study(1, **args)
