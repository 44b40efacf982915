"""Benchmark: the radiograph ensemble on a 2,000 x 2,000 film, CPU.

Times, each the median of ``--repeat`` runs after one warm-up, in one process:

* ours — :meth:`XrayModel.predict` (ensemble): the film resized to the model grid, both networks,
  the ensemble decoding, labels, and the mask drawn at 2,000 x 2,000 (end to end);
* reference — the same two networks run straight on the film at full size (no downsampling):
  what skipping our internal downsampling would cost, networks alone.

Prints both and the ratio reference / ours. The target for ours is 2 s on 2 CPU threads.

Usage: ``.venv/bin/python benchmarks/bench_xray_inference.py [--threads 2] [--repeat 3]
[--weights DIR] [--no-reference]``
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from spine_core.inference.xray.model import XrayModel  # noqa: E402
from spine_core.phantom.radiograph import project_lateral  # noqa: E402
from spine_core.phantom.spine_study import generate_spine_study  # noqa: E402

TARGET_S = 2.0
SIDE = 2000


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def film_2000(seed: int) -> np.ndarray:
    """A synthetic lateral cervical film resized to 2,000 x 2,000 (bilinear)."""
    study = generate_spine_study(seed, (256, 128, 128), region="whole")
    film = project_lateral(study, "cervical", np.random.default_rng(seed))
    t = torch.from_numpy(film.image.astype(np.float32))[None, None]
    return F.interpolate(t, size=(SIDE, SIDE), mode="bilinear")[0, 0].numpy().astype(np.uint16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--weights", help="weights folder (default: the shipped demo weights)")
    parser.add_argument("--no-reference", action="store_true", help="skip the full-size run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = XrayModel.from_dir(args.weights)
    image = film_2000(7)
    ours, pred = median_time(lambda: model.predict(image), args.repeat)
    print(f"film {image.shape[0]}x{image.shape[1]}, {args.threads} threads, model grid "
          f"{model.config.grid}: {len(pred.vertebrae)} vertebrae, region {pred.region}")
    print(f"ours (ensemble, end to end): {ours:.3f} s  (networks {pred.timings['networks']:.3f} s, "
          f"decode {pred.timings['decode']:.3f} s)  target <= {TARGET_S} s: "
          f"{'met' if ours <= TARGET_S else 'NOT met'}")
    if not args.no_reference:
        full = torch.from_numpy(image.astype(np.float32) / 4095.0)[None, None]

        @torch.no_grad()
        def reference() -> None:
            model.unet(full)
            model.detector(full)

        ref, _ = median_time(reference, 1)
        print(f"reference (both networks on the full film, no downsampling): {ref:.3f} s  "
              f"ratio reference / ours: {ref / ours:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
