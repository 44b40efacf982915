"""The training loops of the U-Net and the detector on films held in memory on the grid."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spine_core.inference.checkpoint import TrainingCheckpoint

Log = Callable[[str], None]


@dataclass
class FilmSet:
    """Films on the grid with their targets, stacked: images (N, 1, g, g), masks (N, 4, g, g);
    the detector's on its own grid d: det_images (N, 1, d, d), heat (N, 3, d, d), size
    (N, 2, d, d), size_mask (N, 1, d, d)."""

    images: torch.Tensor
    masks: torch.Tensor
    heat: torch.Tensor
    size: torch.Tensor
    size_mask: torch.Tensor
    det_images: torch.Tensor | None = None  # None: the detector reads ``images``

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class PhaseLog:
    """What one training phase did (recorded in the model card)."""

    iterations: int = 0
    seconds: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    stopped_early: bool = False
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "seconds": round(self.seconds, 1),
                "first_loss": round(self.first_loss, 4), "last_loss": round(self.last_loss, 4),
                "stopped_early": self.stopped_early}


def augment(batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random left-right flip (films face either way) and a random gamma and contrast of the image."""
    out = {k: v.clone() for k, v in batch.items()}
    for i in range(batch["images"].shape[0]):
        if rng.random() < 0.5:
            for key in out:
                out[key][i] = torch.flip(out[key][i], dims=(-1,))
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, size=(batch["images"].shape[0], 1, 1, 1))).float()
    scale = torch.from_numpy(rng.uniform(0.85, 1.15, size=gamma.shape)).float()
    out["images"] = (out["images"].clamp(1e-4, 1.0) ** gamma * scale).clamp(0.0, 1.0)
    return out


def unet_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over the batch, per channel."""
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    p = torch.sigmoid(logits)
    inter = (p * masks).sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(0, 2, 3)) + masks.sum(dim=(0, 2, 3)) + 1.0)
    return bce + dice.mean()


def detector_loss(out: torch.Tensor, heat: torch.Tensor, size: torch.Tensor,
                  size_mask: torch.Tensor) -> torch.Tensor:
    """Heatmaps: squared error of the sigmoid against the Gaussians, weighted 1 + 50 x target (the
    few pixels near centres count as much as the background), plus 10 x L1 of the box sizes.

    (CenterNet's focal loss stayed flat for the 700 iterations a 2-thread CPU budget allows.)
    """
    p = torch.sigmoid(out[:, :3])
    heat_loss = 20.0 * ((p - heat) ** 2 * (1.0 + 50.0 * heat)).mean()
    l1 = (torch.abs(out[:, 3:] - size) * size_mask).sum() / (2 * size_mask.sum()).clamp(min=1.0)
    return heat_loss + 10.0 * l1


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so autocast speeds up
    training instead of emulating it."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where :func:`bf16_supported`, else 'fp32'; 'bf16' and 'fp32' as given."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"training precision {precision!r}: choose auto, bf16 or fp32")
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return precision


def train_phase(net: nn.Module, films: FilmSet, loss: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
                iterations: int, batch_size: int, lr: float, seed: int, budget_s: float,
                name: str, log: Log, keys: tuple[str, ...] = ("images", "masks", "heat", "size", "size_mask"),
                precision: str = "fp32", checkpoint: TrainingCheckpoint | None = None) -> PhaseLog:
    """AdamW with warm-up and cosine decay over the iterations or the budget, whichever runs out
    first; stops early (recorded) once ``budget_s`` is spent. The batch holds ``keys`` of the
    film set; the first is the network's input (read as ``images``). With ``precision`` 'bf16'
    the forward pass runs under CPU bfloat16 autocast (weights, optimiser and loss stay float32),
    about twice the iterations per second where the CPU has bfloat16 units; batch norms run in
    float32 there. With ``checkpoint``, the phase is saved as it trains under ``name`` and goes on
    from its last save when one is there (:mod:`spine_core.inference.checkpoint`)."""
    bf16 = resolve_precision(precision) == "bf16"
    hooks = _float32_norms(net) if bf16 else []
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    record = PhaseLog()
    smooth: float | None = None
    first, before = 0, 0.0
    saved = checkpoint.resume(name, net, opt, rng) if checkpoint else None
    if saved is not None:
        fields = dict(saved.record)
        smooth = fields.pop("smooth", None)
        record = PhaseLog(**fields)
        if saved.done:
            for hook in hooks:
                hook.remove()
            net.eval()
            return record
        first, before = saved.step, saved.seconds
    start = time.perf_counter() - before
    net.train()
    for it in range(first, iterations):
        if time.perf_counter() - start > budget_s:
            record.stopped_early = True
            log(f"{name}: budget spent after {it} of {iterations} iterations")
            break
        warm = min(1.0, (it + 1) / 30)
        done = max(it / iterations, (time.perf_counter() - start) / budget_s)  # decays by time too
        for group in opt.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        idx = torch.from_numpy(rng.choice(len(films), size=min(batch_size, len(films)), replace=False))
        batch = augment({("images" if i == 0 else k): getattr(films, k)[idx]
                         for i, k in enumerate(keys)}, rng)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(batch["images"])
        value = loss(out.float(), batch)
        opt.zero_grad()
        value.backward()
        opt.step()
        v = float(value.detach())
        if it == 0:
            record.first_loss = v
        smooth = v if smooth is None else 0.95 * smooth + 0.05 * v
        record.iterations = it + 1
        if (it + 1) % 100 == 0:
            record.history.append(round(smooth, 4))
            log(f"{name}: iteration {it + 1}/{iterations}, loss {smooth:.4f}")
        if checkpoint and checkpoint.due(name):
            checkpoint.save(name, net, opt, rng, step=it + 1, seconds=time.perf_counter() - start,
                            record={**dataclasses.asdict(record), "smooth": smooth})
    for hook in hooks:
        hook.remove()
    record.last_loss = float(smooth) if smooth is not None else float("nan")
    record.seconds = time.perf_counter() - start
    if checkpoint:
        checkpoint.save(name, net, opt, rng, step=record.iterations, seconds=record.seconds,
                        record={**dataclasses.asdict(record), "smooth": smooth}, done=True)
    net.eval()
    return record



def _float32_norms(net: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Batch norms read float32 under bfloat16 autocast (their statistics in bfloat16 lose a small
    variance beside a large mean: measured, running statistics that cost the float32 inference
    pass a foreground Dice of 0.71 against 0.91); hooks to remove after training."""
    def to_float(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(a.float() for a in args)

    return [m.register_forward_pre_hook(to_float) for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
