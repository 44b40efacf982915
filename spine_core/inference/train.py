"""Training of both stages on studies generated on the fly (``spine train``).

The demo weights are trained on synthetic phantom studies (:mod:`spine_core.phantom`) only: the
resulting models are for demonstrations and tests, never for patients. The same code trains on
any :class:`LabelledStudy` source (e.g. tiny phantoms in the tests).

Pipeline: each training study is generated once and kept in memory; it is converted exactly as
inference converts it to the model-grid image and label map the segmentation network trains on. The
trained segmentation network then segments every training study, and jittered per-vertebra crops of
its *predicted* masks are what the fracture classifier trains on. Held-out studies are run through
the full two-stage pipeline and scored with :mod:`spine_core.metrics`; the weights, their configs
and a model card are written to ``out_dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spine_core.errors import InputError
from spine_core.inference.fracture import (
    FractureConfig,
    FractureModel,
    ScoredLevels,
    level_boxes,
    level_crops,
    patient_probability,
)
from spine_core.inference.loading import save_state_dict
from spine_core.inference.networks import (
    build_network,
    count_parameters,
    default_fracture_spec,
    default_segmentation_spec,
)
from spine_core.inference.preprocess import (
    Grid,
    grid_of,
    labels_onto,
    model_grid,
    sample_onto,
    volume_tensor,
)
from spine_core.inference.segmentation import (
    SegmentationConfig,
    SegmentationModel,
    SegmentationResult,
    centroids_of,
)
from spine_core.labels import CERVICAL, level_name
from spine_core.volume import Volume

Log = Callable[[str], None]


@dataclass(frozen=True)
class LabelledStudy:
    """One training/evaluation study: CT, canonical-id mask on the same grid, fractured levels."""

    image: Volume
    mask: Volume
    fractured: frozenset[int]
    seed: int = 0
    #: True fracture boxes (level name, a0, x0, y0, x1, y1) where known, for localisation metrics.
    boxes: tuple[tuple[str, int, float, float, float, float], ...] = ()


StudySource = Callable[[int], LabelledStudy]

#: Placeholder mask of studies kept only for their image (keeps the training run's memory low).
_NO_MASK = Volume(np.zeros((1, 1, 1), dtype=np.uint8), np.eye(4))


def phantom_source(shape: tuple[int, int, int], enrich: float = 0.0) -> StudySource:
    """Studies of :func:`spine_core.phantom.generate_study` at ``shape`` (seed -> study).

    ``enrich`` > 0 makes that fraction of studies positive with 1-3 fractured cervical levels
    chosen uniformly (drawn from the seed), to give the classifier more fractures to learn from
    than the RSNA rates do; the classifier's outputs are then corrected to the natural prevalence
    (:func:`natural_prevalence`, via ``FractureConfig.level_priors``).
    """

    def make(seed: int) -> LabelledStudy:
        from spine_core.labels import level_id
        from spine_core.phantom import generate_study

        forced: list[str] | None = None
        if enrich > 0:
            rng = np.random.default_rng([seed, 7919])
            if rng.random() < enrich:
                k = int(rng.integers(1, 4))
                forced = sorted(rng.choice(list(CERVICAL), size=k, replace=False).tolist())
        study = generate_study(seed, shape=shape, fractured_levels=forced)
        fractured = frozenset(level_id(n) for n in study.fractured_levels)
        boxes = tuple((b.level, b.a0, b.x, b.y, b.x + b.width, b.y + b.height) for b in study.boxes)
        return LabelledStudy(study.image, study.labels, fractured, seed, boxes)

    return make


def natural_prevalence() -> dict[str, float]:
    """Per-level fracture prevalence of unenriched phantom studies (thoracic levels: never)."""
    from spine_core.phantom.fractures import LEVEL_PREVALENCE

    return {level_name(lid): float(LEVEL_PREVALENCE.get(level_name(lid), 0.0)) for lid in range(1, 20)}


# ----------------------------------------------------------------------------------- preparation


@dataclass
class SegSample:
    """A study on the model grid: windowed image (float16) and canonical label map (uint8)."""

    image: npt.NDArray[np.float16]
    labels: npt.NDArray[np.uint8]


@dataclass
class CropSet:
    """Per-vertebra crops with their targets."""

    crops: torch.Tensor  # (N, channels, *crop) float16
    targets: torch.Tensor  # (N,) float32 0/1
    levels: torch.Tensor  # (N,) int64 level ids

    @staticmethod
    def concat(sets: Sequence["CropSet"], config: FractureConfig) -> "CropSet":
        if not sets:
            return CropSet(torch.zeros((0, config.channels, *config.crop_shape), dtype=torch.float16),
                           torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        return CropSet(
            torch.cat([s.crops for s in sets]),
            torch.cat([s.targets for s in sets]),
            torch.cat([s.levels for s in sets]),
        )


def prepare_segmentation(study: LabelledStudy, config: SegmentationConfig) -> SegSample:
    """Bring a study onto the model grid exactly as inference does (labels: nearest)."""
    grid = model_grid(grid_of(study.image), config.spacing_mm)
    image = sample_onto(volume_tensor(study.image, config.window), study.image.affine, grid)
    labels = labels_onto(np.asarray(study.mask.array), study.mask.affine, grid)
    return SegSample(image[0, 0].numpy().astype(np.float16), labels)


def prepare_fracture(
    study: LabelledStudy,
    seg_config: SegmentationConfig,
    config: FractureConfig,
    rng: np.random.Generator,
    n_jitter: int = 3,
    jitter_mm: float = 3.0,
    segmentation: SegmentationModel | None = None,
) -> CropSet:
    """``n_jitter`` crops per scored level, centres jittered by up to ``jitter_mm`` per axis.

    With ``segmentation`` the crops are built from its predicted labels and centroids, exactly as
    at inference (what the demo weights are trained on: ground-truth masks carry details, such as
    fracture gaps, that predicted masks do not, and a classifier trained on them fails on
    predictions). Without it, from the ground truth brought onto the model grid; the target of a
    crop is whether the study's level of that id is fractured.
    """
    if segmentation is not None:
        seg = segmentation.segment(study.image)
        grid, labels, centres = seg.model_grid, seg.model_labels, seg.centroids
        same_window = tuple(segmentation.config.window) == tuple(config.window)
        image = seg.image if same_window else volume_tensor(study.image, config.window)
    else:
        grid = model_grid(grid_of(study.image), seg_config.spacing_mm)
        labels = labels_onto(np.asarray(study.mask.array), study.mask.affine, grid)
        centres = centroids_of(labels, grid)
        image = volume_tensor(study.image, config.window)
    sets = []
    for _ in range(n_jitter):
        jittered = {
            lid: np.asarray(c) + rng.uniform(-jitter_mm, jitter_mm, size=3) for lid, c in centres.items()
        }
        ids, crops = level_crops(image, study.image.affine, labels, grid, jittered, config)
        targets = torch.tensor([1.0 if lid in study.fractured else 0.0 for lid in ids])
        sets.append(CropSet(crops.to(torch.float16), targets, torch.tensor(ids, dtype=torch.int64)))
    return CropSet.concat(sets, config)


# -------------------------------------------------------------------------------------- training


def _random_crop(
    sample: SegSample, roi: Sequence[int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A ``roi`` patch (zero-padded where the study is smaller, i.e. air / background)."""
    img = np.zeros(tuple(roi), dtype=np.float32)
    lab = np.zeros(tuple(roi), dtype=np.int64)
    src_sl, dst_sl = [], []
    for n, r in zip(sample.image.shape, roi):
        if n >= r:
            start = int(rng.integers(0, n - r + 1))
            src_sl.append(slice(start, start + r))
            dst_sl.append(slice(0, r))
        else:
            start = int(rng.integers(0, r - n + 1))
            src_sl.append(slice(0, n))
            dst_sl.append(slice(start, start + n))
    img[tuple(dst_sl)] = sample.image[tuple(src_sl)]
    lab[tuple(dst_sl)] = sample.labels[tuple(src_sl)]
    return img, lab


def _augment_intensity(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per-sample contrast/brightness jitter and Gaussian noise (on [0, 1] windowed CT)."""
    b = x.shape[0]
    scale = torch.tensor(rng.uniform(0.9, 1.1, b), dtype=x.dtype).view(b, *([1] * (x.dim() - 1)))
    shift = torch.tensor(rng.uniform(-0.02, 0.02, b), dtype=x.dtype).view(b, *([1] * (x.dim() - 1)))
    noise = torch.randn_like(x) * float(rng.uniform(0.0, 0.015))
    return x * scale + shift + noise


def _augment_geometry(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Label-preserving crop transforms for the classifier: a flip of each axis (a crack is a
    crack upside down) and swapping the two in-plane axes, each with probability 1/2."""
    items = []
    for i in range(x.shape[0]):
        dims = [d for d, flip in zip((1, 2, 3), rng.random(3) < 0.5) if flip]
        item = torch.flip(x[i], dims=dims) if dims else x[i]
        if rng.random() < 0.5 and item.shape[-1] == item.shape[-2]:
            item = item.transpose(-1, -2)
        items.append(item)
    return torch.stack(items).contiguous()


@dataclass
class PhaseLog:
    """What one training phase did."""

    iterations: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    stopped_by_budget: bool = False

    def mean_loss(self, first: bool) -> float:
        """Mean loss of the first or last tenth of the run."""
        k = max(1, len(self.losses) // 10)
        part = self.losses[:k] if first else self.losses[-k:]
        return float(np.mean(part)) if part else math.nan


def _lr_at(step: int, total: int, base: float, warmup: int = 20) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, fg_weight: float = 20.0
) -> torch.Tensor:
    """Class-weighted cross-entropy + soft Dice averaged over the levels present in the batch.

    Vertebrae fill ~1-2 % of the voxels: weighting every level ``fg_weight`` times the background
    in the cross-entropy makes the network find them within tens of iterations instead of
    collapsing to background. Levels absent from the batch are left out of the Dice term (with 20
    outputs and ~10 levels per study their Dice would be ~0 whatever the network does).
    """
    import torch.nn.functional as F

    labels = target[:, 0].long()
    n_classes = logits.shape[1]
    weight = torch.full((n_classes,), float(fg_weight), device=logits.device)
    weight[0] = 1.0
    log_probs = F.log_softmax(logits.float(), dim=1)
    ce = F.nll_loss(log_probs, labels, weight=weight)
    probs = log_probs.exp()
    # Per-class sums without a one-hot tensor: intersection = sum of p(true class) per class.
    p_true = probs.gather(1, labels[:, None]).reshape(-1)
    flat = labels.reshape(-1)
    inter = torch.zeros(n_classes, device=logits.device).index_add_(0, flat, p_true)
    count = torch.bincount(flat, minlength=n_classes).to(probs.dtype)
    denom = probs.sum(dim=(0, 2, 3, 4)) + count
    present = count > 0
    present[0] = False
    if not bool(present.any()):
        return ce
    dice = (2.0 * inter[present] + 1e-5) / (denom[present] + 1e-5)
    return ce + (1.0 - dice.mean())


def train_segmentation(
    net: nn.Module,
    samples: Sequence[SegSample],
    roi: Sequence[int],
    iterations: int,
    *,
    batch_size: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    budget_s: float | None = None,
    log: Log | None = None,
) -> PhaseLog:
    """Train the segmentation network on random ``roi`` patches (:func:`segmentation_loss`)."""
    if not samples:
        raise InputError("no training studies for the segmentation network")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    out = PhaseLog()
    t0 = time.perf_counter()
    for step in range(iterations):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, iterations, lr)
        batch = [_random_crop(samples[int(rng.integers(len(samples)))], roi, rng) for _ in range(batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        flip = rng.random(batch_size) < 0.5  # left-right mirror keeps level ids valid
        for i in np.nonzero(flip)[0]:
            x[i] = torch.flip(x[i], dims=(-1,))
            y[i] = torch.flip(y[i], dims=(-1,))
        x = _augment_intensity(x, rng).to(device)
        y = y.to(device)
        opt.zero_grad(set_to_none=True)
        loss = segmentation_loss(net(x), y)
        loss.backward()
        opt.step()
        out.losses.append(float(loss.detach()))
        out.iterations = step + 1
        elapsed = time.perf_counter() - t0
        if log and (step % 25 == 0 or step == iterations - 1):
            log(f"seg it {step + 1}/{iterations} loss {out.losses[-1]:.4f} ({elapsed:.0f} s)")
        if budget_s is not None and elapsed > budget_s and step + 1 < iterations:
            out.stopped_by_budget = True
            if log:
                log(f"seg: time budget of {budget_s:.0f} s reached after {step + 1} iterations")
            break
    out.seconds = time.perf_counter() - t0
    net.eval()
    return out


def train_fracture(
    net: nn.Module,
    data: CropSet,
    iterations: int,
    *,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    budget_s: float | None = None,
    log: Log | None = None,
) -> PhaseLog:
    """Train the classifier with class-balanced batches (half fractured when there are any)."""
    if data.targets.numel() == 0:
        raise InputError("no vertebra crops to train the fracture classifier on")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    pos = np.nonzero(data.targets.numpy() > 0.5)[0]
    neg = np.nonzero(data.targets.numpy() <= 0.5)[0]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    out = PhaseLog()
    t0 = time.perf_counter()
    for step in range(iterations):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, iterations, lr)
        if len(pos) and len(neg):
            n_pos = batch_size // 2
            idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, batch_size - n_pos)])
        else:
            idx = rng.integers(0, data.targets.numel(), batch_size)
        x = _augment_geometry(data.crops[torch.from_numpy(idx)].to(torch.float32), rng)
        img = _augment_intensity(x[:, :1], rng)
        x = torch.cat([img, x[:, 1:]], dim=1).to(device)
        y = data.targets[torch.from_numpy(idx)].to(device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x).reshape(-1), y)
        loss.backward()
        opt.step()
        out.losses.append(float(loss.detach()))
        out.iterations = step + 1
        elapsed = time.perf_counter() - t0
        if log and (step % 50 == 0 or step == iterations - 1):
            log(f"fracture it {step + 1}/{iterations} loss {out.losses[-1]:.4f} ({elapsed:.0f} s)")
        if budget_s is not None and elapsed > budget_s and step + 1 < iterations:
            out.stopped_by_budget = True
            if log:
                log(f"fracture: time budget of {budget_s:.0f} s reached after {step + 1} iterations")
            break
    out.seconds = time.perf_counter() - t0
    net.eval()
    return out


# ------------------------------------------------------------------------------------ evaluation


def evaluate(
    segmentation: SegmentationModel,
    fracture: FractureModel | None,
    studies: Iterable[LabelledStudy],
    *,
    prior: float = 0.1,
    log: Log | None = None,
) -> dict[str, Any]:
    """Score the full two-stage pipeline on held-out studies.

    Dice per level on the input grid; VerSe identification (centroid within 20 mm and nearest);
    fracture ROC AUC over cervical levels pooled and per patient; RSNA weighted log loss, where a
    cervical level the segmentation missed gets probability ``prior``.
    """
    from spine_core import metrics

    level_ids = segmentation.level_ids
    dice_rows: list[dict[int, float]] = []
    ident = []
    level_truth: list[float] = []
    level_score: list[float] = []
    rsna_true: list[list[float]] = []
    rsna_pred: list[list[float]] = []
    seconds: list[float] = []
    located: dict[str, list[metrics.BoxLocalisation]] = {"gradcam": [], "extent": []}
    for study in studies:
        t0 = time.perf_counter()
        seg = segmentation.segment(study.image)
        seconds.append(time.perf_counter() - t0)
        truth_mask = np.asarray(study.mask.array)
        dice_rows.append(metrics.dice_per_label(seg.mask, truth_mask, level_ids))
        true_c = centroids_of(truth_mask, grid_of(study.mask))
        ident.append(metrics.identification_rate(seg.centroids, true_c))
        if fracture is None:
            continue
        scored = fracture.score(seg, study.image.affine)
        probs = scored.probabilities
        present = {level_name(lid) for lid in true_c}
        row_true, row_pred = [], []
        for name in CERVICAL:
            y = 1.0 if name in {level_name(f) for f in study.fractured} else 0.0
            p = probs.get(name, prior)
            row_true.append(y)
            row_pred.append(p)
            if name in present:
                level_truth.append(y)
                level_score.append(p)
        filled = {n: row_pred[i] for i, n in enumerate(CERVICAL)}
        row_true.append(max(row_true))
        row_pred.append(patient_probability(filled))
        rsna_true.append(row_true)
        rsna_pred.append(row_pred)
        for kind, found in _localisation(fracture, seg, study, scored).items():
            located[kind] += found
        if log:
            log(f"evaluated study seed {study.seed}")
    dice_by_level = {
        level_name(lid): float(np.nanmean([r[lid] for r in dice_rows]))
        for lid in level_ids
        if any(not math.isnan(r[lid]) for r in dice_rows)
    }
    result: dict[str, Any] = {
        "n_studies": len(dice_rows),
        "dice_per_level": {k: round(v, 4) for k, v in dice_by_level.items()},
        "dice_mean": round(float(np.mean(list(dice_by_level.values()))), 4) if dice_by_level else None,
        "identification_rate": round(float(metrics.pooled_identification_rate(ident)), 4),
        "segmentation_seconds_mean": round(float(np.mean(seconds)), 3) if seconds else None,
    }
    if fracture is not None and rsna_true:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
            auc_level = metrics.roc_auc(level_truth, level_score)
            auc_patient = metrics.roc_auc([r[-1] for r in rsna_true], [r[-1] for r in rsna_pred])
        result.update(
            {
                "fracture_auc_level": None if math.isnan(auc_level) else round(auc_level, 4),
                "fracture_auc_patient": None if math.isnan(auc_patient) else round(auc_patient, 4),
                "rsna_weighted_log_loss": round(
                    metrics.rsna_weighted_log_loss(np.array(rsna_true), np.array(rsna_pred)), 4
                ),
                "n_levels_scored": len(level_truth),
                "n_fractured_levels": int(sum(level_truth)),
                "n_fractured_patients": int(sum(r[-1] for r in rsna_true)),
            }
        )
        result.update(_localisation_summary(located))
    return result


def _localisation(
    fracture: FractureModel, seg: SegmentationResult, study: LabelledStudy, scored: ScoredLevels
) -> dict[str, list[Any]]:
    """Boxes of each truly fractured, segmented level (whatever its score) against its true boxes:
    Grad-CAM boxes and, as the baseline, the level's extent."""
    from spine_core import metrics

    out: dict[str, list[Any]] = {"gradcam": [], "extent": []}
    names = sorted({b[0] for b in study.boxes} & set(scored.probabilities))
    if not names:
        return out
    cam = fracture.localise(seg, study.image.affine, scored, levels=names) or []
    extent = level_boxes(seg.mask, {n: 1.0 for n in names}, 0.5, fracture.config.box_min_area_fraction)
    for name in names:
        truth = [b[1:] for b in study.boxes if b[0] == name]
        for kind, boxes in (("gradcam", cam), ("extent", extent)):
            pred = [(b.slice_index, b.x, b.y, b.x + b.width, b.y + b.height)
                    for b in boxes if b.level == name]
            out[kind].append(metrics.box_localisation(pred, truth))  # type: ignore[arg-type]
    return out


#: Box localisation metrics of :func:`evaluate` (Grad-CAM boxes, then the level-extent baseline).
BOX_METRICS = tuple(
    f"{prefix}_{name}"
    for prefix in ("box", "extent_box")
    for name in ("iou_mean", "centre_hit", "slice_precision", "slice_recall", "n_levels")
)


def _localisation_summary(located: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Means over fractured levels of the box metrics (NaN entries left out)."""
    out: dict[str, Any] = {}
    for kind, rows in located.items():
        if not rows:
            continue
        prefix = "box" if kind == "gradcam" else "extent_box"
        for field_name in ("iou_mean", "centre_hit", "slice_precision", "slice_recall"):
            values = [getattr(r, field_name) for r in rows if not math.isnan(getattr(r, field_name))]
            out[f"{prefix}_{field_name}"] = round(float(np.mean(values)), 4) if values else None
        out[f"{prefix}_n_levels"] = len(rows)
    return out


# ----------------------------------------------------------------------------------- orchestration


@dataclass
class TrainSettings:
    """Everything that shapes one training run (recorded in the model card)."""

    n_train: int = 48
    n_val: int = 12
    seed: int = 2022
    shape: tuple[int, int, int] = (200, 256, 256)
    seg_iterations: int = 450
    frac_iterations: int = 1000
    seg_batch_size: int = 2
    frac_batch_size: int = 16
    seg_lr: float = 3e-3
    frac_lr: float = 3e-3
    train_roi: tuple[int, int, int] | None = None  # None: the inference ROI (same norm statistics)
    crops_per_level: int = 4
    enrich_fractures: float = 1.0  # share of training studies forced positive (1-3 levels)
    device: str = "cpu"
    threads: int = 2
    budget_minutes: float = 19.0
    name: str = "spinereview-demo"
    version: str = "0.1.0"
    seg_config: SegmentationConfig = field(default_factory=SegmentationConfig)
    frac_config: FractureConfig = field(
        default_factory=lambda: FractureConfig(level_priors=natural_prevalence())
    )
    seg_spec: dict[str, Any] = field(default_factory=default_segmentation_spec)
    frac_spec: dict[str, Any] = field(default_factory=default_fracture_spec)

    def train_seeds(self) -> list[int]:
        return [self.seed * 1000 + i for i in range(self.n_train)]

    def val_seeds(self) -> list[int]:
        return [self.seed * 1000 + 500 + i for i in range(self.n_val)]


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
) -> TrainReport:
    """Train both stages and write weights, configs and the model card to ``out_dir``.

    ``source`` makes a study from a seed (default: the phantom at ``settings.shape``). Training
    stops a phase early if it would overrun its share of ``settings.budget_minutes`` (recorded).
    """
    s = settings or TrainSettings()
    if s.n_train < 1 or s.n_val < 1:
        raise InputError(f"need at least one training and one validation study (got {s.n_train}, {s.n_val})")
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
    try:
        studies: list[LabelledStudy] = []
        seg_samples: list[SegSample] = []
        n_fractured_train = 0
        for i, seed in enumerate(s.train_seeds()):
            study = make(seed)
            seg_samples.append(prepare_segmentation(study, s.seg_config))
            # Only the image and the fractured levels are needed later (crops of predicted masks).
            studies.append(LabelledStudy(study.image, _NO_MASK, study.fractured, study.seed))
            n_fractured_train += len(study.fractured)
            say(f"prepared training study {i + 1}/{s.n_train} (seed {seed})")
        data_seconds = time.perf_counter() - start

        remaining = budget - data_seconds
        eval_reserve = 0.15 * budget
        crop_reserve = 2.5 * s.n_train  # seconds to segment the training studies for the crops
        train_budget = max(30.0, remaining - eval_reserve - crop_reserve)
        seg_net = build_network(s.seg_spec)
        seg_log = train_segmentation(
            seg_net, seg_samples, s.train_roi or s.seg_config.roi_size, s.seg_iterations,
            batch_size=s.seg_batch_size, lr=s.seg_lr, seed=s.seed, device=device,
            budget_s=0.6 * train_budget, log=say,
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
        frac_net = build_network(s.frac_spec)
        frac_budget = max(20.0, budget - eval_reserve - (time.perf_counter() - start))
        frac_log = train_fracture(
            frac_net, crops, s.frac_iterations, batch_size=s.frac_batch_size, lr=s.frac_lr,
            seed=s.seed + 1, device=device, budget_s=frac_budget, log=say,
        )
        for net in (seg_net, frac_net):  # evaluate exactly what is shipped (float16 storage)
            _round_to_half(net)
        frac_model = FractureModel(frac_net, s.frac_config, device, amp=True)
        prior = float(np.mean([s.frac_config.prior_for(level_name(lid)) for lid in range(1, 8)]))
        val_metrics = evaluate(
            seg_model, frac_model, (make_val(seed) for seed in s.val_seeds()), prior=prior, log=say,
        )
        total = time.perf_counter() - start
        files = _write_outputs(out, s, seg_net, frac_net, seg_log, frac_log, val_metrics,
                               data_seconds, total, n_fractured_train, crops)
        card = json.loads((out / "model_card.json").read_text())
        say(f"wrote {', '.join(p.name for p in files)} to {out} in {total / 60:.1f} min")
        return TrainReport(out, files, val_metrics, card)
    finally:
        torch.set_num_threads(previous_threads)


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
) -> list[Path]:
    seg_cfg, frac_cfg = stage_configs(s)
    seg_json = save_state_dict(seg_net, seg_cfg, out / "segmentation.json", half=True)
    frac_json = save_state_dict(frac_net, frac_cfg, out / "fracture.json", half=True)
    card = build_card(s, seg_net, frac_net, seg_log, frac_log, val_metrics, data_seconds,
                      total_seconds, n_fractured_train, crops)
    card_json = out / "model_card.json"
    card_json.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    card_md = out / "MODEL_CARD.md"
    card_md.write_text(card_markdown(card), encoding="utf-8")
    return [seg_json, seg_json.with_suffix(".pt"), frac_json, frac_json.with_suffix(".pt"),
            card_json, card_md]


DISCLAIMER = (
    "Trained on SYNTHETIC phantom CT only (no patient data). For demonstrations and software tests "
    "only: not validated on real scans, not a medical device, never use it for diagnosis."
)

BOX_NOTE = (
    "for each level whose probability reaches the threshold, the classifier's Grad-CAM (layer "
    "`{layer}`, voxels at or above {threshold} of its maximum inside the vertebra) is mapped back "
    "to the input and boxed on each axial slice, scored with the level probability. This explains "
    "the score; it is not a detector trained on boxes (box_* metrics below, against the level's "
    "extent as extent_box_*)."
)


def build_card(
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
) -> dict[str, Any]:
    """The model card as a JSON-serialisable dict."""
    settings = asdict(s)
    settings.pop("seg_spec")
    settings.pop("frac_spec")
    settings["seg_config"] = s.seg_config.to_dict()
    settings["frac_config"] = s.frac_config.to_dict()
    return {
        "name": s.name,
        "version": s.version,
        "intended_use": DISCLAIMER,
        "data": {
            "kind": "synthetic phantom (spine_core.phantom.generate_study)",
            "shape": list(s.shape),
            "train_seeds": [s.train_seeds()[0], s.train_seeds()[-1]],
            "val_seeds": [s.val_seeds()[0], s.val_seeds()[-1]],
            "n_train": s.n_train,
            "n_val": s.n_val,
            "n_fractured_levels_train": n_fractured_train,
            "n_crops_train": int(crops.targets.numel()),
            "crop_positive_fraction": (
                round(float(crops.targets.mean()), 4) if crops.targets.numel() else None
            ),
        },
        "stages": {
            "segmentation": {
                "network": s.seg_spec,
                "parameters": count_parameters(seg_net),
                "input": f"closest canonical orientation (S,P,L), {s.seg_config.spacing_mm} mm isotropic, "
                f"HU window {list(s.seg_config.window)} -> [0, 1]",
                "output": "background + canonical levels "
                + ", ".join(level_name(v) for v in s.seg_config.labels if v),
                "inference": "MONAI sliding_window_inference, argmax, largest component per level; "
                + ("logits upsampled trilinearly onto the input grid around the kept levels"
                   if s.seg_config.smooth_upsampling
                   else "labels copied back to the input grid by nearest neighbour"),
                "training": {
                    "loss": "cross-entropy (levels weighted 20x background) + soft Dice over the "
                    "levels present in each batch",
                    "iterations": seg_log.iterations,
                    "stopped_by_time_budget": seg_log.stopped_by_budget,
                    "seconds": round(seg_log.seconds, 1),
                    "loss_first_tenth": round(seg_log.mean_loss(True), 4),
                    "loss_last_tenth": round(seg_log.mean_loss(False), 4),
                },
            },
            "fracture": {
                "network": s.frac_spec,
                "parameters": count_parameters(frac_net),
                "input": f"per-vertebra crop {list(s.frac_config.crop_shape)} at "
                f"{s.frac_config.crop_spacing_mm} mm "
                "around the level centroid: channel 0 windowed CT zeroed beyond the level's mask dilated by "
                f"{s.frac_config.context_mm} mm, channel 1 the level's mask, channel 2 a black top-hat "
                f"({s.frac_config.tophat_voxels}-voxel closing minus CT, x{s.frac_config.tophat_gain}) "
                "that lights up thin dark gaps in bone",
                "output": "P(fracture) per level: sigmoid(logit + log prior odds of the level); "
                "priors = natural phantom prevalence (RSNA 2022 rates for C1-C7, 0.5 % floor)",
                "patient_probability": "noisy-OR over cervical levels: 1 - prod(1 - p_level) for C1-C7",
                "boxes": BOX_NOTE.format(layer=s.frac_config.cam_layer,
                                         threshold=s.frac_config.cam_threshold),
                "training": {
                    "loss": "binary cross-entropy, class-balanced batches, on crops of the trained "
                    "segmentation's predicted masks (random flips of each axis and in-plane transposes); "
                    f"training studies enriched: {s.enrich_fractures:.0%} forced positive with 1-3 "
                    "cervical fractures",
                    "iterations": frac_log.iterations,
                    "stopped_by_time_budget": frac_log.stopped_by_budget,
                    "seconds": round(frac_log.seconds, 1),
                    "loss_first_tenth": round(frac_log.mean_loss(True), 4),
                    "loss_last_tenth": round(frac_log.mean_loss(False), 4),
                },
            },
        },
        "metrics_validation": dict(val_metrics),
        "metrics_notes": (
            "Measured on held-out synthetic studies through the full two-stage pipeline. Dice per "
            "level on the input grid; identification: VerSe rule (predicted centroid within 20 mm "
            "and nearest); AUC over cervical levels pooled and per patient; RSNA weighted log loss "
            "(per-study normalised), a cervical level the segmentation missed scored with the mean "
            "prior of C1-C7. The lowest level in view is often cut by the field of view, hence its "
            "low Dice."
        ),
        "settings": settings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": s.threads,
            "device": s.device,
            "data_preparation_seconds": round(data_seconds, 1),
            "total_seconds": round(total_seconds, 1),
        },
    }


def card_markdown(card: Mapping[str, Any]) -> str:
    """The model card as Markdown."""
    m = card.get("metrics_validation", {})
    seg = card["stages"]["segmentation"]
    frac = card["stages"]["fracture"]
    data = card["data"]
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        f"**{card['intended_use']}**",
        "",
        "## Data",
        f"- {data['kind']}, volumes of shape {data['shape']} (slices x rows x columns).",
        f"- Training: {data['n_train']} studies (seeds {data['train_seeds'][0]}–{data['train_seeds'][1]}), "
        f"{data['n_fractured_levels_train']} fractured levels, {data['n_crops_train']} vertebra crops.",
        f"- Validation: {data['n_val']} held-out studies "
        f"(seeds {data['val_seeds'][0]}–{data['val_seeds'][1]}).",
        "",
        "## Stage 1: segmentation",
        f"- Network: `{seg['network']['arch']}` {seg['network']['params']}, "
        f"{seg['parameters']:,} parameters.",
        f"- Input: {seg['input']}.",
        f"- Output: {seg['output']}.",
        f"- Inference: {seg['inference']}.",
        f"- Training: {seg['training']['loss']}, {seg['training']['iterations']} iterations "
        f"({seg['training']['seconds']} s), loss {seg['training']['loss_first_tenth']} -> "
        f"{seg['training']['loss_last_tenth']}.",
        "",
        "## Stage 2: fracture classification",
        f"- Network: `{frac['network']['arch']}` {frac['network']['params']}, "
        f"{frac['parameters']:,} parameters.",
        f"- Input: {frac['input']}.",
        f"- Output: {frac['output']}; patient probability: {frac['patient_probability']}.",
        f"- Boxes: {frac['boxes']}",
        f"- Training: {frac['training']['loss']}, {frac['training']['iterations']} iterations "
        f"({frac['training']['seconds']} s), loss {frac['training']['loss_first_tenth']} -> "
        f"{frac['training']['loss_last_tenth']}.",
        "",
        "## Validation metrics (held-out synthetic studies)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("n_studies", "dice_mean", "identification_rate", "fracture_auc_level",
                "fracture_auc_patient", "rsna_weighted_log_loss", "n_levels_scored",
                "n_fractured_levels", "n_fractured_patients", "segmentation_seconds_mean",
                *BOX_METRICS):
        if key in m:
            lines.append(f"| {key} | {m[key]} |")
    if m.get("dice_per_level"):
        per_level = ", ".join(f"{k} {v}" for k, v in m["dice_per_level"].items())
        lines += ["", f"Dice per level: {per_level}."]
    extra = card.get("metrics_extra_validation")
    if extra:
        lines += ["", f"## More held-out synthetic studies ({extra['n_studies']}, seeds "
                  f"{extra['seeds'][0]}–{extra['seeds'][1]}, same weights, evaluated after training)",
                  "", "| metric | value |", "|---|---|"]
        for key in ("dice_mean", "identification_rate", "fracture_auc_level", "fracture_auc_patient",
                    "rsna_weighted_log_loss", "n_levels_scored", "n_fractured_levels",
                    "n_fractured_patients", *BOX_METRICS):
            if key in extra:
                lines.append(f"| {key} | {extra[key]} |")
    lines += ["", card.get("metrics_notes", ""), "",
              f"Trained in {card['environment']['total_seconds']} s with {card['environment']['threads']} "
              f"CPU threads, torch {card['environment']['torch']}. Weights are stored as float16; the "
              "metrics above were measured with the float16-rounded weights.", ""]
    return "\n".join(lines)


def extra_validation(
    weights_dir: str | Path,
    n_studies: int,
    first_seed: int,
    shape: tuple[int, int, int] = (200, 256, 256),
    log: Log | None = print,
) -> dict[str, Any]:
    """Evaluate written weights on ``n_studies`` more natural phantom studies (seeds from
    ``first_seed``) and add the result to the model card as ``metrics_extra_validation``.

    The validation of a training run is small (its fracture AUC rests on a handful of fractured
    levels); this gives the card a steadier estimate without retraining.
    """
    from spine_core.inference.local import LocalPredictor

    folder = Path(weights_dir)
    predictor = LocalPredictor.from_dir(folder, device="cpu")
    if predictor.fracture is None:  # pragma: no cover - from_dir loads both stages
        raise InputError(f"{folder} has no fracture stage")
    make = phantom_source(shape)
    seeds = list(range(first_seed, first_seed + n_studies))
    prior = float(np.mean([predictor.fracture.config.prior_for(level_name(lid)) for lid in range(1, 8)]))
    result = evaluate(predictor.segmentation, predictor.fracture, (make(seed) for seed in seeds),
                      prior=prior, log=log)
    result["seeds"] = [seeds[0], seeds[-1]]
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["metrics_extra_validation"] = result
    config = predictor.fracture.config
    if config.cam_layer:  # boxes may be made otherwise than when the card was written
        card["stages"]["fracture"]["boxes"] = BOX_NOTE.format(
            layer=config.cam_layer, threshold=config.cam_threshold)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return result


# ------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spine train`` (the CLI module wires the subcommand)."""
    d = TrainSettings()
    parser.add_argument("--out", default="var/models", help="output folder for weights and model card")
    parser.add_argument("--train-studies", type=int, default=d.n_train,
                        help=f"training studies (default {d.n_train})")
    parser.add_argument("--val-studies", type=int, default=d.n_val,
                        help=f"held-out studies (default {d.n_val})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"base seed (default {d.seed})")
    parser.add_argument("--shape", default="x".join(map(str, d.shape)), help="phantom SLICESxROWSxCOLS")
    parser.add_argument("--seg-iterations", type=int, default=d.seg_iterations)
    parser.add_argument("--frac-iterations", type=int, default=d.frac_iterations)
    parser.add_argument("--device", default=d.device, help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--budget-minutes", type=float, default=d.budget_minutes,
                        help="wall-clock budget; phases stop early (and say so) to keep it")



def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    try:
        shape = tuple(int(v) for v in str(args.shape).lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"--shape must be SLICESxROWSxCOLS with each at least 16, got '{args.shape}'")
    return TrainSettings(
        n_train=args.train_studies, n_val=args.val_studies, seed=args.seed,
        shape=shape,  # type: ignore[arg-type]
        seg_iterations=args.seg_iterations, frac_iterations=args.frac_iterations,
        device=args.device, threads=args.threads, budget_minutes=args.budget_minutes,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Handler body of ``spine train``."""
    report = train(args.out, settings_from_args(args))
    print(json.dumps(report.metrics, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spine_core.inference.train", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
