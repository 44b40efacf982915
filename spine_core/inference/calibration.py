"""Calibration of the per-level fracture probabilities: temperature scaling and its figures.

The fracture classifier gives a logit ``z`` per level (already shifted by the level's log prior
odds, see :class:`~spine_core.inference.fracture.FractureConfig`); its probability is
``sigmoid(z / T)``. :func:`fit_temperature` picks the temperature ``T`` that minimises the mean
negative log-likelihood (NLL) of the true labels on a validation split (Guo et al., 2017, "On
Calibration of Modern Neural Networks"). ``T > 1`` softens an over-confident model, ``T < 1``
sharpens an under-confident one; ranking (and so every AUC over levels) is unchanged.

The NLL is convex in the inverse temperature ``b = 1 / T`` (it is a logistic regression with one
weight and no intercept), so a bounded one-dimensional search finds its minimum.

Figures (:func:`reliability_bins`, :func:`expected_calibration_error`): the probabilities are cut
into ``n_bins`` equal-width bins over [0, 1], bin ``i`` holding ``i/n <= p < (i+1)/n`` (the last
bin also holds ``p = 1``). For each bin: the number of levels, their mean predicted probability
(the reliability diagram's "confidence") and the fraction of them truly fractured (its
"accuracy", the observed rate). The expected calibration error is the count-weighted mean of
``|mean probability - observed rate|`` over the bins, i.e. ``sum_b (n_b / N) |p_b - y_b|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError

#: Temperatures searched by :func:`fit_temperature` (a temperature at either end means the data
#: pushed the fit to the bound: all levels separable, or no signal at all).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: Bins of the reliability diagram and the ECE, unless told otherwise.
DEFAULT_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: ``lower <= p < upper`` (``p = 1`` in the last bin)."""

    lower: float
    upper: float
    count: int
    mean_probability: float | None  # None for an empty bin
    observed_rate: float | None  # fraction truly positive; None for an empty bin

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(values: npt.ArrayLike, labels: npt.ArrayLike, what: str) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise InputError(f"{what} and labels differ in length ({x.size} against {y.size})")
    if x.size == 0:
        raise InputError(f"no {what} to calibrate on: score at least one level")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what} must be finite numbers")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 (not fractured) or 1 (fractured)")
    return x, y


def sigmoid(z: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def apply_temperature(logits: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """``sigmoid(logits / temperature)``: the calibrated probabilities."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def nll(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (binary cross-entropy, natural log) of ``labels`` under
    ``sigmoid(logits / temperature)``; computed from the logits, so exact for any logit."""
    z, y = _arrays(logits, labels, "logits")
    s = z / temperature
    # -log sigmoid(s) = log(1 + e^-s); -log(1 - sigmoid(s)) = log(1 + e^s)
    return float(np.mean(np.where(y == 1, np.logaddexp(0.0, -s), np.logaddexp(0.0, s))))


def fit_temperature(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature ``T`` in ``bounds`` that minimises :func:`nll` of ``labels`` under
    ``sigmoid(logits / T)``.

    Searched over ``b = 1 / T``, where the NLL is convex, with a bounded scalar search to a
    relative precision of about 1e-9.

    Raises:
        InputError: no logits, lengths differ, labels not 0/1, or only one class (a temperature
            cannot be fitted without both fractured and unfractured levels).
    """
    from scipy.optimize import minimize_scalar

    z, y = _arrays(logits, labels, "logits")
    if y.min() == y.max():
        kind = "fractured" if y[0] == 1 else "unfractured"
        raise InputError(
            f"all {y.size} levels are {kind}: a temperature needs both fractured and unfractured "
            "levels; calibrate on more studies"
        )
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0 < lo < hi:
        raise InputError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")

    def loss(b: float) -> float:
        s = z * b
        return float(np.mean(np.where(y == 1, np.logaddexp(0.0, -s), np.logaddexp(0.0, s))))

    found = minimize_scalar(loss, bounds=(1.0 / hi, 1.0 / lo), method="bounded",
                            options={"xatol": 1e-10, "maxiter": 500})
    b = float(found.x)
    # The bounded search stops just inside a bound; snap to it when the bound itself is no worse.
    for edge in (1.0 / hi, 1.0 / lo):
        if loss(edge) <= loss(b):
            b = edge
    return 1.0 / b


def reliability_bins(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """The reliability diagram's figures: per equal-width bin, count, mean probability and
    observed rate (see the module docstring for the bin edges)."""
    p, y = _arrays(probabilities, labels, "probabilities")
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    if p.min() < 0 or p.max() > 1:
        raise InputError("probabilities must lie in [0, 1]")
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = index == b
        n = int(sel.sum())
        out.append(ReliabilityBin(
            lower=b / n_bins, upper=(b + 1) / n_bins, count=n,
            mean_probability=float(p[sel].mean()) if n else None,
            observed_rate=float(y[sel].mean()) if n else None,
        ))
    return out


def expected_calibration_error(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = DEFAULT_BINS
) -> float:
    """``sum_b (n_b / N) |mean probability_b - observed rate_b|`` over :func:`reliability_bins`."""
    bins = reliability_bins(probabilities, labels, n_bins)
    total = sum(b.count for b in bins)
    return float(sum(
        b.count / total * abs(float(b.mean_probability) - float(b.observed_rate))
        for b in bins if b.count and b.mean_probability is not None and b.observed_rate is not None
    ))


def calibration_report(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    temperature: float,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """ECE, NLL and reliability bins of ``logits`` before (``T = 1``) and after ``temperature``
    (JSON-serialisable; the model card prints it)."""
    z, y = _arrays(logits, labels, "logits")
    before = apply_temperature(z, 1.0)
    after = apply_temperature(z, temperature)
    return {
        "n_levels": int(y.size),
        "n_fractured": int(y.sum()),
        "n_bins": n_bins,
        "ece_before": round(expected_calibration_error(before, y, n_bins), 4),
        "ece_after": round(expected_calibration_error(after, y, n_bins), 4),
        "nll_before": round(nll(z, y, 1.0), 4),
        "nll_after": round(nll(z, y, temperature), 4),
        "reliability_before": [_rounded(b) for b in reliability_bins(before, y, n_bins)],
        "reliability_after": [_rounded(b) for b in reliability_bins(after, y, n_bins)],
    }


def _rounded(b: ReliabilityBin) -> dict[str, Any]:
    d = b.as_dict()
    for key in ("lower", "upper", "mean_probability", "observed_rate"):
        if d[key] is not None:
            d[key] = round(float(d[key]), 4)
    return d


def reliability_table(bins: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows of a reliability table (bins as :func:`calibration_report` writes them);
    empty bins are left out."""
    rows = ["| P(fracture) bin | levels | mean P(fracture) | observed fracture rate |",
            "|---|---|---|---|"]
    for b in bins:
        if not b.get("count"):
            continue
        rows.append(f"| {b['lower']:.1f}–{b['upper']:.1f} | {b['count']} | "
                    f"{b['mean_probability']:.4f} | {b['observed_rate']:.4f} |")
    return rows
