"""Re-scoring a trained radiograph model without training it again: the held-out films its card
names are made again (same seeds, regions and generator), scored by :func:`.train.evaluate` with
the current decoding, and the card's metrics, config and rule text rewritten with them. The stage
configs get the current decoding settings; the weights files are left as they are.

Usage: ``python -m spine_core.inference.xray.rescore [WEIGHTS_DIR] [--threads 1] [--dry-run]
[--seed N]``; ``--seed`` scores as many films of another seed instead (never written to the card).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from spine_core.errors import InputError
from spine_core.inference.xray.card import TARGETS, card_markdown, ensemble_rule
from spine_core.inference.xray.config import CARD_JSON, CARD_MD, DETECTOR_FILE, UNET_FILE
from spine_core.inference.xray.model import XrayModel
from spine_core.inference.xray.train import XraySettings, evaluate, phantom_films


def held_out(card: dict[str, Any], seed: int | None = None) -> list[tuple[int, str]]:
    """(seed, region) of the held-out films the card's training run scored (or as many of
    ``seed``'s held-out films)."""
    data = card["data"]
    settings = XraySettings(n_val=int(data["held_out_films"]),
                            seed=int(data["seed"]) if seed is None else seed,
                            regions=tuple(data["regions"]))
    return settings.val_films()


def rescore(folder: str | Path | None = None, threads: int = 1, write: bool = True,
            seed: int | None = None) -> dict[str, Any]:
    """The model in ``folder`` (default: the shipped weights) scored again on its card's held-out
    films (or those of another ``seed``); with ``write``, its card (JSON and Markdown) and stage
    configs are updated.

    Raises:
        InputError: ``write`` with another seed (the card names its own films).
    """
    from spine_core.inference.loading import default_weights_dir

    if write and seed is not None:
        raise InputError("films of another seed are not the card's: score them with --dry-run")

    root = Path(folder) if folder is not None else default_weights_dir()
    card = json.loads((root / CARD_JSON).read_text(encoding="utf-8"))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model = XrayModel.from_dir(root)
        make = phantom_films(1.0)
        start = time.perf_counter()
        films = [(make(s, region), region) for s, region in held_out(card, seed)]
        metrics = evaluate(model, films)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    if write:
        _write(root, card, model, metrics, threads, seconds)
    return metrics


def _write(root: Path, card: dict[str, Any], model: XrayModel, metrics: dict[str, Any], threads: int,
           seconds: float) -> None:
    config = model.config.to_dict()
    for name in (UNET_FILE, DETECTOR_FILE):  # the decoding settings; weights and checksums kept
        stage = json.loads((root / name).read_text(encoding="utf-8"))
        tail = {k: stage.pop(k) for k in ("weights", "sha256") if k in stage}
        stage = {**stage, **config, **tail}
        (root / name).write_text(json.dumps(stage, indent=2) + "\n", encoding="utf-8")
    ens = metrics.get("ensemble", {})
    card.update({
        "config": config, "ensemble_rule": ensemble_rule(), "metrics": metrics,
        "targets_met": {k: bool(ens.get(k, 0.0) >= v) for k, v in TARGETS.items()},
        "rescored": {"threads": threads, "seconds": round(seconds, 1), "torch": torch.__version__,
                     "python": platform.python_version(), "machine": platform.machine(),
                     "note": "held-out films scored again with the current decoding; weights "
                             "as trained"},
    })
    (root / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (root / CARD_MD).write_text(card_markdown(card), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", help="weights folder (default: the shipped weights)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    parser.add_argument("--seed", type=int, default=None,
                        help="score the held-out films of this seed instead (with --dry-run)")
    args = parser.parse_args(argv)
    print(json.dumps(rescore(args.folder, args.threads, write=not args.dry_run, seed=args.seed),
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
