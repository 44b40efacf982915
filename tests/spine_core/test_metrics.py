"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spine_core.errors import InputError, MaskError
from spine_core.io.verse import centroids_from_labels
from spine_core.metrics import (
    RSNA_TARGETS,
    UndefinedMetricWarning,
    confusion,
    dice_per_label,
    identification_rate,
    label_centroids,
    pooled_identification_rate,
    roc_auc,
    roc_curve,
    rsna_row,
    rsna_weighted_log_loss,
    sensitivity_specificity,
)
from spine_core.volume import Volume

# Two studies. A: C1 and patient_overall positive; B: all negative.
Y_A = [1, 0, 0, 0, 0, 0, 0, 1]
P_A = [0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9]
Y_B = [0] * 8
P_B = [0.5] * 8
# By hand: A's weights are 2 (C1+), 6 x 1 (C2..C7-), 14 (overall+) -> 22;
# weighted loss = 2(-ln 0.8) + 6(-ln 0.9) + 14(-ln 0.9) = 2.553497...; B's is 14 ln 2 over weight 14.
A_WEIGHTED = -2 * math.log(0.8) - 20 * math.log(0.9)


def test_rsna_targets_order() -> None:
    assert RSNA_TARGETS == ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "patient_overall")


def test_rsna_loss_per_study_normalisation_by_hand() -> None:
    expected = (A_WEIGHTED / 22 + math.log(2)) / 2
    assert A_WEIGHTED == pytest.approx(2.5534974, abs=1e-6)
    assert expected == pytest.approx(0.4046076, abs=1e-6)
    assert rsna_weighted_log_loss([Y_A, Y_B], [P_A, P_B]) == pytest.approx(expected, rel=1e-12)


def test_rsna_loss_pooled_differs_when_weight_sums_differ() -> None:
    expected = (A_WEIGHTED + 14 * math.log(2)) / (22 + 14)
    assert expected == pytest.approx(0.3404877, abs=1e-6)
    pooled = rsna_weighted_log_loss([Y_A, Y_B], [P_A, P_B], normalize="pooled")
    assert pooled == pytest.approx(expected, rel=1e-12)
    assert pooled != pytest.approx(rsna_weighted_log_loss([Y_A, Y_B], [P_A, P_B]))


def test_rsna_loss_single_negative_study_is_ln2_at_half() -> None:
    assert rsna_weighted_log_loss([Y_B], [P_B]) == pytest.approx(math.log(2), rel=1e-12)


def test_rsna_loss_clips_certain_wrong_predictions() -> None:
    # C1 and overall positive but predicted 0 -> each costs -ln(1e-15); negatives predicted 0 ~ 0.
    loss = rsna_weighted_log_loss([Y_A], [[0.0] * 8])
    assert loss == pytest.approx((2 + 14) * -math.log(1e-15) / 22, rel=1e-12)
    assert math.isfinite(loss)


def test_rsna_loss_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="expected \\(n_studies, 8\\)"):
        rsna_weighted_log_loss([[0] * 7], [[0.5] * 7])
    with pytest.raises(InputError, match="probabilities"):
        rsna_weighted_log_loss([Y_B], [[1.5] * 8])
    with pytest.raises(InputError, match="0/1"):
        rsna_weighted_log_loss([[0.5] * 8], [P_B])


def test_rsna_row_builds_overall_from_levels() -> None:
    labels = {f"C{i}": 0 for i in range(1, 8)} | {"C3": 1}
    assert rsna_row(labels) == [0, 0, 1, 0, 0, 0, 0, 1]
    with pytest.raises(InputError, match="C7"):
        rsna_row({"C1": 0})


def test_roc_auc_by_hand() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered -> 0.75
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_roc_auc_counts_ties_as_half() -> None:
    # pos 0.5 vs neg 0.5 tie (0.5), vs 0.2 win (1); pos 0.9 wins both (2) -> 3.5 / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)


def test_roc_auc_one_class_is_nan_with_reason() -> None:
    with pytest.warns(UndefinedMetricWarning, match="all 3 cases are positive"):
        assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.3, 0.4]))


def test_roc_curve_points_and_area() -> None:
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert thr.tolist() == [math.inf, 0.8, 0.4, 0.35, 0.1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(0.75)


def test_roc_curve_groups_ties() -> None:
    fpr, tpr, thr = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    assert thr.tolist() == [math.inf, 0.9, 0.5, 0.2]
    assert tpr.tolist() == [0, 0.5, 1, 1]
    assert fpr.tolist() == [0, 0, 0.5, 1]


def test_sensitivity_specificity_by_hand() -> None:
    counts = confusion([1, 1, 1, 0, 0], [1, 0, 1, 0, 1])
    assert (counts.tp, counts.fn, counts.tn, counts.fp) == (2, 1, 1, 1)
    sens, spec = sensitivity_specificity([1, 1, 1, 0, 0], [1, 0, 1, 0, 1])
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(1 / 2)


def test_sensitivity_without_positives_is_nan() -> None:
    with pytest.warns(UndefinedMetricWarning, match="no positive cases"):
        sens, spec = sensitivity_specificity([0, 0], [0, 1])
    assert math.isnan(sens)
    assert spec == 0.5


def test_dice_per_label_by_hand() -> None:
    pred = np.array([[1, 1, 0], [2, 2, 0], [0, 4, 0]], dtype=np.uint8)
    truth = np.array([[1, 0, 0], [2, 2, 2], [0, 0, 0]], dtype=np.uint8)
    dice = dice_per_label(pred, truth, [1, 2, 3, 4])
    assert dice[1] == pytest.approx(2 * 1 / (2 + 1))
    assert dice[2] == pytest.approx(2 * 2 / (2 + 3))
    assert math.isnan(dice[3])  # in neither map
    assert dice[4] == 0.0  # predicted only


def test_dice_shape_mismatch_is_mask_error() -> None:
    with pytest.raises(MaskError, match="differ in shape"):
        dice_per_label(np.zeros((2, 2)), np.zeros((2, 3)), [1])


TRUE = {"C1": (0, 0, 0), "C2": (0, 0, 30), "C3": (0, 0, 60)}


def test_identification_rate_by_hand() -> None:
    pred = {
        "C1": (0, 0, 5),  # 5 mm, closest to true C1 -> identified
        "C2": (0, 0, 48),  # 18 mm from C2 but 12 mm from C3 -> not identified
        "C3": (0, 0, 80),  # exactly 20 mm, closest is C3 -> identified (d > 20 rejected)
    }
    result = identification_rate(pred, TRUE)
    assert result.identified == {"C1": True, "C2": False, "C3": True}
    assert (result.hits, result.n_true) == (2, 3)
    assert result.rate == pytest.approx(2 / 3)
    assert result.distances == pytest.approx({"C1": 5.0, "C2": 18.0, "C3": 20.0})
    assert result.mean_distance_mm == pytest.approx(43 / 3)


def test_identification_too_far_or_missing() -> None:
    result = identification_rate({"C1": (0, 0, 25)}, TRUE)
    assert result.identified == {"C1": False, "C2": False, "C3": False}
    assert result.distances == {"C1": 25.0}
    assert result.rate == 0.0


def test_identification_closest_only_among_labels_in_both_like_verse() -> None:
    # VerSe's get_hits takes the argmin over the labels present in both sets: C2 is not
    # predicted, so the C1 prediction 18 mm away counts even though true C2 is 12 mm away.
    result = identification_rate({"C1": (0, 0, 18)}, TRUE)
    assert result.identified["C1"] is True


def test_identification_accepts_canonical_ids_and_pools() -> None:
    one = identification_rate({1: (0, 0, 1), 2: (0, 0, 31)}, {1: (0, 0, 0), 2: (0, 0, 30)})
    two = identification_rate({"C1": (0, 0, 5)}, TRUE)
    assert one.rate == 1.0
    assert pooled_identification_rate([one, two]) == pytest.approx(3 / 5)


def test_identification_rejects_bad_keys_and_points() -> None:
    with pytest.raises(InputError, match="X9"):
        identification_rate({"X9": (0, 0, 0)}, TRUE)
    with pytest.raises(InputError, match="3 finite coordinates"):
        identification_rate({"C1": (0, 0)}, TRUE)


def test_label_centroids_are_the_centres_of_mass() -> None:
    rng = np.random.default_rng(4)
    labels = np.zeros((9, 11, 13), np.uint8)
    labels[1:4, 2:9, 3:7] = 2
    labels[5:8, 1:5, 6:12] = 9
    labels[rng.random(labels.shape) < 0.05] = 28  # scattered voxels of T13
    oblique = np.array([[0.1, 0.0, 0.9, -5.0], [0.0, 0.7, 0.05, 3.0], [2.0, 0.0, -0.1, 40.0],
                        [0.0, 0.0, 0.0, 1.0]])
    grid = Volume(labels, oblique)
    expected = {c.name: c.lps for c in centroids_from_labels(labels, grid)}
    found = label_centroids(labels, grid)
    assert set(found) == {"C2", "T2", "T13"}
    for name, xyz in expected.items():
        assert found[name] == pytest.approx(xyz, abs=1e-9)
    assert label_centroids(np.zeros((2, 2, 2), np.uint8), grid) == {}
