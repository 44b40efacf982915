"""Benchmark: batch prediction of N phantom studies, sequential (`spine predict`) vs Ray actors
(`spine predict --ray`), on this machine, CPU.

Both runs predict the same imported studies into a real SQLite workspace with the shipped demo
weights and store every prediction (the Ray run with ``replace``, so it does the same work):

* sequential — :func:`db.predictions.predict_many` with one in-process ``LocalPredictor`` using
  ``--cpus`` torch threads (model load included, as ``spine predict`` pays it);
* ray — :func:`db.ray_batch.predict_many_ray` on a local Ray of ``--cpus``
  CPUs with ``--actors`` actors of one CPU each (actor start and model loads included; the Ray
  start itself is timed apart).

Prints studies/s of both and the ratio ray / sequential. On one machine Ray can only win where
one study does not keep all cores busy; its point is many GPUs and nodes, which this does not
measure.

Usage: ``.venv/bin/python benchmarks/bench_ray_batch.py [--studies 6] [--shape 96x128x128]
[--cpus 2] [--actors 2]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from db import models as m  # noqa: E402
from db.predictions import predict_many  # noqa: E402
from db.session import unit_of_work  # noqa: E402
from spine_core.config import Settings  # noqa: E402
from db.importer import import_path  # noqa: E402
from spine_core.phantom.rsna_layout import write_rsna_dataset  # noqa: E402
from db.workspace import open_workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--shape", default="96x128x128", help="SLICESxROWSxCOLS of each study")
    parser.add_argument("--cpus", type=int, default=2, help="torch threads / local Ray CPUs")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")

    import ray
    import torch

    from spine_core.inference.local import LocalPredictor
    from db.ray_batch import RayBatchOptions, predict_many_ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        write_rsna_dataset(root / "ds", n_studies=args.studies, seed=5, shape=shape, workers=args.cpus)
        settings = Settings(data_dir=root / "var", workers=args.cpus, device="cpu")
        import_path(root / "ds", settings, actor="bench", progress=False)
        ws = open_workspace(settings)
        with unit_of_work(ws.sessions, readonly=True) as s:
            ids = list(s.scalars(select(m.Study.id).order_by(m.Study.id)))
        print(f"{len(ids)} studies of {shape}, {args.cpus} CPUs")

        torch.set_num_threads(args.cpus)
        t0 = time.perf_counter()
        report = predict_many(ws, LocalPredictor.from_dir(device="cpu"), ids, actor="bench")
        sequential = time.perf_counter() - t0
        print(f"sequential: {report.summary()} in {sequential:.1f} s = {len(ids) / sequential:.3f} studies/s")

        t1 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=200 * 2**20,
                 log_to_driver=False, logging_level=logging.WARNING)
        ray_start = time.perf_counter() - t1
        try:
            t2 = time.perf_counter()
            report = predict_many_ray(ws, ids, actor="bench", replace=True,
                                      options=RayBatchOptions(actors=args.actors))
            on_ray = time.perf_counter() - t2
        finally:
            ray.shutdown()
        print(f"ray ({args.actors} actors): {report.summary()} in {on_ray:.1f} s "
              f"= {len(ids) / on_ray:.3f} studies/s (+ {ray_start:.1f} s to start Ray)")
        print(f"ratio ray / sequential (studies/s): {sequential / on_ray:.2f} "
              f"(with the Ray start: {sequential / (on_ray + ray_start):.2f})")


if __name__ == "__main__":
    main()
