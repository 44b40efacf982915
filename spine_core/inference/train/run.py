"""Training of both stages on studies generated on the fly (``spine train``).

The demo weights are trained on synthetic phantom studies (:mod:`spine_core.phantom`) only: the
resulting models are for demonstrations and tests, never for patients. The same code trains on
any :class:`LabelledStudy` source (e.g. tiny phantoms in the tests).

Pipeline: each training study is generated once and kept in memory; it is converted exactly as
inference converts it to the model-grid image and label map the segmentation network trains on. The
trained segmentation network then segments every training study, and jittered per-vertebra crops of
its *predicted* masks are what the fracture classifier trains on. Held-out studies are run through
the full two-stage pipeline and scored with :mod:`spine_core.metrics`; the weights, their configs
and a model card are written to ``out_dir``. Before that, the fracture stage's temperature
(:mod:`spine_core.inference.calibration`) is fitted on a calibration split of its own (natural
studies, ``TrainSettings.cal_seeds``), stored in ``fracture.json``, and its expected calibration
error before and after is measured on the held-out studies for the model card.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spine_core.errors import InputError
from spine_core.inference.checkpoint import EVERY_S, TrainingCheckpoint, save_on_sigterm
from spine_core.inference.detector import STAGE as DETECTOR_STAGE
from spine_core.inference.detector import BoxDetector, DetectorConfig
from spine_core.inference.fracture import FractureModel
from spine_core.inference.loading import save_state_dict
from spine_core.inference.networks import build_network
from spine_core.inference.segmentation import SegmentationModel
from spine_core.inference.train.data import (
    _NO_MASK,
    CropSet,
    LabelledStudy,
    Log,
    SegSample,
    StudySource,
    phantom_source,
    prepare_fracture,
    prepare_segmentation,
)
from spine_core.inference.train.evaluation import (
    LevelScores,
    calibration_summary,
    evaluate,
    fit_calibration,
    score_levels,
)
from spine_core.inference.train.loop import (
    PhaseLog,
    train_detector,
    train_fracture,
    train_segmentation,
)
from spine_core.inference.train.model_card import build_card, card_markdown
from spine_core.inference.train.settings import TrainSettings
from spine_core.labels import level_name

#: Time reserved per calibration study (generate, segment, score), in seconds.
CALIBRATION_SECONDS_PER_STUDY = 5.0


@dataclass
class TrainReport:
    out_dir: Path
    files: list[Path]
    metrics: dict[str, Any]
    card: dict[str, Any]


def train(
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    source: StudySource | None = None,
    log: Log | None = print,
    fresh: bool = False,
    checkpoint_every_s: float = EVERY_S,
) -> TrainReport:
    """Train both stages and write weights, configs and the model card to ``out_dir``.

    ``source`` makes a study from a seed (default: the phantom at ``settings.shape``). Training
    stops a phase early if it would overrun its share of ``settings.budget_minutes`` (recorded).
    Both phases are checkpointed in ``out_dir`` every ``checkpoint_every_s`` seconds; a run of the
    same settings started again goes on from there, unless ``fresh``
    (:mod:`spine_core.inference.checkpoint`).
    """
    s = settings or TrainSettings()
    if s.n_train < 1 or s.n_val < 1:
        raise InputError(f"need at least one training and one validation study (got {s.n_train}, {s.n_val})")
    if s.n_cal < 0:
        raise InputError(f"calibration studies cannot be negative (got {s.n_cal})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make = source or phantom_source(s.shape, enrich=s.enrich_fractures)
    make_val = source or phantom_source(s.shape)
    from spine_core.inference.local import resolve_device

    device = resolve_device(s.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, s.threads))
    start = time.perf_counter()
    budget = s.budget_minutes * 60.0
    say = log or (lambda _m: None)
    checkpoint = TrainingCheckpoint.open(out, "ct", s, fresh=fresh, every_s=checkpoint_every_s,
                                         log=say)
    try:
        studies: list[LabelledStudy] = []
        seg_samples: list[SegSample] = []
        n_fractured_train = 0
        for i, seed in enumerate(s.train_seeds()):
            study = make(seed)
            seg_samples.append(prepare_segmentation(study, s.seg_config))
            # Only the image, the fractured levels and their boxes are needed later (crops of
            # predicted masks).
            studies.append(LabelledStudy(study.image, _NO_MASK, study.fractured, study.seed, study.boxes))
            n_fractured_train += len(study.fractured)
            say(f"prepared training study {i + 1}/{s.n_train} (seed {seed})")
        data_seconds = time.perf_counter() - start

        remaining = budget - data_seconds
        # held-out evaluation, plus the calibration split (generated, segmented and scored)
        eval_reserve = 0.15 * budget + CALIBRATION_SECONDS_PER_STUDY * s.n_cal
        crop_reserve = 2.5 * s.n_train  # seconds to segment the training studies for the crops
        train_budget = max(30.0, remaining - eval_reserve - crop_reserve)
        torch.manual_seed(s.seed)  # the networks' initial weights too: one seed, one run
        seg_net = build_network(s.seg_spec)
        seg_log = train_segmentation(
            seg_net, seg_samples, s.train_roi or s.seg_config.roi_size, s.seg_iterations,
            batch_size=s.seg_batch_size, lr=s.seg_lr, seed=s.seed, device=device,
            budget_s=0.6 * train_budget, log=say, checkpoint=checkpoint,
        )
        del seg_samples
        seg_model = SegmentationModel(seg_net, s.seg_config, device, amp=True)
        crop_rng = np.random.default_rng([s.seed, 1])
        crop_sets = []
        for i, study in enumerate(studies):
            crop_sets.append(prepare_fracture(study, s.seg_config, s.frac_config, crop_rng,
                                              s.crops_per_level, segmentation=seg_model))
            say(f"cropped training study {i + 1}/{s.n_train} from its predicted mask")
        del studies
        crops = CropSet.concat(crop_sets, s.frac_config)
        del crop_sets
        torch.manual_seed(s.seed + 1)
        frac_net = build_network(s.frac_spec)
        left = budget - eval_reserve - (time.perf_counter() - start)
        # The detector's step costs about 2.5 of the classifier's: its share of what is left.
        det_share = 0.0 if s.det_iterations <= 0 else (
            2.5 * s.det_iterations / (2.5 * s.det_iterations + s.frac_iterations))
        frac_log = train_fracture(
            frac_net, crops, s.frac_iterations, batch_size=s.frac_batch_size, lr=s.frac_lr,
            seed=s.seed + 1, device=device, budget_s=max(20.0, (1.0 - det_share) * left), log=say,
            checkpoint=checkpoint,
        )
        detector = _train_detector(s, crops, device, budget - eval_reserve - (time.perf_counter() - start),
                                   say, checkpoint)
        for net in (seg_net, frac_net, *([detector[0]] if detector else [])):
            _round_to_half(net)  # evaluate exactly what is shipped (float16 storage)
        frac_model = FractureModel(frac_net, s.frac_config, device, amp=True,
                                   detector=_box_detector(s, detector, device))
        fitted = score_levels(seg_model, frac_model, (make_val(seed) for seed in s.cal_seeds()), say)
        temperature, note = fit_calibration(fitted) if s.n_cal else (1.0, "not fitted: no calibration studies")
        say(f"fracture temperature {temperature:.4f} fitted on {len(fitted.seeds)} studies"
            + (f" ({note})" if note else ""))
        s = replace(s, frac_config=replace(s.frac_config, temperature=temperature))
        frac_model = FractureModel(frac_net, s.frac_config, device, amp=True,
                                   detector=_box_detector(s, detector, device))
        prior = float(np.mean([s.frac_config.prior_for(level_name(lid)) for lid in range(1, 8)]))
        measured = LevelScores()
        val_metrics = evaluate(
            seg_model, frac_model, (make_val(seed) for seed in s.val_seeds()), prior=prior, log=say,
            scores=measured,
        )
        calibration = calibration_summary(temperature, fitted, measured, note)
        total = time.perf_counter() - start
        files = _write_outputs(out, s, seg_net, frac_net, seg_log, frac_log, val_metrics,
                               data_seconds, total, n_fractured_train, crops, calibration, detector)
        card = json.loads((out / "model_card.json").read_text())
        checkpoint.finish()
        say(f"wrote {', '.join(p.name for p in files)} to {out} in {total / 60:.1f} min")
        return TrainReport(out, files, val_metrics, card)
    finally:
        torch.set_num_threads(previous_threads)


def _train_detector(
    s: TrainSettings, crops: CropSet, device: torch.device, budget_s: float, say: Log,
    checkpoint: TrainingCheckpoint,
) -> tuple[nn.Module, PhaseLog] | None:
    """The box detector trained on the crops' true boxes; None when ``s.det_iterations`` is 0 or
    no training crop has a box (boxes then come from Grad-CAM)."""
    if s.det_iterations <= 0:
        return None
    if crops.box_rows.numel() == 0:
        say("boxes: no training crop has a true fracture box, so no box detector is trained")
        return None
    torch.manual_seed(s.seed + 2)
    net = build_network(s.det_spec)
    log = train_detector(
        net, crops, s.det_iterations, batch_size=s.det_batch_size, lr=s.det_lr,
        pos_weight=s.det_pos_weight, positive_share=s.det_positive_share, seed=s.seed + 2,
        device=device, budget_s=max(20.0, budget_s), log=say, checkpoint=checkpoint,
    )
    return net, log


def _box_detector(s: TrainSettings, trained: tuple[nn.Module, PhaseLog] | None,
                  device: torch.device) -> BoxDetector | None:
    return None if trained is None else BoxDetector(trained[0], detector_config(s), device, amp=True)


def detector_config(s: TrainSettings) -> DetectorConfig:
    """The box detector's settings: the classifier's crops and the voxel thresholds."""
    return DetectorConfig(crop=s.frac_config.to_dict()["crop"], threshold=s.det_threshold,
                          grow_threshold=s.det_grow_threshold)


def _round_to_half(net: nn.Module) -> None:
    """Round floating-point parameters and buffers to float16 precision, in place."""
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))


def stage_configs(s: TrainSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON configs of both stages (without weights / checksums)."""
    seg = {
        "task": "segmentation",
        "name": f"{s.name}-segmentation",
        "version": s.version,
        "network": s.seg_spec,
        **s.seg_config.to_dict(),
    }
    frac = {
        "task": "fracture",
        "name": f"{s.name}-fracture",
        "version": s.version,
        "network": s.frac_spec,
        **s.frac_config.to_dict(),
    }
    return seg, frac


def _write_outputs(
    out: Path,
    s: TrainSettings,
    seg_net: nn.Module,
    frac_net: nn.Module,
    seg_log: PhaseLog,
    frac_log: PhaseLog,
    val_metrics: Mapping[str, Any],
    data_seconds: float,
    total_seconds: float,
    n_fractured_train: int,
    crops: CropSet,
    calibration: Mapping[str, Any] | None = None,
    detector: tuple[nn.Module, PhaseLog] | None = None,
) -> list[Path]:
    seg_cfg, frac_cfg = stage_configs(s)
    seg_json = save_state_dict(seg_net, seg_cfg, out / "segmentation.json", half=True)
    frac_json = save_state_dict(frac_net, frac_cfg, out / "fracture.json", half=True)
    det_files: list[Path] = []
    stale = out / f"{DETECTOR_STAGE}.json"
    if detector is not None:
        det_cfg = {"task": "fracture_boxes", "name": f"{s.name}-fracture-boxes", "version": s.version,
                   "network": s.det_spec, **detector_config(s).to_dict()}
        det_json = save_state_dict(detector[0], det_cfg, stale, half=True)
        det_files = [det_json, det_json.with_suffix(".pt")]
    elif stale.is_file():  # a detector of an earlier run would be loaded beside other weights
        stale.unlink()
        stale.with_suffix(".pt").unlink(missing_ok=True)
    card = build_card(s, seg_net, frac_net, seg_log, frac_log, val_metrics, data_seconds,
                      total_seconds, n_fractured_train, crops, calibration, detector)
    card_json = out / "model_card.json"
    card_json.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    card_md = out / "MODEL_CARD.md"
    card_md.write_text(card_markdown(card), encoding="utf-8")
    return [seg_json, seg_json.with_suffix(".pt"), frac_json, frac_json.with_suffix(".pt"),
            *det_files, card_json, card_md]


# ------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spine train`` (the CLI module wires the subcommand)."""
    d = TrainSettings()
    parser.add_argument("--out", default="var/models", help="output folder for weights and model card")
    parser.add_argument("--train-studies", type=int, default=d.n_train,
                        help=f"training studies (default {d.n_train})")
    parser.add_argument("--val-studies", type=int, default=d.n_val,
                        help=f"held-out studies (default {d.n_val})")
    parser.add_argument("--cal-studies", type=int, default=d.n_cal,
                        help="studies the fracture temperature is fitted on (calibration split; "
                             f"0: none, T = 1; default {d.n_cal})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"base seed (default {d.seed})")
    parser.add_argument("--shape", default="x".join(map(str, d.shape)), help="phantom SLICESxROWSxCOLS")
    parser.add_argument("--seg-iterations", type=int, default=d.seg_iterations)
    parser.add_argument("--frac-iterations", type=int, default=d.frac_iterations)
    parser.add_argument("--box-iterations", type=int, default=d.det_iterations,
                        help="iterations of the fracture box detector (0: none; boxes then come "
                             f"from the classifier's Grad-CAM; default {d.det_iterations})")
    parser.add_argument("--device", default=d.device, help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--budget-minutes", type=float, default=d.budget_minutes,
                        help="wall-clock budget; phases stop early (and say so) to keep it")
    parser.add_argument("--fresh", action="store_true",
                        help="start from the beginning: discard the checkpoint of an interrupted run "
                             "of the same options in --out (by default the run goes on from it)")



def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    try:
        shape = tuple(int(v) for v in str(args.shape).lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"--shape must be SLICESxROWSxCOLS with each at least 16, got '{args.shape}'")
    return TrainSettings(
        n_train=args.train_studies, n_val=args.val_studies, n_cal=args.cal_studies, seed=args.seed,
        shape=shape,
        seg_iterations=args.seg_iterations, frac_iterations=args.frac_iterations,
        det_iterations=getattr(args, "box_iterations", TrainSettings.det_iterations),
        device=args.device, threads=args.threads, budget_minutes=args.budget_minutes,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Handler body of ``spine train``."""
    save_on_sigterm()
    report = train(args.out, settings_from_args(args), fresh=bool(getattr(args, "fresh", False)))
    print(json.dumps(report.metrics, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spine_core.inference.train", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
