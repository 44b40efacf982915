"""Benchmark: both model stages on one 256×256×200 phantom study, CPU (and GPU where present).

Times, each the median of ``--repeat`` runs after one warm-up:

* ours — :meth:`LocalPredictor.predict`: sampling onto the 2 mm model grid, MONAI
  ``sliding_window_inference`` of the segmentation UNet there, mask back to the input grid,
  per-vertebra crops and the fracture classifier (both stages, end to end);
* plain — MONAI's ``sliding_window_inference`` of the *same* segmentation network straight on the
  input grid (no resampling, same ROI and overlap): what running the network without our
  preprocessing would cost, for the segmentation stage alone.

Prints the stage timings and the ratio plain / ours. The target for ours is 10 s on 2 CPU cores.

Usage: ``.venv/bin/python benchmarks/bench_inference.py [--threads 2] [--repeat 3] [--seed 7]
[--weights DIR] [--no-plain]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from spine_core.inference.local import LocalPredictor  # noqa: E402
from spine_core.inference.preprocess import volume_tensor  # noqa: E402
from spine_core.inference.segmentation import autocast  # noqa: E402
from spine_core.phantom import generate_study  # noqa: E402

TARGET_S = 10.0


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def plain_sliding_window(predictor: LocalPredictor, image: torch.Tensor) -> torch.Tensor:
    """MONAI sliding-window inference of the segmentation net on the input grid as it is."""
    from monai.inferers import sliding_window_inference

    seg = predictor.segmentation
    with torch.inference_mode(), autocast(seg.device, seg.amp):
        logits = sliding_window_inference(
            image.to(seg.device), roi_size=seg.config.roi_size, sw_batch_size=seg.config.sw_batch_size,
            predictor=seg.net, overlap=seg.config.overlap, mode="gaussian",
        )
    return logits.argmax(dim=1)  # type: ignore[union-attr]


def bench_device(device: str, volume: Any, args: argparse.Namespace) -> None:
    predictor = LocalPredictor.from_dir(args.weights, device=device)
    ours, pred = median_time(lambda: predictor.predict(volume), args.repeat)
    stages = {k: round(v, 3) for k, v in pred.timings.items()}
    print(f"[{device}] ours, both stages: {ours:.2f} s  (stages of the last run: {stages})")
    print(f"[{device}] levels found: {sorted(pred.centroids)}; patient p = {pred.patient_probability:.3f}")
    if device == "cpu":
        verdict = "within" if ours <= TARGET_S else "OVER"
        print(f"[{device}] target {TARGET_S:.0f} s on {args.threads} threads: {verdict}")
    if args.no_plain:
        return
    image = volume_tensor(volume, predictor.segmentation.config.window)
    plain, _ = median_time(lambda: plain_sliding_window(predictor, image), max(1, args.repeat // 2))
    seg_ours = pred.timings.get("segmentation", float("nan"))
    print(f"[{device}] plain MONAI sliding window on the {tuple(volume.shape)} input grid "
          f"(segmentation only): {plain:.2f} s")
    print(f"[{device}] ratio plain / ours: {plain / ours:.1f}x vs both stages, "
          f"{plain / seg_ours:.1f}x vs our segmentation stage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed (default 7)")
    parser.add_argument("--weights", default=None, help="weights folder (default: shipped demo weights)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain sliding-window reference")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    volume = generate_study(args.seed, shape=(200, 256, 256)).image
    print(f"phantom seed {args.seed}: shape {volume.shape}, spacing {volume.spacing.round(3).tolist()} mm, "
          f"torch {torch.__version__}, {args.threads} CPU threads")
    bench_device("cpu", volume, args)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
        bench_device("cuda", volume, args)
    else:
        print("no CUDA device here: GPU figures skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
