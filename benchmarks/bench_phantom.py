"""Benchmark: the synthetic spine CT generator and the RSNA-layout writer.

Prints:

* the wall time of ``write_rsna_dataset`` for ``--studies`` studies (default 10) of 200×256×256 with
  ``--workers`` processes (default 2): generation, DICOM series, NIfTI segmentation and CSVs, against
  the target of 60 s for 10 studies on 2 cores;
* one study's stages (generate, write DICOM, write NIfTI), single process;
* with ``--reference``: the vertebra shapes of one study (signed distances of every part), ours
  (each part on its own bounding box) against the naive way (every part on the vertebra's whole
  bounding box), best of 3, and the ratio naive / ours.

Usage: ``.venv/bin/python benchmarks/bench_phantom.py [--studies 10] [--workers 2] [--seed 2022]
[--shape 200x256x256] [--reference]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spine_core.io.dicom_write import SeriesInfo, write_series  # noqa: E402
from spine_core.phantom.rsna_layout import write_rsna_dataset, write_segmentation  # noqa: E402
from spine_core.phantom import anatomy, generate_study  # noqa: E402

TARGET_S_PER_10 = 60.0


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def _shapes_naive_vs_ours(seed: int, shape: tuple[int, ...]) -> tuple[float, float]:
    import numpy as np

    from spine_core.phantom.vertebra import build_vertebra

    anat = anatomy.build_anatomy(np.random.default_rng(seed), shape)  # type: ignore[arg-type]
    jobs = []
    for spec in anat.levels:
        vert = build_vertebra(spec)
        grid = anatomy.local_grid(anat, anat.frames[spec.name], *vert.bounds)
        if grid is not None:
            jobs.append((vert, grid))

    def run() -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for vert, grid in jobs:
                vert.sdf(grid)
            best = min(best, time.perf_counter() - t0)
        return best

    ours = run()
    original = anatomy.LocalGrid.sub
    anatomy.LocalGrid.sub = lambda self, lo, hi: (slice(None),) * 3  # type: ignore[method-assign]
    try:
        naive = run()
    finally:
        anatomy.LocalGrid.sub = original  # type: ignore[method-assign]
    return naive, ours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--shape", default="200x256x256")
    ap.add_argument("--reference", action="store_true", help="also time the naive evaluation")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        total, manifest = _timed(write_rsna_dataset, root / "ds", args.studies, args.seed,
                                 shape=shape, workers=args.workers)
        budget = TARGET_S_PER_10 * args.studies / 10
        n_files = sum(1 for _ in (root / "ds" / "train_images").rglob("*.dcm"))
        print(f"write_rsna_dataset: {args.studies} studies {args.shape}, {args.workers} workers: "
              f"{total:.1f} s ({total / args.studies:.2f} s/study, {n_files} DICOM files); "
              f"target {budget:.0f} s -> {budget / total:.2f}x headroom")
        positive = sum(1 for s in manifest.studies if s.fractured)
        print(f"  {positive}/{args.studies} positive, "
              f"{sum(1 for s in manifest.studies if s.missed)} with a fracture the report missed")

        gen_s, study = _timed(generate_study, args.seed, shape)
        dcm_s, _ = _timed(write_series, study.image, root / "one",
                          SeriesInfo(study.study_uid, study.series_uid),
                          instance_numbers=study.instance_numbers)
        nii_s, _ = _timed(write_segmentation, study.labels, root / "one.nii", study.nifti_axcodes)
        print(f"one study, one process: generate {gen_s:.2f} s, DICOM {dcm_s:.2f} s, "
              f"NIfTI {nii_s:.2f} s")

        if args.reference:
            naive_s, ours_s = _shapes_naive_vs_ours(args.seed, shape)
            print(f"vertebra shapes of one study: ours {ours_s:.3f} s, naive (parts on the whole "
                  f"vertebra box) {naive_s:.3f} s; naive / ours = {naive_s / ours_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
