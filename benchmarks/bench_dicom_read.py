"""Benchmark: read a CT series (default 300×512×512) with load_series vs SimpleITK vs naive pydicom.

Writes the series with ``spine_core.io.dicom_write.write_series`` into a temporary folder (shuffled
file names, InstanceNumber running against position), then times, each the median of ``--repeat``
runs on a warm page cache:

* ours    — ``load_series(folder)``: header pass, sort, geometry checks, decode, rescale (int16).
* SimpleITK — ``ImageSeriesReader.GetGDCMSeriesFileNames`` (its own sort) + ``Execute``.
* naive   — ``dcmread`` every file, sort by position, stack ``pixel_array``, rescale to float32.

and the re-open time of the cached volume through :class:`spine_core.io.cache.VolumeCache`.
All three readers are checked to return the same HU before timing is reported.

Usage: ``.venv/bin/python benchmarks/bench_dicom_read.py [--slices 300] [--size 512] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
import pydicom

from spine_core.io.cache import VolumeCache, fingerprint_files
from spine_core.io.dicom import load_series, plan_series, scan_dicom_tree
from spine_core.io.dicom_write import SeriesInfo, ct_affine, write_series
from spine_core.volume import Volume


def make_series(folder: Path, slices: int, size: int) -> list[Path]:
    """A synthetic CT (air, body ellipse, bone) written as ``slices`` files of size×size."""
    z, y, x = np.ogrid[:slices, :size, :size]
    c = (size - 1) / 2
    body = ((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.36 * size)) ** 2 < 1
    bone = ((y - c * 1.1) / (0.06 * size)) ** 2 + ((x - c) / (0.07 * size)) ** 2 < 1
    rng = np.random.default_rng(0)
    hu = np.full((slices, size, size), -1000, dtype=np.int16)
    hu[:, body[0]] = 40
    hu[:, bone[0]] = 700
    hu += (rng.normal(0, 15, hu.shape) + 5 * np.sin(z / 7.0)).astype(np.int16)
    vol = Volume(hu, ct_affine(hu.shape, (1.0, 0.5, 0.5), superior_first=True))
    info = SeriesInfo(study_uid="1.2.826.0.1.3680043.8.498.1", series_uid="1.2.826.0.1.3680043.8.498.2")
    perm = rng.permutation(slices)
    return write_series(vol, folder, info, file_name=lambda i, n: f"IM{perm[i]:05d}")


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def read_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_naive(folder: Path) -> np.ndarray:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stack = np.stack([ds.pixel_array for ds in datasets])
    return stack.astype(np.float32) * float(datasets[0].RescaleSlope) + float(
        datasets[0].RescaleIntercept
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="load_series threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        files = make_series(folder, args.slices, args.size)
        print(f"wrote {len(files)} files of {args.size}×{args.size} in "
              f"{time.perf_counter() - t0:.1f} s")

        t_ours, vol = timed(lambda: load_series(folder, workers=args.workers), args.repeat)
        t_scan, scan = timed(lambda: scan_dicom_tree(folder, workers=1), args.repeat)
        plan = plan_series(scan.series[0])
        t_pixels = timed(lambda: load_series(plan, workers=args.workers), args.repeat)[0]
        t_sitk, arr_sitk = timed(lambda: read_sitk(folder), args.repeat)
        t_naive, arr_naive = timed(lambda: read_naive(folder), args.repeat)

        # SimpleITK and the naive loop sort ascending along z as we do (axial, normal +z).
        assert vol.array.dtype == np.int16, vol.array.dtype
        assert np.array_equal(vol.array, arr_sitk), "SimpleITK disagrees"
        assert np.array_equal(vol.array, arr_naive), "naive loop disagrees"

        cache = VolumeCache(Path(tmp) / "cache")
        fp = fingerprint_files(files)
        t0 = time.perf_counter()
        cache.put(vol.meta["series_uid"], fp, vol)
        t_put = time.perf_counter() - t0
        reopen = []
        for _ in range(max(7, args.repeat)):
            t0 = time.perf_counter()
            cached = cache.get(vol.meta["series_uid"], fp)
            assert cached is not None
            _ = int(cached.array[args.slices // 2, args.size // 2, args.size // 2])
            reopen.append(time.perf_counter() - t0)
        t_get_or_load = timed(
            lambda: cache.get_or_load(vol.meta["series_uid"], files, lambda: load_series(files)),
            args.repeat,
        )[0]

    n = args.slices
    print(f"series: {n}×{args.size}×{args.size} int16, uncompressed, warm page cache, "
          f"median of {args.repeat}")
    print(f"  load_series (ours)         {t_ours * 1000:8.1f} ms"
          f"  (header pass {t_scan * 1000:.0f} ms, pixels+rescale {t_pixels * 1000:.0f} ms)")
    print(f"  SimpleITK ImageSeriesReader {t_sitk * 1000:7.1f} ms")
    print(f"  naive pydicom loop         {t_naive * 1000:8.1f} ms")
    print(f"  ratio ours/SimpleITK       {t_ours / t_sitk:8.2f}")
    print(f"  ratio ours/naive           {t_ours / t_naive:8.2f}")
    print(f"cache: put {t_put * 1000:.0f} ms; re-open (median of {len(reopen)}) "
          f"{statistics.median(reopen) * 1000:.2f} ms; get_or_load hit incl. fingerprint of "
          f"{n} files {t_get_or_load * 1000:.1f} ms")


if __name__ == "__main__":
    main()
