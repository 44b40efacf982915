"""Benchmark: render one 512×512 slice (window, level overlay, encoding) vs a naive reference.

Builds a synthetic CT (body ellipse, noise of 15 HU, a vertebral column labelled C1–T12 in a mask)
and times, each the median of ``--repeat`` runs in this process:

* window          — ``apply_window`` (cached 64 Ki LUT)       vs float64 ``np.clip`` formula.
* window+overlay  — + ``colour_overlay`` (one blend-table gather) vs a loop over levels, blending
  each level's pixels in float64.
* +encode PNG     — + ``encode_png`` (zlib level 1, no filter) vs Pillow PNG default settings;
  Pillow PNG at compress_level=1 is shown too (it always runs adaptive row filters).
* +encode JPEG    — + ``encode_jpeg`` (quality 90).
* render_slice    — the whole call from the Volume (plane cut, window, overlay, PNG) in the
  axial and sagittal planes (the sagittal one is resampled to square pixels).

The target is a median of at most 10 ms for window + overlay + encoding of a 512×512 slice.
Every fast path is checked against its reference before timing (identical pixels, or ±1 grey
level for the rounding of the naive window).

Usage: ``.venv/bin/python benchmarks/bench_render.py [--slices 120] [--repeat 50]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
from PIL import Image

from spine_core.io.dicom_write import ct_affine
from spine_core.labels import LEVEL_COLOURS
from spine_core.render import (
    BONE,
    OverlayStyle,
    apply_window,
    colour_overlay,
    encode_jpeg,
    encode_png,
    render_slice,
)
from spine_core.volume import Volume


def make_volume(slices: int, size: int = 512) -> tuple[Volume, Volume]:
    """Synthetic CT (int16 HU) and its C1–T12 level mask on an axial grid."""
    rng = np.random.default_rng(0)
    y, x = np.ogrid[:size, :size]
    c = size / 2
    body = ((y - c) / (0.36 * size)) ** 2 + ((x - c) / (0.45 * size)) ** 2 < 1
    fat = body & ~(((y - c) / (0.32 * size)) ** 2 + ((x - c) / (0.41 * size)) ** 2 < 1)
    spine = ((y - 0.64 * size) / (0.06 * size)) ** 2 + ((x - c) / (0.06 * size)) ** 2 < 1
    base = np.where(body, 40, -1000).astype(np.int16)
    base[fat] = -100
    base[spine] = 700
    arr = np.empty((slices, size, size), np.int16)
    mask = np.zeros((slices, size, size), np.uint8)
    for k in range(slices):
        arr[k] = base + rng.normal(0, 15, (size, size)).astype(np.int16)
        level = 19 - (k * 19) // slices  # C1 at the top (high k = superior)
        mask[k][spine] = level if k % max(1, slices // 19) > 1 else 0  # gaps = discs
    aff = ct_affine(arr.shape, (2.5, 0.7, 0.7))
    vol = Volume(arr, aff)
    return vol, vol.with_array(mask)


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def naive_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    lo = level - width / 2
    return np.clip((hu.astype(np.float64) - lo) / width * 255.0, 0, 255).astype(np.uint8)


def naive_overlay(grey: np.ndarray, labels: np.ndarray, opacity: float) -> np.ndarray:
    rgb = np.stack([grey] * 3, axis=-1).astype(np.float64)
    for lid in np.unique(labels):
        if lid == 0:
            continue
        m = labels == lid
        rgb[m] = rgb[m] * (1 - opacity) + np.asarray(LEVEL_COLOURS[int(lid)], float) * opacity
    return np.rint(rgb).astype(np.uint8)


def pillow_png(rgb: np.ndarray, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", **options)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    vol, mask = make_volume(args.slices)
    k = args.slices // 2
    hu, labels = vol.array[k], mask.array[k]
    w, lv = BONE.width, BONE.level
    style = OverlayStyle(opacity=0.4)

    # correctness first
    grey = apply_window(hu, w, lv)
    assert np.abs(grey.astype(int) - naive_window(hu, w, lv).astype(int)).max() <= 1
    rgb = colour_overlay(grey, labels, style)
    np.testing.assert_array_equal(rgb, naive_overlay(grey, labels, style.opacity))
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(rgb))))
    np.testing.assert_array_equal(decoded, rgb)

    r = args.repeat
    rows = [
        (
            "window",
            median_ms(lambda: apply_window(hu, w, lv), r),
            median_ms(lambda: naive_window(hu, w, lv), r),
        ),
        (
            "window+overlay",
            median_ms(lambda: colour_overlay(apply_window(hu, w, lv), labels, style), r),
            median_ms(lambda: naive_overlay(naive_window(hu, w, lv), labels, 0.4), r),
        ),
        (
            "+encode PNG",
            median_ms(lambda: encode_png(colour_overlay(apply_window(hu, w, lv), labels, style)), r),
            median_ms(lambda: pillow_png(naive_overlay(naive_window(hu, w, lv), labels, 0.4)), r),
        ),
        (
            "+encode JPEG q90",
            median_ms(lambda: encode_jpeg(colour_overlay(apply_window(hu, w, lv), labels, style)), r),
            median_ms(lambda: pillow_png(naive_overlay(naive_window(hu, w, lv), labels, 0.4)), r),
        ),
    ]
    sag = vol.shape[2] // 2
    full = [
        ("render_slice axial +PNG", lambda: encode_png(render_slice(vol, mask, "axial", k))),
        ("render_slice sagittal +PNG", lambda: encode_png(render_slice(vol, mask, "sagittal", sag))),
        ("render_slice axial +JPEG", lambda: encode_jpeg(render_slice(vol, mask, "axial", k))),
    ]
    print(f"512×512 slice of a {vol.shape} int16 volume, median of {r} runs, ms")
    print(f"{'step':<30}{'ours':>9}{'naive':>9}{'ratio':>8}")
    for name, ours, naive in rows:
        print(f"{name:<30}{ours:>9.2f}{naive:>9.2f}{naive / ours:>7.1f}x")
    for name, fn in full:
        print(f"{name:<30}{median_ms(fn, r):>9.2f}")
    lvl1 = median_ms(lambda: pillow_png(rgb, compress_level=1), r)
    ours_png = median_ms(lambda: encode_png(rgb), r)
    print(f"{'PNG only: ours vs Pillow lvl 1':<30}{ours_png:>9.2f}{lvl1:>9.2f}{lvl1 / ours_png:>7.1f}x")
    print(
        f"sizes: ours PNG {len(encode_png(rgb)) // 1024} KiB, Pillow default "
        f"{len(pillow_png(rgb)) // 1024} KiB, JPEG q90 {len(encode_jpeg(rgb)) // 1024} KiB"
    )


if __name__ == "__main__":
    main()
