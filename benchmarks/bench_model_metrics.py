"""Benchmark: the segmentation metrics of one prediction (Dice per level, VerSe identification).

Writes one phantom study of ``--shape``, imports it, predicts it with the threshold model of
``tests.backend_helpers`` and times:

* centroids — :func:`spine_core.metrics.label_centroids` against the reference
  :func:`spine_core.io.verse.centroids_from_labels` on the dataset mask (ratio > 1: faster);
* first     — :func:`db.model_metrics.segmentation_metrics` reading both masks;
* cached    — the same call again, answered from ``data_dir/metrics`` (ratio first / cached).

Usage: ``.venv/bin/python benchmarks/bench_model_metrics.py [--shape 200x256x256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="200x256x256", help="SLICESxROWSxCOLS of the phantom")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))

    import numpy as np
    from sqlalchemy import select

    from db import models as m
    from db.model_metrics import METRICS_DIR, segmentation_metrics
    from spine_core.metrics import label_centroids
    from db.predictions import predict_many
    from db.session import unit_of_work
    from spine_core.io.masks import align_mask_to_image
    from spine_core.io.nifti import load_nifti
    from spine_core.io.verse import centroids_from_labels
    from spine_core.labels import VOCABULARIES
    from spine_core.phantom.rsna_layout import write_rsna_dataset
    from spine_core.volume import Volume
    from tests.backend_helpers import BoneThresholdPredictor
    from tests.prediction_helpers import import_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_rsna_dataset(root / "ds", n_studies=1, seed=3, shape=shape,  # type: ignore[arg-type]
                           workers=1)
        db_url = f"sqlite:///{root / 'var' / 'spine.db'}"
        imported = import_dataset(root / "ds", db_url, root / "var")
        predict_many(imported.ws, BoneThresholdPredictor(), imported.study_ids, actor="bench")
        with unit_of_work(imported.ws.sessions, readonly=True) as s:
            prediction_id = s.scalars(select(m.Prediction.id)).one()
            series = s.scalars(select(m.Series)).one()
            mask_row = s.scalars(select(m.Mask)).one()
        grid = Volume(np.zeros(tuple(series.shape), np.uint8), np.asarray(series.affine))
        truth = align_mask_to_image(load_nifti(mask_row.path), grid,
                                    vocabulary=VOCABULARIES[mask_row.vocabulary]).array

        ours = _median_s(lambda: label_centroids(truth, grid), args.repeat)
        reference = _median_s(lambda: centroids_from_labels(truth, grid), args.repeat)
        print(f"centroids of a {args.shape} mask: {ours * 1e3:.0f} ms vs centroids_from_labels "
              f"{reference * 1e3:.0f} ms -> {reference / ours:.1f}x faster")

        def first() -> None:
            shutil.rmtree(imported.ws.settings.data_dir / METRICS_DIR, ignore_errors=True)
            segmentation_metrics(imported.ws, [prediction_id])

        cold = _median_s(first, args.repeat)
        warm = _median_s(lambda: segmentation_metrics(imported.ws, [prediction_id], compute=False),
                         args.repeat)
        print(f"segmentation metrics of one prediction: first {cold:.2f} s, cached "
              f"{warm * 1e3:.1f} ms -> cache {cold / warm:.0f}x faster")


if __name__ == "__main__":
    main()
