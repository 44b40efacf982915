"""Training and evaluation of the whole-spine labelling experiment (``spine train --stage
labelling-whole``).

Studies of the three regions (cervical, thoracolumbar, whole spine; a share of them with forced
transitional anatomy) are generated once, brought onto the coarse and fine grids, and the two
networks of :mod:`.model` are trained by :func:`train_timed` (the CT loss and batches, a cosine
schedule over each network's share of the time budget, so it completes on a loaded CPU).
Held-out studies of every region, transitional ones included, are labelled and scored: Dice
per level on the input grid, VerSe identification rate (centroid within 20 mm), seconds per
study for the networks and for the post-processing. Weights, config and the report go to
``out_dir`` — never to the shipped weights folder.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spine_core.errors import InputError
from spine_core.inference.checkpoint import EVERY_S, TrainingCheckpoint, save_on_sigterm
from spine_core.inference.networks import build_network
from spine_core.inference.train.data import Log
from spine_core.inference.train.loop import Batch, PhaseLog, _augment_intensity, segmentation_loss
from spine_core.inference.wholespine.data import (
    TRANSITIONAL,
    RegionStudy,
    Sample,
    coarse_sample,
    crop_around,
    fine_sample,
    region_study,
)
from spine_core.inference.wholespine.model import (
    WholeSpineConfig,
    WholeSpineLabeller,
    coarse_spec,
    fine_spec,
)
from spine_core.labels import level_name

REGION_ORDER: tuple[str, ...] = ("cervical", "thoracolumbar", "whole")


@dataclass
class WholeSpineSettings:
    """One whole-spine training run (written into the report)."""

    n_train: int = 48
    n_val: int = 15
    seed: int = 2022
    threads: int = 1
    budget_minutes: float = 24.0
    coarse_share: float = 0.85  # of the training time; the rest trains the fine network
    fine: bool = True
    batch_size: int = 2
    coarse_lr: float = 3e-3
    fine_lr: float = 3e-3
    max_iterations: int = 5000
    transitional_share: float = 0.34  # of thoracolumbar / whole training studies
    train_shapes: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        "cervical": (128, 160, 160), "thoracolumbar": (256, 160, 160), "whole": (352, 160, 160)})
    val_shapes: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        "cervical": (200, 256, 256), "thoracolumbar": (320, 224, 224), "whole": (448, 224, 224)})
    config: WholeSpineConfig = field(default_factory=WholeSpineConfig)
    coarse_network: dict[str, Any] = field(default_factory=coarse_spec)
    fine_network: dict[str, Any] = field(default_factory=fine_spec)
    eval_seconds_per_study: float = 8.0  # reserved from the budget for the held-out studies

    def plan(self, n: int, offset: int, share: float) -> list[tuple[int, str, str | None]]:
        """(seed, region, forced transitional) of ``n`` studies, regions in turn."""
        out = []
        k = 0
        for i in range(n):
            region = REGION_ORDER[i % 3]
            forced = None
            if region != "cervical" and (i // 3) % max(1, round(1 / max(share, 1e-6))) == 0 and share > 0:
                forced = TRANSITIONAL[k % len(TRANSITIONAL)]
                k += 1
            out.append((self.seed * 1000 + offset + i, region, forced))
        return out

    def train_plan(self) -> list[tuple[int, str, str | None]]:
        return self.plan(self.n_train, 0, self.transitional_share)

    def val_plan(self) -> list[tuple[int, str, str | None]]:
        return self.plan(self.n_val, 600, 0.5)


#: Makes a study from (seed, region, forced transitional, shape); the tests pass tiny ones.
StudyMaker = Callable[[int, str, "str | None", tuple[int, int, int]], RegionStudy]


@dataclass
class WholeSpineReport:
    out_dir: Path
    files: list[Path]
    metrics: dict[str, Any]


def _draw(samples: Sequence[Sample], roi: Sequence[int], batch_size: int
          ) -> Callable[[np.random.Generator], Batch]:
    def draw(rng: np.random.Generator) -> Batch:
        batch = [crop_around(samples[int(rng.integers(len(samples)))], roi, rng)
                 for _ in range(batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        for i in np.nonzero(rng.random(batch_size) < 0.5)[0]:  # left-right mirror keeps levels
            x[i] = torch.flip(x[i], dims=(-1,))
            y[i] = torch.flip(y[i], dims=(-1,))
        return _augment_intensity(x, rng), y
    return draw


def train_timed(net: nn.Module, draw: Callable[[np.random.Generator], Batch],
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, budget_s: float,
                max_iterations: int, lr: float, seed: int, name: str, log: Log | None = None,
                warmup: int = 20, checkpoint: TrainingCheckpoint | None = None) -> PhaseLog:
    """Train for ``budget_s`` seconds or ``max_iterations`` steps, whichever ends first.

    AdamW with a linear warm-up, then a cosine decay over the larger of the step and the time
    fraction used, so the schedule completes even when a shared CPU runs slower than expected.
    With ``checkpoint``, the phase is saved as it trains under ``name`` and goes on from its last
    save when one is there (:mod:`spine_core.inference.checkpoint`).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    out = PhaseLog()
    step, before = 0, 0.0
    saved = checkpoint.resume(name, net, opt, rng) if checkpoint else None
    if saved is not None:
        out = PhaseLog(**saved.record)
        if saved.done:
            net.eval()
            return out
        step, before = saved.step, saved.seconds
    t0 = time.perf_counter() - before
    while step < max_iterations:
        elapsed = time.perf_counter() - t0
        frac = max(step / max_iterations, elapsed / budget_s)
        if frac >= 1.0:
            out.stopped_by_budget = True
            break
        rate = lr * (step + 1) / warmup if step < warmup else lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = rate
        x, y = draw(rng)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        out.losses.append(float(loss.detach()))
        step += 1
        if log and step % 50 == 1:
            log(f"{name} it {step} loss {out.losses[-1]:.4f} lr {rate:.2e} ({elapsed:.0f} s of {budget_s:.0f})")
        if checkpoint and checkpoint.due(name):
            out.iterations = step
            checkpoint.save(name, net, opt, rng, step=step, seconds=time.perf_counter() - t0,
                            record=asdict(out))
    out.iterations = step
    out.seconds = time.perf_counter() - t0
    if checkpoint:
        checkpoint.save(name, net, opt, rng, step=step, seconds=out.seconds,
                        record=asdict(out), done=True)
    net.eval()
    return out


def train_whole_spine(out_dir: str | Path, settings: WholeSpineSettings | None = None,
                      make: StudyMaker | None = None, log: Log | None = print, fresh: bool = False,
                      checkpoint_every_s: float = EVERY_S) -> WholeSpineReport:
    """Train the coarse (and fine) network, evaluate on held-out studies, write to ``out_dir``.

    Both networks are checkpointed in ``out_dir``; a run of the same settings started again goes
    on from there, unless ``fresh`` (:mod:`spine_core.inference.checkpoint`)."""
    s = settings or WholeSpineSettings()
    if s.n_train < 1 or s.n_val < 1:
        raise InputError(f"need training and held-out studies (got {s.n_train}, {s.n_val})")
    make_study = make or (lambda seed, region, forced, shape: region_study(seed, region, shape, forced))
    say = log or (lambda _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = TrainingCheckpoint.open(out, "whole", s, fresh=fresh, every_s=checkpoint_every_s,
                                         log=say)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, s.threads))
    start = time.perf_counter()
    try:
        coarse_samples, fine_samples = [], []
        for i, (seed, region, forced) in enumerate(s.train_plan()):
            study = make_study(seed, region, forced, s.train_shapes[region])
            coarse_samples.append(coarse_sample(study, s.config))
            if s.fine:
                fine_samples.append(fine_sample(study, s.config))
            say(f"prepared training study {i + 1}/{s.n_train} ({region}{', ' + forced if forced else ''})")
        data_s = time.perf_counter() - start
        train_s = max(20.0, s.budget_minutes * 60 - data_s - s.eval_seconds_per_study * s.n_val)
        torch.manual_seed(s.seed)
        coarse = build_network(s.coarse_network)
        draw = _draw(coarse_samples, s.config.coarse_roi, s.batch_size)
        coarse_loss = segmentation_loss
        share = s.coarse_share if s.fine else 1.0
        logs: dict[str, PhaseLog] = {}
        logs["coarse"] = train_timed(coarse, draw, coarse_loss, budget_s=share * train_s,
                                     max_iterations=s.max_iterations, lr=s.coarse_lr, seed=s.seed,
                                     name="coarse", log=say, checkpoint=checkpoint)
        fine: nn.Module | None = None
        if s.fine:
            torch.manual_seed(s.seed + 1)
            fine = build_network(s.fine_network)
            fdraw = _draw(fine_samples, s.config.fine_roi, s.batch_size)

            def fine_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return segmentation_loss(logits, y, fg_weight=3.0)

            left = max(10.0, s.budget_minutes * 60 - s.eval_seconds_per_study * s.n_val
                       - (time.perf_counter() - start))
            logs["fine"] = train_timed(fine, fdraw, fine_loss, budget_s=left,
                                       max_iterations=s.max_iterations, lr=s.fine_lr,
                                       seed=s.seed + 1, name="fine", log=say,
                                       checkpoint=checkpoint)
        del coarse_samples, fine_samples
        labeller = WholeSpineLabeller(coarse, s.config, fine)
        studies = (make_study(seed, region, forced, s.val_shapes[region]) for seed, region, forced in s.val_plan())
        metrics = evaluate_whole_spine(labeller, studies, log=say)
        total = time.perf_counter() - start
        metrics["training"] = {
            "data_seconds": round(data_s, 1), "total_seconds": round(total, 1),
            **{f"{k}_iterations": v.iterations for k, v in logs.items()},
            **{f"{k}_seconds": round(v.seconds, 1) for k, v in logs.items()},
            **{f"{k}_loss_first_last": [round(v.mean_loss(True), 4), round(v.mean_loss(False), 4)]
               for k, v in logs.items()},
        }
        files = write_whole_spine(out, s, coarse, fine, metrics)
        checkpoint.finish()
        say(f"wrote {', '.join(p.name for p in files)} to {out} in {total / 60:.1f} min")
        return WholeSpineReport(out, files, metrics)
    finally:
        torch.set_num_threads(previous)


def evaluate_whole_spine(labeller: WholeSpineLabeller, studies: Any, log: Log | None = None
                         ) -> dict[str, Any]:
    """Dice per level (input grid), identification rate and seconds per study, per region and
    overall; identification also before the ordering step (coarse grid) to show what it adds."""
    from spine_core import metrics
    from spine_core.inference.preprocess import grid_of, labels_onto
    from spine_core.inference.segmentation import centroids_of

    rows: dict[str, list[dict[str, Any]]] = {r: [] for r in REGION_ORDER}
    for study in studies:
        result = labeller.label(study.image)
        truth = np.asarray(study.mask.array)
        truth = np.where(np.isin(truth, labeller.config.labels), truth, 0).astype(np.uint8)
        levels = [int(v) for v in np.unique(truth) if v]
        dice = metrics.dice_per_label(result.mask, truth, levels)
        true_c = centroids_of(truth, grid_of(study.mask))
        ident = metrics.identification_rate(centroids_of(result.mask, grid_of(study.image)), true_c)
        coarse_truth = labels_onto(truth, study.mask.affine, result.coarse_grid)
        true_cc = centroids_of(coarse_truth, result.coarse_grid)
        raw = metrics.identification_rate(centroids_of(result.unordered, result.coarse_grid), true_cc)
        ordered = metrics.identification_rate(centroids_of(result.coarse_labels, result.coarse_grid), true_cc)
        t = result.timings
        row = {"seed": study.seed, "findings": list(study.findings), "dice": dice, "ident": ident,
               "raw": raw, "ordered": ordered,
               "network_s": t.get("coarse_network", 0.0) + t.get("fine_network", 0.0),
               "post_s": t.get("order", 0.0) + t.get("fine_post", 0.0), "pre_s": t.get("preprocess", 0.0)}
        rows[study.region].append(row)
        if log:
            wrong = [level_name(int(str(k))) for k, v in ident.identified.items() if not v]
            log(f"held-out {study.region} seed {study.seed} {list(study.findings)}: dice "
                f"{np.nanmean(list(dice.values())):.3f}, identified {ident.hits}/{ident.n_true}"
                f"{' missed ' + ','.join(wrong) if wrong else ''}; network {row['network_s']:.2f} s, "
                f"post {row['post_s']:.2f} s")
    out: dict[str, Any] = {"regions": {}}
    for region, items in rows.items():
        if items:
            out["regions"][region] = _summary(items)
    out["overall"] = _summary([r for items in rows.values() for r in items])
    return out


def _summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    from spine_core import metrics

    per_level: dict[int, list[float]] = {}
    for r in items:
        for lid, v in r["dice"].items():
            if not math.isnan(v):
                per_level.setdefault(lid, []).append(v)
    dice_level = {level_name(k): round(float(np.mean(v)), 4) for k, v in sorted(per_level.items())}
    transitional = [r for r in items if r["findings"]]
    worst = min(dice_level.items(), key=lambda kv: kv[1]) if dice_level else ("", float("nan"))
    return {
        "n_studies": len(items),
        "dice_mean": round(float(np.mean(list(dice_level.values()))), 4) if dice_level else None,
        "dice_min_level": [worst[0], worst[1]],
        "dice_per_level": dice_level,
        "identification_rate": round(metrics.pooled_identification_rate(r["ident"] for r in items), 4),
        "identification_rate_transitional": (
            round(metrics.pooled_identification_rate(r["ident"] for r in transitional), 4)
            if transitional else None),
        "coarse_identification_before_order": round(
            metrics.pooled_identification_rate(r["raw"] for r in items), 4),
        "coarse_identification_after_order": round(
            metrics.pooled_identification_rate(r["ordered"] for r in items), 4),
        "network_seconds_mean": round(float(np.mean([r["network_s"] for r in items])), 3),
        "postprocess_seconds_mean": round(float(np.mean([r["post_s"] for r in items])), 3),
        "preprocess_seconds_mean": round(float(np.mean([r["pre_s"] for r in items])), 3),
    }


def write_whole_spine(out: Path, s: WholeSpineSettings, coarse: nn.Module, fine: nn.Module | None,
                      metrics: dict[str, Any]) -> list[Path]:
    """``wholespine_coarse.json/.pt``, ``wholespine_fine.json/.pt`` and ``wholespine_report.json``."""
    from spine_core.inference.loading import save_state_dict

    base = {"task": "wholespine-labelling", "experiment": True, **s.config.to_dict()}
    files = []
    p = save_state_dict(coarse, {**base, "stage": "coarse", "network": s.coarse_network},
                        out / "wholespine_coarse.json", half=True)
    files += [p, p.with_suffix(".pt")]
    if fine is not None:
        p = save_state_dict(fine, {**base, "stage": "fine", "network": s.fine_network},
                            out / "wholespine_fine.json", half=True)
        files += [p, p.with_suffix(".pt")]
    settings = asdict(s)
    report = out / "wholespine_report.json"
    report.write_text(json.dumps({"note": "experiment on synthetic phantoms only; not the shipped "
                                          "model", "settings": settings, "metrics": metrics},
                                 indent=2, default=str) + "\n", encoding="utf-8")
    return [*files, report]


def load_whole_spine(folder: str | Path, device: torch.device = torch.device("cpu")) -> WholeSpineLabeller:
    """The labeller written by :func:`train_whole_spine` into ``folder``."""
    from spine_core.inference.loading import load_state_dict_model

    d = Path(folder)
    coarse = load_state_dict_model(d / "wholespine_coarse.json")
    fine_json = d / "wholespine_fine.json"
    fine = load_state_dict_model(fine_json).net if fine_json.exists() else None
    return WholeSpineLabeller(coarse.net, WholeSpineConfig.from_dict(coarse.config), fine, device)


# ------------------------------------------------------------------------------------------- CLI

#: Values of ``spine train --stage``: both CT stages (the default) or this experiment.
STAGES: tuple[str, ...] = ("both", "labelling-whole")


def add_whole_spine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--stage`` of ``spine train`` (the shared options come from the CT module)."""
    parser.add_argument("--stage", choices=STAGES, default="both",
                        help="both (default): the shipped CT segmentation + fracture stages; "
                             "labelling-whole: the whole-spine labelling experiment (C1-L6, T13, "
                             "sacrum; cervical, thoracolumbar and whole-spine phantoms), written "
                             "as wholespine_* files with a report")


def whole_spine_settings_from_args(args: argparse.Namespace) -> WholeSpineSettings:
    return WholeSpineSettings(n_train=args.train_studies, n_val=args.val_studies, seed=args.seed,
                              threads=args.threads, budget_minutes=args.budget_minutes)


def run_whole_spine_from_args(args: argparse.Namespace) -> int:
    """Handler body of ``spine train --stage labelling-whole``."""
    save_on_sigterm()
    report = train_whole_spine(args.out, whole_spine_settings_from_args(args),
                               fresh=bool(getattr(args, "fresh", False)))
    print(json.dumps(report.metrics, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from spine_core.inference.train.run import add_arguments

    parser = argparse.ArgumentParser(prog="python -m spine_core.inference.wholespine", description=__doc__)
    add_arguments(parser)
    add_whole_spine_arguments(parser)
    return run_whole_spine_from_args(parser.parse_args(argv))
