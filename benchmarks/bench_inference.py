"""Benchmark: both model stages on a cervical 200×256×256 phantom study and a whole-spine
600×512×512 one, CPU (and GPU where present, with mixed precision).

Times, each the median of ``--repeat`` runs after one warm-up:

* ours — :meth:`LocalPredictor.predict`: sampling onto the 2 mm model grid, MONAI
  ``sliding_window_inference`` of the segmentation UNet there, mask back to the input grid,
  per-vertebra crops and the fracture classifier (both stages, end to end);
* plain — MONAI's ``sliding_window_inference`` of the *same* segmentation network straight on the
  input grid (no resampling, same ROI and overlap): what running the network without our
  preprocessing would cost, for the segmentation stage alone.

Prints the stage timings, the ratio plain / ours, and for each study the process's memory: its
resident set before the prediction and its peak during the timed runs (sampled every 10 ms from
/proc/self/status). Targets on 2 CPU threads (issue 13): ≤ 8 s for the cervical study, ≤ 25 s and
≤ 3 GiB peak for the whole-spine study.

Usage: ``.venv/bin/python benchmarks/bench_inference.py [--threads 2] [--repeat 3] [--seed 7]
[--study cervical|whole|both] [--weights DIR] [--no-plain]``
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

#: Targets on 2 CPU threads: seconds per study, and the whole-spine study's peak memory.
TARGET_S = {"cervical": 8.0, "whole": 25.0}
TARGET_PEAK_GIB = 3.0
SHAPES = {"cervical": (200, 256, 256), "whole": (600, 512, 512)}


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """The largest resident set size seen, sampled every 10 ms in a thread, while in use."""

    def __enter__(self) -> PeakRss:
        import threading

        self.peak = rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


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


def bench_device(device: str, volume: Any, study: str, args: argparse.Namespace) -> None:
    predictor = LocalPredictor.from_dir(args.weights, device=device)
    before = rss_bytes()
    with PeakRss() as memory:
        ours, pred = median_time(lambda: predictor.predict(volume), args.repeat)
    gib = 1024.0 ** 3
    stages = {k: round(v, 3) for k, v in pred.timings.items()}
    print(f"[{device}] {study}: ours, both stages: {ours:.2f} s  (stages of the last run: {stages})")
    print(f"[{device}] {study}: levels found: {sorted(pred.centroids)}; "
          f"patient p = {pred.patient_probability:.3f}")
    print(f"[{device}] {study}: process memory {before / gib:.2f} GiB before, peak "
          f"{memory.peak / gib:.2f} GiB during the runs (+{(memory.peak - before) / gib:.2f} GiB)")
    if device == "cpu":
        verdict = "within" if ours <= TARGET_S[study] else "OVER"
        print(f"[{device}] {study}: target {TARGET_S[study]:.0f} s on {args.threads} threads: {verdict}")
        if study == "whole":
            verdict = "within" if memory.peak <= TARGET_PEAK_GIB * gib else "OVER"
            print(f"[{device}] {study}: target peak {TARGET_PEAK_GIB:.0f} GiB: {verdict}")
    if args.no_plain:
        return
    image = volume_tensor(volume, predictor.segmentation.config.window)
    plain, _ = median_time(lambda: plain_sliding_window(predictor, image), max(1, args.repeat // 2))
    seg_ours = pred.timings.get("segmentation", float("nan"))
    print(f"[{device}] {study}: plain MONAI sliding window on the {tuple(volume.shape)} input grid "
          f"(segmentation only): {plain:.2f} s")
    print(f"[{device}] {study}: ratio plain / ours: {plain / ours:.1f}x vs both stages, "
          f"{plain / seg_ours:.1f}x vs our segmentation stage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed (default 7)")
    parser.add_argument("--weights", default=None, help="weights folder (default: shipped demo weights)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain sliding-window reference")
    parser.add_argument("--study", choices=("cervical", "whole", "both"), default="both",
                        help="the cervical 200x256x256 study, the whole-spine 600x512x512 one, or both")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for study in (("cervical", "whole") if args.study == "both" else (args.study,)):
        volume = make_volume(study, args.seed)
        print(f"{study} phantom seed {args.seed}: shape {volume.shape}, spacing "
              f"{volume.spacing.round(3).tolist()} mm, torch {torch.__version__}, "
              f"{args.threads} CPU threads")
        bench_device("cpu", volume, study, args)
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name(0)}")
            bench_device("cuda", volume, study, args)
        else:
            print("no CUDA device here: GPU figures skipped")
        del volume
    return 0


def make_volume(study: str, seed: int) -> Any:
    """The cervical phantom (``generate_study``) or the whole-spine one (``generate_spine_study``)."""
    if study == "cervical":
        return generate_study(seed, shape=SHAPES["cervical"]).image
    from spine_core.phantom.spine_study import generate_spine_study

    return generate_spine_study(seed, SHAPES["whole"], region="whole").image


if __name__ == "__main__":
    raise SystemExit(main())
