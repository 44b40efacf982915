"""Benchmark: build C1–T12 vertebra surfaces from a level mask (target: ≤ 1 s in total).

Makes a synthetic C1–T12-like mask (default 300×256×256, 1.5×0.8×0.8 mm): per level a vertebral
body (ellipsoid) and a posterior arch (a smaller ellipsoid behind it), sizes growing caudally.
Then times, each the median of ``--repeat`` runs:

* ours  — ``vertebra_meshes(mask)``: one ``find_objects`` pass, per level crop, block-average to
  ~1.5 mm, Gaussian smoothing, marching cubes, vertex-clustering decimation, Taubin smoothing.
* naive — per level ``mask == level`` over the whole volume and marching cubes of the binary
  level at full resolution (no crop, no smoothing, no decimation).

and the time to build the Plotly figure and the size of its JSON.

Usage: ``.venv/bin/python benchmarks/bench_mesh.py [--shape 300 256 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np

from spine_core.mesh import plotly_figure, vertebra_meshes
from spine_core.volume import Volume


def make_mask(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    """C1 (top) .. T12 (bottom) as stacked body + arch ellipsoids on an axial grid (a0 -> S)."""
    mask = np.zeros(shape, np.uint8)
    n_levels = 19
    dz, dy, dx = spacing
    pitch = shape[0] / n_levels
    cy, cx = shape[1] * 0.55, shape[2] / 2
    for i, lid in enumerate(range(1, n_levels + 1)):
        k = shape[0] - (i + 0.5) * pitch  # C1 at the top (high a0 = superior)
        grow = 1.0 + 0.8 * i / n_levels
        body = np.array([0.36 * pitch * dz, 9.0 * grow, 12.0 * grow])  # semi-axes in mm (S, P, L)
        arch = np.array([0.30 * pitch * dz, 8.0 * grow, 14.0 * grow])
        for centre_mm_p, axes in ((0.0, body), (body[1] + 6.0 * grow, arch)):
            centre = np.array([k, cy + centre_mm_p / dy, cx])
            half = np.ceil(axes / np.array(spacing)).astype(int)
            lo = np.maximum(np.floor(centre).astype(int) - half, 0)
            hi = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
            a0, a1, a2 = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            inside = (
                ((a0 - centre[0]) * dz / axes[0]) ** 2
                + ((a1 - centre[1]) * dy / axes[1]) ** 2
                + ((a2 - centre[2]) * dx / axes[2]) ** 2
            ) <= 1
            region = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            region[inside & (region == 0)] = lid
    aff = np.zeros((4, 4))
    aff[2, 0], aff[1, 1], aff[0, 2], aff[3, 3] = dz, dy, dx, 1.0
    return Volume(mask, aff)


def naive_meshes(mask: Volume) -> list[tuple[np.ndarray, np.ndarray]]:
    from skimage import measure

    out = []
    for lid in np.unique(mask.array):
        if lid == 0:
            continue
        binary = (mask.array == lid).astype(np.uint8)
        verts, faces, _, _ = measure.marching_cubes(binary, 0.5, spacing=tuple(mask.spacing))
        out.append((verts, faces))
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 256, 256))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spacing = (1.5, 0.8, 0.8)
    mask = make_mask(tuple(args.shape), spacing)  # type: ignore[arg-type]
    levels = int(len(np.unique(mask.array)) - 1)

    ours_s, meshes = timed(lambda: vertebra_meshes(mask), args.repeat)
    assert len(meshes) == levels, "every level gets a mesh"
    naive_s, naive = timed(lambda: naive_meshes(mask), 1)
    fig_s, fig = timed(lambda: plotly_figure(meshes), args.repeat)
    json_kib = len(fig.to_json()) / 1024

    faces = sum(len(m.faces) for m in meshes)
    naive_faces = sum(len(f) for _, f in naive)
    print(f"mask {mask.shape} at {spacing} mm, {levels} levels (C1–T12)")
    print(f"ours   vertebra_meshes : {ours_s * 1000:8.0f} ms  ({ours_s / levels * 1000:.0f} ms/level), "
          f"{faces} faces  [target ≤ 1000 ms]")
    print(f"naive  full-res MC     : {naive_s * 1000:8.0f} ms, {naive_faces} faces")
    print(f"ratio  naive / ours    : {naive_s / ours_s:8.1f}x time, {naive_faces / faces:.1f}x faces")
    print(f"plotly_figure          : {fig_s * 1000:8.0f} ms, JSON {json_kib:.0f} KiB")


if __name__ == "__main__":
    main()
