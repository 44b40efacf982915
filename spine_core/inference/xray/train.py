"""``spine train --modality xray``: the radiograph ensemble trained on synthetic lateral films.

Films are made on the fly by :func:`~spine_core.phantom.radiograph.project_lateral` (a DRR of the
whole-spine phantom, the generator of ``spine demo --modality xray``), cervical and lumbar in turn.
Training films are projected from phantoms at ``train_phantom_scale`` of the demo's grid (faster
to make; the film's pixel size is the same); held-out films from phantoms at the demo's own grid,
so the card scores the model on what ``spine demo --modality xray`` writes. The U-Net trains first,
then the detector, each within its share of the budget; every held-out film is scored for the
U-Net alone, the detector alone and the ensemble (:mod:`.evaluate`). Weights (float16), their
configs and the card go to ``out_dir``. The models are for demonstrations and tests only.

With ``stage='unet'`` only the U-Net trains (with the whole budget); the detector's files are
copied unchanged from ``detector_from`` and the card keeps that detector's training record.
With ``soft_foreground`` the U-Net's vertebra channel learns the share of each grid pixel's film
pixels that are vertebra (area average of the film's truth) instead of the nearest film pixel's
label, so its probability, upsampled and thresholded on the film, places edges within a grid pixel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spine_core.errors import InputError
from spine_core.inference.checkpoint import EVERY_S, TrainingCheckpoint, save_on_sigterm
from spine_core.inference.loading import save_state_dict
from spine_core.inference.networks import build_network
from spine_core.inference.xray.card import build_card, card_markdown
from spine_core.inference.xray.config import (
    CARD_JSON,
    CARD_MD,
    DETECTOR_FILE,
    LUMBAR_CHANNEL,
    UNET_FILE,
    XrayConfig,
    default_detector_spec,
    default_unet_spec,
)
from spine_core.inference.xray.evaluate import VertebraScore, dice_by_level, score_film, summarise
from spine_core.inference.xray.grid import detector_input, film_to_grid, labels_to_grid, make_targets
from spine_core.inference.xray.loop import (
    FilmSet,
    Log,
    PhaseLog,
    detector_loss,
    resolve_precision,
    train_phase,
    unet_loss,
)
from spine_core.inference.xray.model import MODES, XrayModel
from spine_core.inference.xray.weights import load_stage
from spine_core.phantom.radiograph import Radiograph
from spine_core.phantom.spine_anatomy import Transitional

#: seed, region -> film
FilmSource = Callable[[int, str], Radiograph]


@dataclass
class XraySettings:
    """Everything that shapes one radiograph training run (recorded in the model card)."""

    n_train: int = 120
    n_val: int = 10
    seed: int = 2024
    regions: tuple[str, ...] = ("cervical", "lumbar")
    train_phantom_scale: float = 0.5
    unet_iterations: int = 3000
    detector_iterations: int = 3000
    batch_size: int = 4
    lr: float = 3e-3
    unet_share: float = 0.7  # of the training time; the detector (on a smaller grid) gets the rest
    threads: int = 2
    budget_minutes: float = 19.0
    stage: str = "both"  # "unet": the U-Net alone, the detector copied from ``detector_from``
    detector_from: str | None = None  # weights folder of the kept detector (stage "unet")
    soft_foreground: bool = True  # vertebra target: area share on the grid (module docstring)
    precision: str = "fp32"  # forward pass: fp32, bf16 (CPU autocast) or auto (bf16 where native)
    transitional_share: float = 0.0  # of the lumbar training films: forced transitional anatomy
    #                                  (with the lumbar channel; measured 0.4: not shipped)
    name: str = "spinereview-xray-demo"
    version: str = "0.2.0"
    config: XrayConfig = field(default_factory=lambda: XrayConfig(
        detector_grid=128, unet_flip=True, film_foreground=0.45, loose_core_fraction=0.8,
        edge_core_fraction=0.05, keep_reference_cores=True))  # decoding tuned on the held-out
    #                                     films of seeds 2022 and 2031 (keep_reference_cores: 2040)
    unet_spec: dict[str, Any] = field(default_factory=lambda: default_unet_spec(lumbar=False))
    detector_spec: dict[str, Any] = field(default_factory=default_detector_spec)

    def train_films(self) -> list[tuple[int, str]]:
        return [(self.seed * 1000 + i, self.regions[i % len(self.regions)]) for i in range(self.n_train)]

    def val_films(self) -> list[tuple[int, str]]:
        return [(self.seed * 1000 + 500 + i, self.regions[i % len(self.regions)])
                for i in range(self.n_val)]


def forced_transitional(seed: int, region: str, share: float) -> Transitional | None:
    """The segmentation a training film's phantom is forced to (None: drawn at the realistic
    rates): ``share`` of the lumbar films, chosen per seed, get six lumbar vertebrae (half of
    them), thirteen or eleven rib-bearing vertebrae (a quarter each), so the *lumbar* channel
    learns the ribs, not the count from the sacrum."""

    if region != "lumbar" or share <= 0:
        return None
    r = np.random.default_rng([seed, 17]).random(2)
    if r[0] >= share:
        return None
    if r[1] < 0.5:
        return Transitional(n_lumbar=6)
    return Transitional(n_thoracic=13 if r[1] < 0.75 else 11)


def phantom_films(scale: float = 1.0, transitional_share: float = 0.0) -> FilmSource:
    """Films of the demo's generator, from phantoms at ``scale`` of the demo's grid
    (``transitional_share``: see :func:`forced_transitional`)."""
    from spine_core.phantom.radiograph import XRAY_REGIONS, project_lateral
    from spine_core.phantom.spine_study import generate_spine_study
    from spine_core.phantom.xray_layout import PHANTOM_SHAPES

    def make(seed: int, region: str) -> Radiograph:
        shape = tuple(max(32, int(round(v * scale))) for v in PHANTOM_SHAPES[region])
        study = generate_spine_study(seed, shape, region=XRAY_REGIONS[region],  # type: ignore[arg-type]
                                     transitional=forced_transitional(seed, region, transitional_share))
        return project_lateral(study, region, np.random.default_rng([seed, 5]))

    return make


def soft_vertebra(labels: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) share of each grid pixel's film pixels that are vertebra (area average, as
    :func:`film_to_grid` resizes the image)."""
    t = torch.from_numpy((labels > 0).astype(np.float32))[None, None]
    return F.interpolate(t, size=(grid, grid), mode="area")[0, 0].numpy()


def prepare_films(films: Sequence[Radiograph], config: XrayConfig, soft: bool = False) -> FilmSet:
    """Films on the grid with their targets (``soft``: see :func:`soft_vertebra`)."""
    images, det_images, masks, heat, size, size_mask = [], [], [], [], [], []
    d = config.det_grid
    det_config = replace(config, min_truth_px=max(1, round(config.min_truth_px * (d / config.grid) ** 2)))
    for film in films:
        x = film_to_grid(film.image, config)
        images.append(x[0])
        t = make_targets(labels_to_grid(film.labels, config.grid), config)
        if soft:
            t.masks[0] = soft_vertebra(film.labels, config.grid)
        masks.append(t.masks)
        if d != config.grid:  # the detector's targets on its own grid
            det_images.append(detector_input(x, config)[0])
            t = make_targets(labels_to_grid(film.labels, d), det_config)
        heat.append(t.heat)
        size.append(t.size)
        size_mask.append(t.size_mask)
    m, h, sz, sm = (torch.from_numpy(np.stack(a)) for a in (masks, heat, size, size_mask))
    return FilmSet(torch.stack(images), m, h, sz, sm,
                   det_images=torch.stack(det_images) if det_images else None)


@dataclass
class XrayReport:
    out_dir: Path
    files: list[Path]
    metrics: dict[str, Any]
    card: dict[str, Any]


def init_heatmap_bias(detector: torch.nn.Module, prior: float = 0.1) -> None:
    """Start the heatmap logits at ``prior`` (CenterNet's -2.19), so the focal loss starts small."""
    last = [m for m in detector.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    if last.bias is not None:
        with torch.no_grad():
            last.bias[:3] = float(np.log(prior / (1 - prior)))


#: Largest batch-norm running variance kept for float16 storage (its maximum is 65,504).
HALF_SAFE_VARIANCE = 1e4


def fit_norms_to_half(net: torch.nn.Module, limit: float = HALF_SAFE_VARIANCE) -> int:
    """Scale down each convolution that feeds a batch norm whose running variance exceeds
    ``limit`` (per channel, with the norm's running mean and variance), so the stored float16
    weights hold no infinite variance; the network's output is unchanged (a batch norm undoes a
    scale of its input). Returns how many channels were scaled.

    (Measured: a U-Net whose running variance reached 1e5 in one layer stored inf there, and
    its float16 weights gave an ensemble Dice of 0.56 against 0.87.)"""
    scaled = 0
    with torch.no_grad():
        for mod in net.modules():
            conv, adn = getattr(mod, "conv", None), getattr(mod, "adn", None)
            norm = getattr(adn, "N", None) if adn is not None else None
            if (not isinstance(conv, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
                    or not isinstance(norm, torch.nn.BatchNorm2d) or norm.running_var is None
                    or norm.running_mean is None):
                continue
            c = torch.sqrt(limit / norm.running_var.clamp(min=1e-12)).clamp(max=1.0)
            if not bool((c < 1).any()):
                continue
            shape = [1] * conv.weight.dim()
            shape[1 if isinstance(conv, torch.nn.ConvTranspose2d) else 0] = -1
            conv.weight.mul_(c.view(shape))
            if conv.bias is not None:
                conv.bias.mul_(c)
            norm.running_mean.mul_(c)
            norm.running_var.mul_(c * c)
            scaled += int((c < 1).sum())
    return scaled


def _round_to_half(net: torch.nn.Module) -> None:
    fit_norms_to_half(net)
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))


def evaluate(model: XrayModel, films: Sequence[tuple[Radiograph, str]]) -> dict[str, Any]:
    """Each mode's summary and Dice per level over held-out films, and the seconds per film."""
    scores: dict[str, list[VertebraScore]] = {m: [] for m in MODES}
    seconds = []
    for film, region in films:
        t = time.perf_counter()
        preds = model.predict_modes(film.image)
        seconds.append(time.perf_counter() - t)
        for mode, pred in preds.items():
            scores[mode] += score_film(pred, film.labels, region)
    out: dict[str, Any] = {mode: summarise(rows) for mode, rows in scores.items()}
    out["ensemble_dice_by_level"] = dice_by_level(scores["ensemble"])
    out["n_films"] = len(films)
    out["predict_seconds_mean"] = round(float(np.mean(seconds)), 3) if seconds else None
    return out


def train_xray(out_dir: str | Path, settings: XraySettings | None = None,
               source: FilmSource | None = None, val_source: FilmSource | None = None,
               log: Log | None = print, fresh: bool = False,
               checkpoint_every_s: float = EVERY_S) -> XrayReport:
    """Train both networks, score them on held-out films and write weights and card to ``out_dir``.

    ``source`` / ``val_source`` make a film from (seed, region) (default: the phantom films).
    Both networks are checkpointed in ``out_dir`` every ``checkpoint_every_s`` seconds; a run of
    the same settings started again goes on from there, unless ``fresh``
    (:mod:`spine_core.inference.checkpoint`).
    """
    s = settings or XraySettings()
    if s.n_train < 1 or s.n_val < 1:
        raise InputError(f"need at least one training and one held-out film (got {s.n_train}, {s.n_val})")
    kept = _kept_detector(s)
    s = replace(s, precision=resolve_precision(s.precision))  # the card names what ran
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make = source or phantom_films(s.train_phantom_scale, s.transitional_share)
    make_val = val_source or source or phantom_films(1.0)
    say = log or (lambda _m: None)
    checkpoint = TrainingCheckpoint.open(out, "xray", s, fresh=fresh, every_s=checkpoint_every_s,
                                         log=say)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, s.threads))
    start = time.perf_counter()
    budget = s.budget_minutes * 60.0
    try:
        films = []
        for i, (seed, region) in enumerate(s.train_films()):
            films.append(make(seed, region))
            if (i + 1) % 10 == 0 or i + 1 == s.n_train:
                say(f"made training film {i + 1}/{s.n_train}")
        train_set = prepare_films(films, s.config, s.soft_foreground)
        del films
        data_seconds = time.perf_counter() - start
        eval_reserve = 0.12 * budget + 0.1 * s.n_val
        phases = max(30.0, budget - data_seconds - eval_reserve)
        torch.manual_seed(s.seed)  # the networks' initial weights too: one seed, one run
        unet = build_network(s.unet_spec)
        unet_log = train_phase(
            unet, train_set, lambda y, b: unet_loss(y, b["masks"][:, :y.shape[1]]), s.unet_iterations, s.batch_size,
            s.lr, s.seed, (1.0 if kept else s.unet_share) * phases, "U-Net", say,
            keys=("images", "masks"), precision=s.precision, checkpoint=checkpoint)
        if kept:
            detector, det_log = kept
        else:
            torch.manual_seed(s.seed + 1)
            detector = build_network(s.detector_spec)
            init_heatmap_bias(detector)
            left = max(20.0, budget - eval_reserve - (time.perf_counter() - start))
            det_log = train_phase(
                detector, train_set, lambda y, b: detector_loss(y, b["heat"], b["size"], b["size_mask"]),
                s.detector_iterations, s.batch_size, s.lr, s.seed + 1, left, "detector", say,
                keys=("det_images" if train_set.det_images is not None else "images", "heat", "size",
                      "size_mask"), precision=s.precision, checkpoint=checkpoint)
        del train_set
        for net in (unet, detector):  # score exactly what is shipped (float16 storage)
            _round_to_half(net)
        model = XrayModel(unet, detector, s.config)
        val = [(make_val(seed, region), region) for seed, region in s.val_films()]
        say(f"made {len(val)} held-out films; scoring")
        metrics = evaluate(model, val)
        total = time.perf_counter() - start
        files = _write(out, s, unet, detector, unet_log, det_log, metrics, data_seconds, total)
        card = json.loads((out / CARD_JSON).read_text())
        checkpoint.finish()
        say(f"wrote {', '.join(p.name for p in files)} to {out} in {total / 60:.1f} min")
        return XrayReport(out, files, metrics, card)
    finally:
        torch.set_num_threads(previous)


def _kept_detector(s: XraySettings) -> tuple[torch.nn.Module, PhaseLog] | None:
    """Stage 'unet': the detector of ``s.detector_from`` and its training record from that
    folder's card (None for stage 'both').

    Raises:
        InputError: an unknown stage, stage 'unet' without a detector folder, or a detector
            whose grids differ from the run's config.
    """
    if s.stage == "both":
        return None
    if s.stage != "unet":
        raise InputError(f"radiograph training stage {s.stage!r}: choose both or unet")
    if not s.detector_from:
        raise InputError("stage 'unet' keeps a trained detector: name its weights folder")
    root = Path(s.detector_from)
    detector, stage = load_stage(root / DETECTOR_FILE, "xray-detector")
    theirs = XrayConfig.from_dict(stage)
    if (theirs.grid, theirs.det_grid) != (s.config.grid, s.config.det_grid):
        raise InputError(f"the kept detector reads a {theirs.det_grid} grid of a {theirs.grid} grid, "
                         f"this run's config a {s.config.det_grid} grid of {s.config.grid}")
    record = PhaseLog()
    card = root / CARD_JSON
    if card.is_file():
        done = json.loads(card.read_text(encoding="utf-8"))["networks"]["detector"]["training"]
        record = PhaseLog(iterations=int(done["iterations"]), seconds=float(done["seconds"]),
                          first_loss=float(done["first_loss"]), last_loss=float(done["last_loss"]),
                          stopped_early=bool(done["stopped_early"]))
    return detector, record


def _write(out: Path, s: XraySettings, unet: torch.nn.Module, detector: torch.nn.Module,
           unet_log: PhaseLog, det_log: PhaseLog, metrics: dict[str, Any], data_seconds: float,
           total: float) -> list[Path]:
    common = {"version": s.version, **s.config.to_dict()}
    unet_json = save_state_dict(unet, {"task": "xray-unet", "name": s.name, "network": s.unet_spec,
                                       **common}, out / UNET_FILE, half=True)
    if s.stage == "unet" and s.detector_from:  # the kept detector's files, byte for byte
        det_json = out / DETECTOR_FILE
        src = Path(s.detector_from) / DETECTOR_FILE
        if src.resolve() != det_json.resolve():
            shutil.copyfile(src, det_json)
            stage = json.loads(src.read_text(encoding="utf-8"))
            shutil.copyfile(src.parent / stage["weights"], det_json.with_suffix(".pt"))
    else:
        det_json = save_state_dict(detector, {"task": "xray-detector", "name": s.name,
                                              "network": s.detector_spec, **common},
                                   out / DETECTOR_FILE, half=True)
    settings = asdict(s)
    card = build_card(settings, unet, detector, unet_log, det_log, metrics, data_seconds, total)
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / CARD_MD).write_text(card_markdown(card), encoding="utf-8")
    return [unet_json, unet_json.with_suffix(".pt"), det_json, det_json.with_suffix(".pt"),
            out / CARD_JSON, out / CARD_MD]


# ------------------------------------------------------------------------------------------- CLI


def add_xray_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``spine train`` adds for radiographs (the shared ones come from CT's module)."""
    d = XraySettings()
    parser.add_argument("--modality", choices=["ct", "xray"], default="ct",
                        help="ct (default): the CT segmentation and fracture models; xray: the "
                             "radiograph U-Net + detector ensemble (written as xray_* files)")
    parser.add_argument("--unet-iterations", type=int, default=d.unet_iterations,
                        help=f"xray: U-Net iterations (default {d.unet_iterations})")
    parser.add_argument("--detector-iterations", type=int, default=d.detector_iterations,
                        help=f"xray: detector iterations (default {d.detector_iterations})")
    parser.add_argument("--xray-train-films", type=int, default=d.n_train,
                        help=f"xray: training films (default {d.n_train}); --val-studies is the "
                             "held-out count")
    parser.add_argument("--xray-stage", choices=["both", "unet"], default="unet",
                        help="xray: unet (default): the U-Net alone with the whole budget, the "
                             "detector kept from --xray-detector-from (the shipped model's "
                             "recipe); both: both networks")
    parser.add_argument("--xray-detector-from", metavar="DIR", default=None,
                        help="xray, --xray-stage unet: weights folder whose detector is kept "
                             "(default: the shipped weights)")
    parser.add_argument("--xray-soft-foreground", action=argparse.BooleanOptionalAction,
                        default=d.soft_foreground,
                        help="xray: the U-Net's vertebra channel learns each grid pixel's vertebra "
                             "share (area average) instead of the nearest film pixel's label "
                             f"(default {'on' if d.soft_foreground else 'off'})")
    parser.add_argument("--xray-lumbar-channel", action=argparse.BooleanOptionalAction,
                        default=d.unet_spec["params"]["out_channels"] > LUMBAR_CHANNEL,
                        help="xray: the U-Net learns a lumbar channel (vertebrae without ribs), so "
                             "six lumbar vertebrae above the sacrum are labelled L1-L6")
    parser.add_argument("--xray-transitional-share", type=float, default=d.transitional_share,
                        help="xray: share of the lumbar training films with a forced transitional "
                             f"spine (default {d.transitional_share})")
    parser.add_argument("--xray-precision", choices=["auto", "bf16", "fp32"], default=d.precision,
                        help=f"xray: forward pass precision in training (default {d.precision}; "
                             "bf16: CPU bfloat16 autocast, about twice the iterations where the CPU "
                             "has bfloat16 units; auto: bf16 there, else fp32)")


def xray_settings_from_args(args: argparse.Namespace) -> XraySettings:
    d = XraySettings()
    if args.device not in ("cpu", "auto"):
        raise InputError("the radiograph model trains on the CPU: leave out --device")
    stage = getattr(args, "xray_stage", "unet")
    detector_from = getattr(args, "xray_detector_from", None)
    if stage == "unet" and not detector_from:
        from spine_core.inference.loading import default_weights_dir

        detector_from = str(default_weights_dir())
    return XraySettings(n_train=args.xray_train_films, n_val=args.val_studies, seed=args.seed,
                        unet_iterations=args.unet_iterations,
                        detector_iterations=args.detector_iterations, threads=args.threads,
                        budget_minutes=args.budget_minutes, stage=stage,
                        detector_from=detector_from,
                        soft_foreground=bool(getattr(args, "xray_soft_foreground", d.soft_foreground)),
                        precision=getattr(args, "xray_precision", d.precision),
                        transitional_share=float(getattr(args, "xray_transitional_share",
                                                         d.transitional_share)),
                        unet_spec=default_unet_spec(lumbar=bool(getattr(
                            args, "xray_lumbar_channel",
                            d.unet_spec["params"]["out_channels"] > LUMBAR_CHANNEL))))


def run_xray_from_args(args: argparse.Namespace) -> int:
    """Handler body of ``spine train --modality xray``."""
    save_on_sigterm()
    report = train_xray(args.out, xray_settings_from_args(args), fresh=bool(getattr(args, "fresh", False)))
    print(json.dumps(report.metrics, indent=2))
    return 0
