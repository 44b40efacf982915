"""The training phase: one loop (:func:`train_phase`) shared by both stages, and what each stage
puts into it — its batches (random patches of the model-grid samples, class-balanced vertebra
crops; augmentations) and its loss."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from spine_core.errors import InputError
from spine_core.inference.checkpoint import TrainingCheckpoint
from spine_core.inference.train.data import CropSet, Log, SegSample

#: A batch of inputs and targets, on the CPU.
Batch = tuple[torch.Tensor, torch.Tensor]


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


def train_phase(
    net: nn.Module,
    iterations: int,
    draw_batch: Callable[[np.random.Generator], Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    name: str,
    log_every: int,
    lr: float,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    budget_s: float | None = None,
    log: Log | None = None,
    checkpoint: TrainingCheckpoint | None = None,
) -> PhaseLog:
    """Train ``net`` for ``iterations`` steps: the loop both stages share.

    AdamW (weight decay 1e-4) at ``lr`` with a linear warm-up then cosine decay; each step draws a
    batch with ``draw_batch(rng)`` (``rng`` seeded with ``seed``, as is torch), moves it to
    ``device`` and minimises ``loss_fn(net(x), y)``. The loss is logged as ``name`` every
    ``log_every`` iterations and at the last; the phase stops early once ``budget_s`` seconds
    have passed (recorded in the returned :class:`PhaseLog`). With ``checkpoint``, the phase is
    saved as it trains under ``name`` and goes on from its last save when one is there
    (:mod:`spine_core.inference.checkpoint`). ``net`` is left in eval mode.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    out = PhaseLog()
    first, before = 0, 0.0
    saved = checkpoint.resume(name, net, opt, rng) if checkpoint else None
    if saved is not None:
        out = PhaseLog(**saved.record)
        if saved.done:
            net.eval()
            return out
        first, before = saved.step, saved.seconds
    t0 = time.perf_counter() - before
    for step in range(first, iterations):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, iterations, lr)
        x, y = draw_batch(rng)
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        out.losses.append(float(loss.detach()))
        out.iterations = step + 1
        elapsed = time.perf_counter() - t0
        if log and (step % log_every == 0 or step == iterations - 1):
            log(f"{name} it {step + 1}/{iterations} loss {out.losses[-1]:.4f} ({elapsed:.0f} s)")
        if budget_s is not None and elapsed > budget_s and step + 1 < iterations:
            out.stopped_by_budget = True
            if log:
                log(f"{name}: time budget of {budget_s:.0f} s reached after {step + 1} iterations")
            break
        if checkpoint and checkpoint.due(name):
            checkpoint.save(name, net, opt, rng, step=step + 1, seconds=elapsed,
                            record=dataclasses.asdict(out))
    out.seconds = time.perf_counter() - t0
    if checkpoint:
        checkpoint.save(name, net, opt, rng, step=out.iterations, seconds=out.seconds,
                        record=dataclasses.asdict(out), done=True)
    net.eval()
    return out


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
    checkpoint: TrainingCheckpoint | None = None,
) -> PhaseLog:
    """Train the segmentation network on random ``roi`` patches (:func:`segmentation_loss`)."""
    if not samples:
        raise InputError("no training studies for the segmentation network")

    def draw_batch(rng: np.random.Generator) -> Batch:
        batch = [_random_crop(samples[int(rng.integers(len(samples)))], roi, rng) for _ in range(batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        flip = rng.random(batch_size) < 0.5  # left-right mirror keeps level ids valid
        for i in np.nonzero(flip)[0]:
            x[i] = torch.flip(x[i], dims=(-1,))
            y[i] = torch.flip(y[i], dims=(-1,))
        return _augment_intensity(x, rng), y

    return train_phase(
        net, iterations, draw_batch, segmentation_loss, name="seg", log_every=25,
        lr=lr, seed=seed, device=device, budget_s=budget_s, log=log, checkpoint=checkpoint,
    )


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
    checkpoint: TrainingCheckpoint | None = None,
) -> PhaseLog:
    """Train the classifier with class-balanced batches (half fractured when there are any)."""
    if data.targets.numel() == 0:
        raise InputError("no vertebra crops to train the fracture classifier on")
    pos = np.nonzero(data.targets.numpy() > 0.5)[0]
    neg = np.nonzero(data.targets.numpy() <= 0.5)[0]
    bce = nn.BCEWithLogitsLoss()

    def draw_batch(rng: np.random.Generator) -> Batch:
        if len(pos) and len(neg):
            n_pos = batch_size // 2
            idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, batch_size - n_pos)])
        else:
            idx = rng.integers(0, data.targets.numel(), batch_size)
        x = _augment_geometry(data.crops[torch.from_numpy(idx)].to(torch.float32), rng)
        img = _augment_intensity(x[:, :1], rng)
        return torch.cat([img, x[:, 1:]], dim=1), data.targets[torch.from_numpy(idx)]

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce(logits.reshape(-1), y)

    return train_phase(
        net, iterations, draw_batch, loss_fn, name="fracture", log_every=50,
        lr=lr, seed=seed, device=device, budget_s=budget_s, log=log, checkpoint=checkpoint,
    )


def box_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 10.0) -> torch.Tensor:
    """Voxel cross-entropy (inside-box voxels weighted ``pos_weight``: boxes fill well under 1 %
    of a crop) + soft Dice of the batch's box voxels."""
    import torch.nn.functional as F

    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.tensor(pos_weight, device=logits.device))
    probs = torch.sigmoid(logits)
    dice = (2.0 * (probs * target).sum() + 1.0) / (probs.sum() + target.sum() + 1.0)
    return bce + (1.0 - dice)


def train_detector(
    net: nn.Module,
    data: CropSet,
    iterations: int,
    *,
    batch_size: int = 8,
    positive_share: float = 0.75,
    pos_weight: float = 10.0,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    budget_s: float | None = None,
    log: Log | None = None,
    checkpoint: TrainingCheckpoint | None = None,
) -> PhaseLog:
    """Train the box detector: ``positive_share`` of each batch are crops with true boxes, the
    rest crops of unfractured levels (empty target); crop and target get the same flips and
    in-plane transposes (:func:`box_loss`)."""
    if data.box_masks is None or data.box_rows.numel() == 0:
        raise InputError("no crops with true fracture boxes to train the box detector on")
    masks = data.box_masks
    with_box = data.box_rows.numpy()
    without = np.setdiff1d(np.nonzero(data.targets.numpy() <= 0.5)[0], with_box)
    n_pos = batch_size if len(without) == 0 else max(1, int(round(positive_share * batch_size)))

    def draw_batch(rng: np.random.Generator) -> Batch:
        picks = rng.integers(0, len(with_box), n_pos)
        negs = rng.choice(without, batch_size - n_pos) if batch_size > n_pos else np.zeros(0, int)
        rows = np.concatenate([with_box[picks], negs]).astype(np.int64)
        x = data.crops[torch.from_numpy(rows)].to(torch.float32)
        y = torch.zeros((len(rows), 1, *x.shape[2:]))
        y[:n_pos] = masks[torch.from_numpy(picks)].to(torch.float32)
        both = _augment_geometry(torch.cat([x, y], dim=1), rng)
        x, y = both[:, :-1], both[:, -1:]
        return torch.cat([_augment_intensity(x[:, :1], rng), x[:, 1:]], dim=1), y

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return box_loss(logits, y, pos_weight)

    return train_phase(
        net, iterations, draw_batch, loss_fn, name="boxes", log_every=50,
        lr=lr, seed=seed, device=device, budget_s=budget_s, log=log, checkpoint=checkpoint,
    )
