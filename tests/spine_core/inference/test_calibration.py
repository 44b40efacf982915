"""Calibration of the fracture probabilities: the maths against hand-computed values, the
temperature in the fracture config and model, and the model card's figures."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spine_cli.main import main
from spine_core.errors import InputError, ModelLoadError
from spine_core.inference.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    reliability_table,
)
from spine_core.inference.fracture import FractureConfig, FractureModel
from spine_core.inference.loading import default_weights_dir
from spine_core.inference.local import LocalPredictor
from spine_core.inference.networks import build_network
from spine_core.inference.train.evaluation import LevelScores, calibrate_weights, calibration_summary
from spine_core.inference.train.model_card import calibration_markdown

# ------------------------------------------------------------------------------ hand-computed maths

#: Four levels with logit +2 of which 3 are fractured, four with logit -2 of which 1 is.
#: NLL(b) with b = 1/T: (1/4) [3 log(1 + e^-2b) + log(1 + e^2b)]; its derivative in b is
#: (1/4) [-6 (1 - s) + 2 s] with s = sigmoid(2b), zero at s = 3/4, i.e. 2b = logit(3/4) = ln 3:
#: T* = 2 / ln 3 = 1.820478...
SYMMETRIC_LOGITS = [2, 2, 2, 2, -2, -2, -2, -2]
SYMMETRIC_LABELS = [1, 1, 1, 0, 0, 0, 0, 1]
SYMMETRIC_T = 2 / math.log(3)


def test_fit_temperature_finds_the_closed_form_optimum() -> None:
    t = fit_temperature(SYMMETRIC_LOGITS, SYMMETRIC_LABELS)
    assert t == pytest.approx(SYMMETRIC_T, rel=1e-6)
    assert t == pytest.approx(1.820478, abs=1e-6)
    # At T* the calibrated probabilities are the observed rates: 3/4 and 1/4.
    assert apply_temperature([2, -2], t) == pytest.approx([0.75, 0.25], abs=1e-7)
    # ... and the NLL is the entropy of a 3:1 split, -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335.
    assert nll(SYMMETRIC_LOGITS, SYMMETRIC_LABELS, t) == pytest.approx(0.5623351, abs=1e-6)
    # T = 1 gives sigmoid(2) = 0.8808 on the +2 levels: over-confident, NLL larger.
    # (1/4)[3 ln(1 + e^-2) + ln(1 + e^2)] = (1/4)(3 * 0.126928 + 2.126928) = 0.626928
    assert nll(SYMMETRIC_LOGITS, SYMMETRIC_LABELS, 1.0) == pytest.approx(0.626928, abs=1e-6)


def test_under_confident_logits_get_a_temperature_below_one() -> None:
    # Logits ±0.5 with 9 of 10 levels at +0.5 fractured (and 1 of 10 at -0.5):
    # sigmoid(0.5 / T) = 0.9, T* = 0.5 / ln 9 = 0.227559...
    logits = [0.5] * 10 + [-0.5] * 10
    labels = [1] * 9 + [0] + [1] + [0] * 9
    assert fit_temperature(logits, labels) == pytest.approx(0.5 / math.log(9), rel=1e-6)


def test_separable_levels_push_the_temperature_to_its_lower_bound() -> None:
    # Every fractured level above every unfractured one: the NLL falls as T -> 0.
    assert fit_temperature([3.0, 1.0, -1.0, -2.0], [1, 1, 0, 0]) == pytest.approx(TEMPERATURE_BOUNDS[0])


def test_fit_temperature_recovers_the_scale_of_over_confident_logits() -> None:
    rng = np.random.default_rng(7)
    true_logit = rng.normal(-1.0, 2.0, 20000)
    labels = (rng.random(true_logit.size) < 1 / (1 + np.exp(-true_logit))).astype(float)
    reported = 3.0 * true_logit  # a model three times too sure of itself
    t = fit_temperature(reported, labels)
    assert t == pytest.approx(3.0, abs=0.1)
    before = expected_calibration_error(apply_temperature(reported, 1.0), labels)
    after = expected_calibration_error(apply_temperature(reported, t), labels)
    assert after < 0.02 < before


@pytest.mark.parametrize("logits,labels,match", [
    ([1.0, 2.0], [0, 0], "all 2 levels are unfractured"),
    ([1.0], [1], "all 1 levels are fractured"),
    ([], [], "no logits"),
    ([1.0, 2.0], [1], "differ in length"),
    ([1.0, 2.0], [1, 2], "0 .not fractured. or 1"),
    ([1.0, float("nan")], [1, 0], "finite"),
])
def test_fit_temperature_refuses_what_it_cannot_fit(logits: list[float], labels: list[int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        fit_temperature(logits, labels)


#: Six levels in two bins ([0, 0.5) and [0.5, 1]):
#: bin 0: p = 0.05, 0.15, 0.30, 0.35 -> mean 0.2125; truth 0, 0, 1, 0 -> rate 0.25; gap 0.0375
#: bin 1: p = 0.80, 0.95 -> mean 0.875; truth 1, 1 -> rate 1.0; gap 0.125
#: ECE = 4/6 * 0.0375 + 2/6 * 0.125 = 0.025 + 0.041667 = 1/15.
#: With ten bins each level but 0.30 / 0.35 (bin 3: mean 0.325, rate 0.5) is alone:
#: ECE = (0.05 + 0.15 + 2 * 0.175 + 0.2 + 0.05) / 6 = 0.8 / 6 = 2/15.
HAND_PROBS = [0.05, 0.15, 0.30, 0.35, 0.80, 0.95]
HAND_LABELS = [0, 0, 1, 0, 1, 1]


def test_expected_calibration_error_matches_the_hand_computation() -> None:
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=2) == pytest.approx(1 / 15)
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=10) == pytest.approx(2 / 15)
    # One bin: |mean p - rate| = |2.6/6 - 3/6| = 0.4/6.
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=1) == pytest.approx(0.4 / 6)
    # Perfectly calibrated bins have no error.
    assert expected_calibration_error([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0]) == 0.0


def test_reliability_bins_give_count_mean_probability_and_observed_rate() -> None:
    low, high = reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=2)
    assert (low.lower, low.upper, low.count) == (0.0, 0.5, 4)
    assert low.mean_probability == pytest.approx(0.2125)
    assert low.observed_rate == pytest.approx(0.25)
    assert (high.lower, high.upper, high.count) == (0.5, 1.0, 2)
    assert high.mean_probability == pytest.approx(0.875)
    assert high.observed_rate == pytest.approx(1.0)
    # Edges: 0.5 opens the upper bin, 1.0 closes the last one; an empty bin has no mean.
    bins = reliability_bins([0.5, 1.0, 0.0], [1, 1, 0], n_bins=4)
    assert [b.count for b in bins] == [1, 0, 1, 1]
    assert bins[1].mean_probability is None and bins[1].observed_rate is None
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        reliability_bins([1.2], [1])


def test_calibration_report_and_its_markdown() -> None:
    t = fit_temperature(SYMMETRIC_LOGITS, SYMMETRIC_LABELS)
    report = calibration_report(SYMMETRIC_LOGITS, SYMMETRIC_LABELS, t, n_bins=10)
    # Before: p = 0.8808 (rate 0.75) and 0.1192 (rate 0.25): ECE = 0.1308; after: 0.
    assert report["ece_before"] == pytest.approx(1 / (1 + math.exp(-2)) - 0.75, abs=1e-4)
    assert report["ece_after"] == pytest.approx(0.0, abs=1e-4)
    assert report["nll_after"] < report["nll_before"]
    assert [b["count"] for b in report["reliability_after"] if b["count"]] == [4, 4]
    rows = reliability_table(report["reliability_after"])
    assert rows[2] == "| 0.2–0.3 | 4 | 0.2500 | 0.2500 |"
    assert rows[3] == "| 0.7–0.8 | 4 | 0.7500 | 0.7500 |"
    assert len(rows) == 4  # header, rule, two non-empty bins
    json.dumps(report)  # JSON-serialisable for the model card


def test_calibration_summary_renders_in_the_model_card() -> None:
    fitted = LevelScores(list(map(float, SYMMETRIC_LOGITS)), list(map(float, SYMMETRIC_LABELS)), [5, 6])
    measured = LevelScores([2.0, 2.0, -2.0, -2.0], [1.0, 0.0, 0.0, 0.0], [9])
    summary = calibration_summary(SYMMETRIC_T, fitted, measured)
    assert summary["temperature"] == round(SYMMETRIC_T, 4)
    assert summary["fitted_on"] == {"n_studies": 2, "seeds": [5, 6], "n_levels": 8, "n_fractured_levels": 4}
    text = "\n".join(calibration_markdown(summary))
    assert "Temperature T = 1.8205" in text
    assert "| expected calibration error |" in text
    assert "Reliability before calibration (T = 1); empty bins left out:" in text
    assert "| P(fracture) bin | levels | mean P(fracture) | observed fracture rate |" in text


# ------------------------------------------------------------------------------ config and model


def test_fracture_config_keeps_its_temperature_and_old_configs_load_at_one() -> None:
    config = FractureConfig(temperature=1.7)
    assert config.to_dict()["calibration"] == {"method": "temperature", "temperature": 1.7}
    assert FractureConfig.from_dict(config.to_dict()).temperature == 1.7
    old = FractureConfig().to_dict()
    del old["calibration"]  # a config written before calibration existed
    assert FractureConfig.from_dict(old).temperature == 1.0
    for bad in (0, -1, "hot", float("inf")):
        with pytest.raises(ModelLoadError, match="temperature"):
            FractureConfig.from_dict({**old, "calibration": {"temperature": bad}})


def test_the_fracture_model_divides_the_shifted_logit_by_its_temperature() -> None:
    torch.manual_seed(0)
    config = FractureConfig(crop_shape=(8, 16, 16), level_priors={"C2": 0.2, "C5": 0.05})
    net = build_network({"arch": "FractureNet", "params": {"in_channels": 3, "widths": [4, 8]}})
    crops = torch.rand(2, 3, 8, 16, 16)
    plain = FractureModel(net, config, torch.device("cpu"))
    hot = FractureModel(net, replace(config, temperature=2.5), torch.device("cpu"))
    z = plain.logits(crops)
    shifted = plain.shifted_logits(crops, [2, 5])
    assert shifted == pytest.approx(z + [math.log(0.2 / 0.8), math.log(0.05 / 0.95)])
    assert plain.probabilities(crops, [2, 5]) == pytest.approx(1 / (1 + np.exp(-shifted)))
    assert hot.probabilities(crops, [2, 5]) == pytest.approx(1 / (1 + np.exp(-shifted / 2.5)))


def test_the_shipped_fracture_config_records_a_fitted_temperature() -> None:
    config = json.loads((default_weights_dir() / "fracture.json").read_text())
    temperature = config["calibration"]["temperature"]
    assert 0.2 < temperature < 5.0
    card = json.loads((default_weights_dir() / "model_card.json").read_text())
    cal = card["calibration"]
    assert cal["temperature"] == round(temperature, 4)
    measured = cal["measured_on"]
    assert measured["ece_after"] <= measured["ece_before"]
    # Fitted and measured on studies apart from each other and from training.
    assert set(range(cal["fitted_on"]["seeds"][0], cal["fitted_on"]["seeds"][1] + 1)).isdisjoint(
        range(measured["seeds"][0], measured["seeds"][1] + 1))
    assert "Calibration of the fracture probabilities" in (default_weights_dir() / "MODEL_CARD.md").read_text()


# ------------------------------------------------------------------------------ spine calibrate

CT_FILES = ("segmentation.json", "segmentation.pt", "fracture.json", "fracture.pt", "model_card.json",
            "MODEL_CARD.md")


def test_spine_calibrate_writes_the_temperature_and_the_card(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in CT_FILES:
        shutil.copy(default_weights_dir() / name, folder / name)
    config = json.loads((folder / "fracture.json").read_text())
    config.pop("calibration", None)  # weights from before calibration existed
    (folder / "fracture.json").write_text(json.dumps(config))
    before = LocalPredictor.from_dir(folder, device="cpu").fracture
    assert before is not None and before.config.temperature == 1.0

    # Seeds 2022701-2 hold fractures at C2 and C2 + C6 (natural phantoms), 2022801 one at C2.
    status = main(["calibrate", "--models-dir", str(folder), "--studies", "2", "--test-studies", "1",
                   "--fit-seed", "2022701", "--test-seed", "2022801", "--shape", "96x128x128",
                   "--threads", "1"])
    assert status == 0
    out = capsys.readouterr().out
    assert f"written to {folder}/fracture.json" in out and "ECE" in out

    temperature = json.loads((folder / "fracture.json").read_text())["calibration"]["temperature"]
    assert TEMPERATURE_BOUNDS[0] <= temperature <= TEMPERATURE_BOUNDS[1]
    card = json.loads((folder / "model_card.json").read_text())
    cal = card["calibration"]
    assert cal["temperature"] == round(temperature, 4) and "note" not in cal
    assert cal["fitted_on"]["seeds"] == [2022701, 2022702] and cal["fitted_on"]["n_fractured_levels"] >= 1
    assert cal["measured_on"]["seeds"] == [2022801, 2022801] and cal["shape"] == [96, 128, 128]
    assert "T = the temperature" in card["stages"]["fracture"]["output"]
    assert "Calibration of the fracture probabilities" in (folder / "MODEL_CARD.md").read_text()
    # The weights are untouched (their checksum still holds) and load with the temperature.
    loaded = LocalPredictor.from_dir(folder, device="cpu")
    assert loaded.fracture is not None and loaded.fracture.config.temperature == temperature
    assert (folder / "fracture.pt").read_bytes() == (default_weights_dir() / "fracture.pt").read_bytes()


def test_spine_calibrate_refuses_overlapping_seeds(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="overlap"):
        calibrate_weights(default_weights_dir(), 3, 3, fit_seed=10, test_seed=12)
