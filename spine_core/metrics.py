"""Evaluation metrics: RSNA 2022 weighted log loss, ROC AUC, sensitivity/specificity, Dice, VerSe
identification rate.

A metric that is undefined for the data given (one class absent, empty labels) returns NaN and
emits :class:`UndefinedMetricWarning` saying why, never a ZeroDivisionError.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from spine_core.errors import InputError, LabelVocabularyError, MaskError
from spine_core.labels import CERVICAL, level_id, level_name
from spine_core.volume import Volume


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data given; NaN was returned (the message says why)."""


def _undefined(reason: str) -> float:
    warnings.warn(reason, UndefinedMetricWarning, stacklevel=3)
    return math.nan


def _binary(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.ravel()
    flat = arr.astype(float).ravel()
    if not np.all((flat == 0) | (flat == 1)):
        bad = flat[(flat != 0) & (flat != 1)][:5].tolist()
        raise InputError(f"{name} must hold 0/1 or True/False labels; found {bad}")
    return flat.astype(bool)


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InputError(f"{names} differ in length ({a.shape[0]} vs {b.shape[0]}): one value per case")


# --------------------------------------------------------------------------------------------
# RSNA 2022 cervical spine fracture: weighted multi-label log loss
# --------------------------------------------------------------------------------------------

#: Target columns of one study, in the order the arrays of :func:`rsna_weighted_log_loss` use.
RSNA_TARGETS: tuple[str, ...] = (*CERVICAL, "patient_overall")
#: Weight of each target when its true label is negative / positive.
RSNA_NEG_WEIGHTS = np.array([1.0] * 7 + [7.0])
RSNA_POS_WEIGHTS = np.array([2.0] * 7 + [14.0])
#: Probabilities are clipped to [eps, 1 - eps] before taking logs.
RSNA_EPS = 1e-15


def rsna_weighted_log_loss(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    normalize: Literal["study", "pooled"] = "study",
) -> float:
    """RSNA 2022 Cervical Spine Fracture Detection score (lower is better).

    ``y_true`` and ``y_pred`` have shape ``(n_studies, 8)``, columns :data:`RSNA_TARGETS`
    (C1..C7, patient_overall). Per row and target the binary cross-entropy
    ``l = -(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[1e-15, 1 - 1e-15]`` is
    weighted by ``w`` = 1 (vertebra negative), 2 (vertebra positive), 7 (patient_overall negative),
    14 (patient_overall positive). Then:

    * ``normalize="study"`` (default, the competition's scorer): per study
      ``sum_j w_ij l_ij / sum_j w_ij``, then the mean over studies.
    * ``normalize="pooled"``: ``sum_ij w_ij l_ij / sum_ij w_ij`` over all rows at once.

    Source: the weights were given by the hosts in Kaggle discussion 340392 and the scoring code in
    discussion 341854 of rsna-2022-cervical-spine-fracture-detection; OpenAI's MLE-bench grader for
    this competition (``mlebench/competitions/rsna-2022-cervical-spine-fracture-detection/
    grade.py``, "adapted from discussion 341854") normalises by the weight sum of each study and
    averages over studies, with eps = 1e-15 — the default here. The competition's Evaluation page
    only says "loss is averaged across all rows"; the two normalisations differ when studies have
    different numbers of positive targets, so the pooled variant is kept for comparison.
    """
    truth = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float)
    n_targets = len(RSNA_TARGETS)
    for name, arr in (("y_true", truth), ("y_pred", pred)):
        if arr.ndim != 2 or arr.shape[1] != n_targets:
            raise InputError(
                f"{name} has shape {arr.shape}: expected (n_studies, {n_targets}) with columns "
                + ", ".join(RSNA_TARGETS)
            )
    if truth.shape != pred.shape:
        raise InputError(f"y_true {truth.shape} and y_pred {pred.shape} must have the same shape")
    if truth.shape[0] == 0:
        raise InputError("no studies to score: y_true is empty")
    _binary(truth, "y_true")
    if not np.all(np.isfinite(pred)) or pred.min() < 0 or pred.max() > 1:
        raise InputError("y_pred must hold probabilities in [0, 1] (no NaN or infinity)")
    if normalize not in ("study", "pooled"):
        raise InputError(f"normalize='{normalize}' is not 'study' or 'pooled'")

    p = np.clip(pred, RSNA_EPS, 1.0 - RSNA_EPS)
    loss = -(truth * np.log(p) + (1.0 - truth) * np.log(1.0 - p))
    weights = truth * RSNA_POS_WEIGHTS + (1.0 - truth) * RSNA_NEG_WEIGHTS
    if normalize == "pooled":
        return float(np.sum(weights * loss) / np.sum(weights))
    return float(np.mean(np.sum(weights * loss, axis=1) / np.sum(weights, axis=1)))


def rsna_row(labels: Mapping[str, float | bool], *, name: str = "study") -> list[float]:
    """One study's values in :data:`RSNA_TARGETS` order from a ``{'C1': .., 'patient_overall': ..}``
    mapping; ``patient_overall`` defaults to the maximum over C1..C7 when absent."""
    missing = [t for t in CERVICAL if t not in labels]
    if missing:
        raise InputError(f"{name}: no value for {', '.join(missing)} (all of C1–C7 are needed)")
    row = [float(labels[t]) for t in CERVICAL]
    row.append(float(labels.get("patient_overall", max(row))))
    return row


# --------------------------------------------------------------------------------------------
# Binary classification
# --------------------------------------------------------------------------------------------


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve by the Mann–Whitney statistic, ties counting one half.

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with average ranks. NaN (with an
    :class:`UndefinedMetricWarning`) when only one class is present.
    """
    truth = _binary(y_true, "y_true")
    s = np.asarray(scores, dtype=float).ravel()
    _same_length(truth, s, "y_true and scores")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinity")
    n_pos = int(truth.sum())
    n_neg = int(truth.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        present = "positive" if n_pos else "negative"
        return _undefined(
            f"ROC AUC is undefined: all {truth.size} cases are {present}; it needs both classes"
        )
    ranks = rankdata(s, method="average")
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """ROC points ``(fpr, tpr, thresholds)``, thresholds descending, starting at (0, 0) with
    threshold +inf; a case is called positive when ``score >= threshold``. Tied scores make one
    point. Rates of an absent class are NaN (with an :class:`UndefinedMetricWarning`)."""
    truth = _binary(y_true, "y_true")
    s = np.asarray(scores, dtype=float).ravel()
    _same_length(truth, s, "y_true and scores")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinity")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], truth[order]
    last_of_value = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.r_[0, np.cumsum(t_sorted)[last_of_value]].astype(float)
    fps = np.r_[0, np.cumsum(~t_sorted)[last_of_value]].astype(float)
    thresholds = np.r_[np.inf, s_sorted[last_of_value]]
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        _undefined("ROC curve: only one class present, the rate of the other class is undefined")
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / n_pos if n_pos else np.full_like(tps, np.nan)
        fpr = fps / n_neg if n_neg else np.full_like(fps, np.nan)
    return fpr, tpr, thresholds


@dataclass(frozen=True)
class Confusion:
    """Counts of a binary prediction against the truth, with the rates derived from them."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        """tp / (tp + fn); NaN when there are no positive cases."""
        if self.tp + self.fn == 0:
            return _undefined("sensitivity is undefined: there are no positive cases")
        return self.tp / (self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """tn / (tn + fp); NaN when there are no negative cases."""
        if self.tn + self.fp == 0:
            return _undefined("specificity is undefined: there are no negative cases")
        return self.tn / (self.tn + self.fp)


def confusion(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> Confusion:
    """Counts of true/false positives/negatives of binary predictions."""
    truth = _binary(y_true, "y_true")
    pred = _binary(y_pred, "y_pred")
    _same_length(truth, pred, "y_true and y_pred")
    return Confusion(
        tp=int(np.sum(truth & pred)),
        fp=int(np.sum(~truth & pred)),
        tn=int(np.sum(~truth & ~pred)),
        fn=int(np.sum(truth & ~pred)),
    )


def sensitivity_specificity(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[float, float]:
    """``(sensitivity, specificity)`` of binary predictions (NaN for an absent class)."""
    counts = confusion(y_true, y_pred)
    return counts.sensitivity, counts.specificity


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def dice_per_label(
    pred: npt.ArrayLike, truth: npt.ArrayLike, labels: Iterable[int]
) -> dict[int, float]:
    """Dice ``2|P∩T| / (|P| + |T|)`` of each label of two label maps on the same grid.

    A label absent from both maps gets NaN (nothing to compare; use ``np.nanmean`` to average);
    a label in only one map gets 0. One pass over the voxels whatever the number of labels.

    Raises:
        MaskError: the maps differ in shape.
    """
    p = np.asarray(pred)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise MaskError(
            f"prediction {p.shape} and truth {t.shape} differ in shape: resample the prediction "
            "onto the image grid first"
        )
    wanted = [int(label) for label in labels]
    if not wanted:
        return {}
    if any(label < 0 for label in wanted):
        raise InputError(f"labels must be non-negative integers, got {wanted}")
    top = max(wanted + [int(p.max(initial=0)), int(t.max(initial=0))]) + 1
    p_flat = p.ravel().astype(np.int64)
    t_flat = t.ravel().astype(np.int64)
    if p_flat.size and (p_flat.min() < 0 or t_flat.min() < 0):
        raise MaskError("label maps must not hold negative values")
    n_pred = np.bincount(p_flat, minlength=top)
    n_true = np.bincount(t_flat, minlength=top)
    n_both = np.bincount(t_flat[p_flat == t_flat], minlength=top)
    out: dict[int, float] = {}
    for label in wanted:
        denom = int(n_pred[label] + n_true[label])
        out[label] = math.nan if denom == 0 else 2.0 * int(n_both[label]) / denom
    return out


# --------------------------------------------------------------------------------------------
# Vertebra labelling (VerSe)
# --------------------------------------------------------------------------------------------


def dice_of_levels(predicted: npt.NDArray[np.integer], truth: npt.NDArray[np.integer]) -> dict[str, float]:
    """Dice per level name for every level present in either uint8 label map (same grid)."""
    present = np.flatnonzero(np.bincount(predicted.ravel(), minlength=256)
                             + np.bincount(truth.ravel(), minlength=256))
    return {level_name(k): v for k, v in
            dice_per_label(predicted, truth, [int(v) for v in present if v != 0]).items()}


def label_centroids(labels: npt.NDArray[np.integer], grid: Volume) -> dict[str, tuple[float, float, float]]:
    """Level name -> LPS centre of mass (mm) of every level in a uint8 label map on ``grid``.

    The same centres as :func:`spine_core.io.verse.centroids_from_labels`, in one pass of
    per-slice histograms (about 6 times faster on a 200 x 256 x 256 mask: no full-size index or
    ones arrays, no pass per label).
    """
    n = int(labels.max(initial=0)) + 1
    if n == 1:
        return {}
    plane = labels.shape[1:]
    rows = np.broadcast_to(np.arange(plane[0], dtype=np.float64)[:, None], plane).ravel()
    cols = np.broadcast_to(np.arange(plane[1], dtype=np.float64)[None, :], plane).ravel()
    count = np.zeros(n)
    sums = np.zeros((3, n))
    for k in range(labels.shape[0]):
        flat = np.asarray(labels[k]).ravel()
        c = np.bincount(flat, minlength=n)
        count += c
        sums[0] += k * c
        sums[1] += np.bincount(flat, weights=rows, minlength=n)
        sums[2] += np.bincount(flat, weights=cols, minlength=n)
    out: dict[str, tuple[float, float, float]] = {}
    for level in np.flatnonzero(count[1:]) + 1:
        xyz = grid.index_to_lps(sums[:, level] / count[level])
        out[level_name(int(level))] = (float(xyz[0]), float(xyz[1]), float(xyz[2]))
    return out



@dataclass(frozen=True)
class IdentificationResult:
    """VerSe identification of one scan.

    ``identified``: per true level, whether it was identified. ``distances``: per level present in
    both, the distance (mm) from the prediction to the true centroid of the same label.
    """

    hits: int
    n_true: int
    identified: dict[Hashable, bool] = field(compare=False)
    distances: dict[Hashable, float] = field(compare=False)

    @property
    def rate(self) -> float:
        """hits / n_true (NaN when the scan has no true centroid)."""
        if self.n_true == 0:
            return _undefined("identification rate is undefined: no true centroids")
        return self.hits / self.n_true

    @property
    def mean_distance_mm(self) -> float:
        """VerSe's localisation distance: mean distance over levels present in both."""
        if not self.distances:
            return _undefined("localisation distance is undefined: no level is in both sets")
        return float(np.mean(list(self.distances.values())))


def _level_number(level: Hashable) -> int:
    if isinstance(level, (int, np.integer)):
        return int(level)
    try:
        return level_id(str(level))
    except LabelVocabularyError as exc:
        raise InputError(f"centroid key {level!r}: {exc}") from None


def _points(
    centroids: Mapping[Any, Sequence[float]], name: str
) -> dict[int, tuple[Hashable, np.ndarray]]:
    out: dict[int, tuple[Hashable, np.ndarray]] = {}
    for key, xyz in centroids.items():
        number = _level_number(key)
        point = np.asarray(xyz, dtype=float)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(
                f"{name} centroid of {key!r} must be 3 finite coordinates in mm, got {xyz!r}"
            )
        if number in out:
            raise InputError(f"{name} centroids name level {key!r} twice")
        out[number] = (key, point)
    return out


def identification_rate(
    pred_centroids: Mapping[Any, Sequence[float]],
    true_centroids: Mapping[Any, Sequence[float]],
    max_dist_mm: float = 20.0,
) -> IdentificationResult:
    """VerSe identification of one scan's vertebra centroids (keys: level names or canonical ids,
    values: x, y, z in mm, any one world frame shared by both).

    A true vertebra is identified when its label was predicted, the predicted centroid of that
    label is at most ``max_dist_mm`` from it, and, among the true centroids whose labels were also
    predicted, its own is the closest to that prediction. This follows the VerSe challenge's
    evaluation code (``anjany/verse``, ``utils/eval_utilities.py``, ``get_hits``: closest by
    argmin over the labels present in both, then ``d > 20`` rejected, so exactly 20 mm counts); the
    VerSe 2019 task page words it as "the ground truth location is closest to the predicted
    location and this distance is less than 20 mm". The dataset rate pools hits over scans:
    :func:`pooled_identification_rate`.
    """
    pred = _points(pred_centroids, "predicted")
    true = _points(true_centroids, "true")
    common = sorted(set(pred) & set(true))
    identified = {true[n][0]: False for n in sorted(true)}
    distances: dict[Hashable, float] = {}
    if common:
        p = np.stack([pred[n][1] for n in common])
        t = np.stack([true[n][1] for n in common])
        d = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=2)  # rows: predictions
        closest = np.argmin(d, axis=1)
        for i, number in enumerate(common):
            distances[true[number][0]] = float(d[i, i])
            if closest[i] == i and d[i, i] <= max_dist_mm:
                identified[true[number][0]] = True
    return IdentificationResult(
        hits=sum(identified.values()), n_true=len(true), identified=identified, distances=distances
    )


def pooled_identification_rate(results: Iterable[IdentificationResult]) -> float:
    """VerSe's dataset identification rate: all hits over all true vertebrae of all scans."""
    items = list(results)
    total = sum(r.n_true for r in items)
    if total == 0:
        return _undefined("identification rate is undefined: no true centroids in any scan")
    return sum(r.hits for r in items) / total


@dataclass(frozen=True)
class BoxLocalisation:
    """How predicted per-slice boxes of one finding match its true per-slice boxes.

    ``slice_precision``: share of predicted slices that hold a true box; ``slice_recall``: share of
    true slices that hold a predicted box; ``iou_mean``: mean IoU over slices holding both;
    ``centre_hit``: share of those slices where the predicted box contains the true box's centre.
    NaN where the share has no denominator.
    """

    slice_precision: float
    slice_recall: float
    iou_mean: float
    centre_hit: float


#: A box on one slice: (slice index, x0, y0, x1, y1) in pixel edge coordinates.
SliceBox = tuple[int, float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) rectangles; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_localisation(predicted: Iterable[SliceBox], true: Iterable[SliceBox]) -> BoxLocalisation:
    """Compare per-slice boxes of one finding (several boxes on a slice are merged to their
    enclosing box first, the RSNA union rule)."""

    def by_slice(boxes: Iterable[SliceBox]) -> dict[int, tuple[float, float, float, float]]:
        out: dict[int, tuple[float, float, float, float]] = {}
        for k, x0, y0, x1, y1 in boxes:
            if k in out:
                a = out[k]
                out[k] = (min(a[0], x0), min(a[1], y0), max(a[2], x1), max(a[3], y1))
            else:
                out[k] = (x0, y0, x1, y1)
        return out

    pred, truth = by_slice(predicted), by_slice(true)
    common = sorted(set(pred) & set(truth))
    nan = float("nan")
    hits = []
    for k in common:
        cx, cy = (truth[k][0] + truth[k][2]) / 2, (truth[k][1] + truth[k][3]) / 2
        p = pred[k]
        hits.append(p[0] <= cx <= p[2] and p[1] <= cy <= p[3])
    return BoxLocalisation(
        slice_precision=len(common) / len(pred) if pred else nan,
        slice_recall=len(common) / len(truth) if truth else nan,
        iou_mean=float(np.mean([box_iou(pred[k], truth[k]) for k in common])) if common else nan,
        centre_hit=float(np.mean(hits)) if hits else nan,
    )


# --- agreement on ordinal grades (Genant) --------------------------------------------------------


def grade_confusion(a: npt.ArrayLike, b: npt.ArrayLike, n_grades: int = 4) -> npt.NDArray[np.int64]:
    """``n_grades`` × ``n_grades`` counts: row = reader A's grade, column = reader B's grade."""
    x = np.asarray(a, dtype=np.int64)
    y = np.asarray(b, dtype=np.int64)
    _same_length(x, y, "grades of reader A and reader B")
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= n_grades or y.max() >= n_grades):
        raise InputError(f"grades must lie in 0..{n_grades - 1}")
    out = np.zeros((n_grades, n_grades), dtype=np.int64)
    np.add.at(out, (x, y), 1)
    return out


def weighted_kappa(a: npt.ArrayLike, b: npt.ArrayLike, weights: str = "quadratic",
                   n_grades: int = 4) -> float:
    """Cohen's weighted kappa of two readers' ordinal grades (``linear`` or ``quadratic``
    disagreement weights |i-j| or (i-j)² over the full 0..n_grades-1 scale).

    1 is perfect agreement, 0 what chance gives; NaN (with a warning) when it is undefined, e.g.
    both readers gave one and the same grade to every level.
    """
    if weights not in ("linear", "quadratic"):
        raise InputError(f"weights must be 'linear' or 'quadratic', got {weights!r}")
    observed = grade_confusion(a, b, n_grades).astype(np.float64)
    n = observed.sum()
    if n == 0:
        return _undefined("no level was graded by both readers")
    i, j = np.indices((n_grades, n_grades))
    w = np.abs(i - j) if weights == "linear" else (i - j) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    denominator = float((w * expected).sum())
    if denominator == 0:
        return _undefined("no disagreement is possible by chance (every grade was the same)")
    return 1.0 - float((w * observed).sum()) / denominator
