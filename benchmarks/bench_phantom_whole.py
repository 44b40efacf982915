"""Benchmark: whole-spine synthetic CT studies, generated and written in the VerSe layout.

Prints:

* the wall time of ``write_demo_dataset(region="whole", layout="verse")`` for ``--studies``
  studies (default 10) of ``--shape`` (default 512×256×256) with ``--workers`` processes
  (default 2): generation, NIfTI image, mask, centroid JSON and grades; against the target of
  120 s for 10 studies on 2 cores;
* one study, one process: the whole-spine generator against the reference, the cervical
  generator (``generate_study``) on a grid of the same shape, best of ``--repeat``, and the
  ratio whole / cervical; and the time to write that study's files.

Usage: ``.venv/bin/python benchmarks/bench_phantom_whole.py [--studies 10] [--workers 2]
[--seed 2022] [--shape 512x256x256] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spine_core.phantom import generate_study  # noqa: E402
from spine_core.phantom.cases import from_spine_study  # noqa: E402
from spine_core.phantom.demo import write_demo_dataset  # noqa: E402
from spine_core.phantom.nifti_layouts import write_verse_case  # noqa: E402
from spine_core.phantom.spine_study import generate_spine_study  # noqa: E402

TARGET_S_PER_10 = 120.0


def _best(repeat: int, fn, *args, **kwargs):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--shape", default="512x256x256")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_demo_dataset(root / "ds", region="whole", layout="verse", n_studies=args.studies,
                           seed=args.seed, shape=shape, workers=args.workers)  # type: ignore[arg-type]
        total = time.perf_counter() - t0
        budget = TARGET_S_PER_10 * args.studies / 10
        size = sum(p.stat().st_size for p in (root / "ds").rglob("*") if p.is_file()) / 2**20
        print(f"write_demo_dataset whole/verse: {args.studies} studies {args.shape}, "
              f"{args.workers} workers: {total:.1f} s ({total / args.studies:.2f} s/study, "
              f"{size:.0f} MiB); target {budget:.0f} s -> {budget / total:.2f}x headroom")

        whole_s, study = _best(args.repeat, generate_spine_study, args.seed, shape, region="whole")
        cerv_s, _ = _best(args.repeat, generate_study, args.seed, shape)
        print(f"one study {args.shape}, one process, best of {args.repeat}: whole spine "
              f"{whole_s:.2f} s, cervical generator (reference) {cerv_s:.2f} s; "
              f"whole / cervical = {whole_s / cerv_s:.2f}x")
        write_s, _ = _best(1, write_verse_case, from_spine_study(study), root / "one", 1)
        print(f"  writing it (VerSe NIfTI image + mask + centroids): {write_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
