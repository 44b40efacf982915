"""Re-scoring the radiograph model: the card's held-out films, and the card and stage configs
rewritten with the weights and their checksums kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spine_core.errors import InputError
from spine_core.inference.loading import default_weights_dir
from spine_core.inference.xray.config import CARD_JSON, CARD_MD, DETECTOR_FILE, UNET_FILE
from spine_core.inference.xray.model import XrayModel
from spine_core.inference.xray.rescore import _write, held_out, rescore

FILES = (UNET_FILE, DETECTOR_FILE, "xray_unet.pt", "xray_detector.pt", CARD_JSON, CARD_MD)


def test_held_out_films_are_the_cards_own() -> None:
    card = {"data": {"held_out_films": 4, "seed": 2022, "regions": ["cervical", "lumbar"]}}
    assert held_out(card) == [(2022500, "cervical"), (2022501, "lumbar"), (2022502, "cervical"),
                              (2022503, "lumbar")]
    assert held_out(card, seed=2031)[:2] == [(2031500, "cervical"), (2031501, "lumbar")]


def test_films_of_another_seed_are_never_written_to_the_card() -> None:
    with pytest.raises(InputError, match="dry-run"):
        rescore(threads=1, write=True, seed=2031)


def test_rescoring_rewrites_card_and_configs_but_keeps_the_weights(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(default_weights_dir() / name, tmp_path / name)
    before = {n: json.loads((tmp_path / n).read_text()) for n in (UNET_FILE, DETECTOR_FILE)}
    model = XrayModel.from_dir(tmp_path)
    block = {"dice_mean": 0.5, "labelling_accuracy": 0.96, "instance_dice_mean": 0.6, "found": 1.0,
             "n_vertebrae": 3}
    metrics = {"unet": block, "detector": block, "ensemble": block, "ensemble_dice_by_level": {},
               "n_films": 1, "predict_seconds_mean": 0.1}
    _write(tmp_path, json.loads((tmp_path / CARD_JSON).read_text()), model, metrics, 1, 2.0)
    card = json.loads((tmp_path / CARD_JSON).read_text())
    assert card["metrics"]["ensemble"]["labelling_accuracy"] == 0.96
    assert card["targets_met"] == {"dice_mean": False, "labelling_accuracy": True}
    assert card["config"]["film_foreground"] == model.config.film_foreground
    assert "0.960" in (tmp_path / CARD_MD).read_text()
    for name, old in before.items():
        new = json.loads((tmp_path / name).read_text())
        assert (new["sha256"], new["weights"], new["network"]) == (old["sha256"], old["weights"],
                                                                 old["network"])
        assert new["spine_distance"] == model.config.spine_distance
    assert XrayModel.from_dir(tmp_path).config == model.config  # loads, checksums verified
