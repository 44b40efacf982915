"""Whole-spine labelling experiment: the anatomical-order post-processing on synthetic label maps,
and a tiny coarse-to-fine training run on tiny phantoms of all three regions."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spine_core.inference.wholespine.model import WholeSpineConfig
from spine_core.inference.wholespine.order import CHAIN, order_levels, viterbi_levels
from spine_core.inference.wholespine.train import (
    WholeSpineSettings,
    add_whole_spine_arguments,
    load_whole_spine,
    train_whole_spine,
    whole_spine_settings_from_args,
)
from spine_core.labels import level_id


def _stack(levels: list[int], height: int = 8, gap: int = 2) -> np.ndarray:
    """Blocks of the given labels, the first at the top (axis 0 points to the head)."""
    step = height + gap
    n = step * len(levels)
    lab = np.zeros((n, 10, 10), dtype=np.uint8)
    for k, v in enumerate(levels):
        top = n - k * step
        lab[top - height:top, 2:8, 2:8] = v
    return lab


def _read(lab: np.ndarray, count: int, height: int = 8, gap: int = 2) -> list[int]:
    step = height + gap
    n = step * count
    return [int(lab[n - k * step - height // 2, 5, 5]) for k in range(count)]


def _ids(*names: str) -> list[int]:
    return [level_id(n) for n in names]


def test_order_renames_a_shuffled_labelling_to_consecutive_levels() -> None:
    shuffled = _ids("C1", "C2", "C3", "C5", "C4", "C6", "C7")
    out, renamed = order_levels(_stack(shuffled))
    assert _read(out, 7) == _ids("C1", "C2", "C3", "C4", "C5", "C6", "C7")
    assert renamed == {level_id("C5"): level_id("C4"), level_id("C4"): level_id("C5")}


def test_order_keeps_transitional_anatomy_and_fixes_a_repeated_level() -> None:
    # Six lumbar vertebrae between the last rib-bearing one and the sacrum: the repeated L5 is L6.
    l6 = _ids("T11", "T12", "L1", "L2", "L3", "L4", "L5", "L5", "S")
    out, _ = order_levels(_stack(l6))
    assert _read(out, 9) == _ids("T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "S")
    # T13 and eleven rib-bearing vertebrae are anatomy, not errors: kept as they are.
    t13 = _ids("T11", "T12", "T13", "L1", "L2")
    assert _read(order_levels(_stack(t13))[0], 5) == t13
    eleven = _ids("T10", "T11", "L1", "L2")
    assert _read(order_levels(_stack(eleven))[0], 4) == eleven
    # A doubled T12 in a normal spine becomes L1 and shifts nothing else.
    doubled = _ids("T10", "T11", "T12", "T12", "L2", "L3")
    assert _read(order_levels(_stack(doubled))[0], 6) == _ids("T10", "T11", "T12", "L1", "L2", "L3")


def test_order_follows_the_networks_probabilities_from_an_anchor() -> None:
    # The network is sure of the sacrum and hesitates, one level too high, on the lumbar run.
    names = ["L1", "L2", "L3", "L4", "L5", "S"]
    lab = _stack(_ids("T12", "L1", "L2", "L3", "L4", "S"))
    channels = (0, *sorted(CHAIN))
    probs = np.zeros((len(channels), *lab.shape), dtype=np.float32)
    n = lab.shape[0]
    for k, name in enumerate(names):
        top = n - k * 10
        block = (slice(top - 8, top), slice(2, 8), slice(2, 8))
        truth = channels.index(level_id(name))
        if name == "S":
            probs[truth][block] = 0.98
        else:
            probs[truth][block] = 0.45
            probs[truth - 1][block] = 0.55  # the level above wins the argmax
    out, _ = order_levels(lab, (1.0, 1.0, 1.0), probs, channels)
    assert _read(out, 6) == _ids(*names)


def test_viterbi_levels_are_consecutive_and_empty_input_is_empty() -> None:
    costs = np.full((3, len(CHAIN)), 5.0)
    costs[0, 0] = costs[1, 0] = costs[2, 2] = 0.0  # argmax: C1, C1, C3
    assert viterbi_levels(costs) == [1, 2, 3]
    assert viterbi_levels(np.zeros((0, len(CHAIN)))) == []


def test_order_drops_small_fragments() -> None:
    lab = _stack(_ids("C3", "C4", "C5"))
    lab[0, 0, 0] = level_id("T8")  # a one-voxel fragment far from the spine
    out, _ = order_levels(lab)
    assert int((out == level_id("T8")).sum()) == 0
    assert _read(out, 3) == _ids("C3", "C4", "C5")


def _tiny(tmp_path: Path) -> WholeSpineSettings:
    shapes = {"cervical": (64, 64, 64), "thoracolumbar": (96, 64, 64), "whole": (128, 64, 64)}
    return WholeSpineSettings(
        n_train=6, n_val=3, seed=5, threads=1, budget_minutes=3.0, max_iterations=40,
        eval_seconds_per_study=1.0, train_shapes=shapes, val_shapes=shapes,
        config=WholeSpineConfig(coarse_mm=4.0, coarse_roi=(48, 32, 32), fine_roi=(48, 48, 48),
                                overlap=0.0),
        coarse_network={"arch": "monai.UNet", "params": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": 28, "channels": [8, 16, 32],
            "strides": [2, 2], "num_res_units": 0, "norm": "INSTANCE"}},
        fine_network={"arch": "monai.UNet", "params": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
            "strides": [2, 2], "num_res_units": 0, "norm": "INSTANCE"}},
    )


def test_tiny_training_beats_a_trivial_labelling_and_reloads(tmp_path: Path) -> None:
    from spine_core.inference.wholespine.data import region_study

    s = _tiny(tmp_path)
    report = train_whole_spine(tmp_path, s, log=None)
    names = {p.name for p in report.files}
    assert {"wholespine_coarse.json", "wholespine_fine.json", "wholespine_report.json"} <= names
    assert set(report.metrics["regions"]) == {"cervical", "thoracolumbar", "whole"}
    train = report.metrics["training"]
    assert train["coarse_iterations"] == train["fine_iterations"] == 40
    assert train["coarse_loss_first_last"][1] < train["coarse_loss_first_last"][0]
    # Vertebra-vs-background Dice on an unseen study, without the ordering step (a network this
    # raw gives one blob; the ordering is tested above). Measured: 0.13-0.18 after these 40 + 40
    # iterations (both networks still over-segment); an empty labelling scores 0 and calling
    # every voxel spine ~0.024.
    labeller = load_whole_spine(tmp_path)
    labeller.config = replace(labeller.config, order=False)
    study = region_study(9001, "thoracolumbar", (96, 64, 64))
    pred = labeller.label(study.image).mask > 0
    truth = np.asarray(study.mask.array) > 0
    dice = 2.0 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
    everything = 2.0 * np.count_nonzero(truth) / (truth.size + np.count_nonzero(truth))
    assert dice > 2.5 * everything


def test_stage_option_selects_the_experiment() -> None:
    from spine_core.inference.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    add_whole_spine_arguments(parser)
    assert parser.parse_args([]).stage == "both"
    args = parser.parse_args(["--stage", "labelling-whole", "--threads", "1", "--val-studies", "6"])
    s = whole_spine_settings_from_args(args)
    assert (s.threads, s.n_val) == (1, 6)
    with pytest.raises(SystemExit):
        parser.parse_args(["--stage", "nonsense"])
