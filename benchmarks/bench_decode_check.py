"""Benchmark: what the isolated trial decode (spine_core.io.decode_check) costs at import.

Writes a JPEG 2000 (lossless) CT series and a native copy of it, then times, each the median of
``--repeat`` runs on a warm page cache:

* prepare native — the import's pass 1 (``prepare_case``) on the native series: no child process
  (the reference for an uncompressed import, unchanged by the check);
* prepare j2k    — the same on the JPEG 2000 series: header pass + trial decode in child processes;
* decode j2k     — ``load_series`` of the JPEG 2000 series in this process (what a viewer or an
  export pays once per series to fill the cache), the reference for the check's cost;
* check j2k      — ``check_pixels_decode`` alone.

and prints each against its reference as a ratio.

Usage: ``.venv/bin/python benchmarks/bench_decode_check.py [--slices 120] [--size 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless

from spine_core.io.decode_check import check_pixels_decode
from spine_core.io.dicom import load_series
from spine_core.io.dicom_write import SeriesInfo, ct_affine, write_series
from spine_core.io.prepare import prepare_case
from spine_core.volume import Volume


def make_series(folder: Path, slices: int, size: int, compressed: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - size / 2) / (0.45 * size)) ** 2 < 1
    hu = np.where(body, 40, -1000).astype(np.int16)[None].repeat(slices, 0)
    hu += rng.integers(-20, 20, size=hu.shape, dtype=np.int16)
    info = SeriesInfo("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
    files = write_series(Volume(hu, ct_affine(hu.shape, (1.0, 0.7, 0.7))), folder, info)
    if compressed:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000Lossless, encoding_plugin="")
            ds.save_as(path)
    return files


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        native = make_series(root / "native", args.slices, args.size, compressed=False)
        j2k = make_series(root / "j2k", args.slices, args.size, compressed=True)

        def case(folder: Path) -> SimpleNamespace:
            return SimpleNamespace(case_id=folder.name, dataset="dicom", image_path=folder,
                                   image_format="dicom", mask_paths=[])

        def prepare(folder: Path) -> None:
            result = prepare_case(case(folder), root / "masks")
            assert not hasattr(result, "reason"), result

        t_native = median_time(lambda: prepare(root / "native"), args.repeat)
        t_j2k = median_time(lambda: prepare(root / "j2k"), args.repeat)
        t_decode = median_time(lambda: load_series(j2k), args.repeat)
        t_check = median_time(lambda: check_pixels_decode(j2k), args.repeat)
    print(f"{args.slices} slices of {args.size}×{args.size}, median of {args.repeat}")
    print(f"prepare native {t_native:7.3f} s  (reference, no child process; {len(native)} files)")
    print(f"prepare j2k    {t_j2k:7.3f} s  = {t_j2k / t_native:5.1f}× prepare native")
    print(f"decode j2k     {t_decode:7.3f} s  (in-process load_series, reference)")
    print(f"check j2k      {t_check:7.3f} s  = {t_check / t_decode:5.1f}× decode j2k")


if __name__ == "__main__":
    main()
