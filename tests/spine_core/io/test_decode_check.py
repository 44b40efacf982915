"""spine_core.io.decode_check: compressed pixel data is decoded in child processes, so a slice that
makes the codec abort (exit 134 in-process) is named instead of taking the caller down."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from spine_core.errors import DicomError
from spine_core.io.decode_check import HANG_HOOK_ENV, check_pixels_decode
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume

ABORT_FRAME = Path(__file__).resolve().parents[2] / "data" / "hostile" / "j2k_abort_frame.j2k"


def _j2k_series(folder: Path, n: int = 4) -> list[Path]:
    hu = np.random.default_rng(3).integers(-1000, 1500, size=(n, 64, 64)).astype(np.int16)
    files = write_series(Volume(hu, ct_affine(hu.shape, (2.0, 0.7, 0.7))), folder,
                         SeriesInfo(uid_from_seed("dc", folder.name), uid_from_seed("dc", "s")))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless, encoding_plugin="")
        ds.save_as(path)
    return files


def _replace_frame(path: Path, frame: bytes) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([frame])
    ds.save_as(path)


def test_good_series_passes(tmp_path: Path) -> None:
    check_pixels_decode(_j2k_series(tmp_path / "ok"), processes=2)


def test_a_slice_that_aborts_the_codec_is_named(tmp_path: Path) -> None:
    files = _j2k_series(tmp_path / "abort")
    _replace_frame(files[2], ABORT_FRAME.read_bytes())
    with pytest.raises(DicomError) as caught:
        check_pixels_decode(files, label="series X", processes=2)
    said = str(caught.value)
    assert said.startswith(f"series X: {files[2].name}: its pixel data crashed the decoder")
    assert "SIGABRT" in said and "\n" not in said


def test_a_slice_that_cannot_be_decoded_is_named_first_in_order(tmp_path: Path) -> None:
    files = _j2k_series(tmp_path / "bad")
    good = next(pydicom.encaps.generate_frames(pydicom.dcmread(files[1]).PixelData,
                                               number_of_frames=1))
    _replace_frame(files[1], good[: len(good) // 3])  # cut off: the codecs raise, no crash
    _replace_frame(files[3], ABORT_FRAME.read_bytes())
    with pytest.raises(DicomError) as caught:
        check_pixels_decode(files, processes=1)
    said = str(caught.value)
    assert said.startswith(f"{files[1].name}: ") and "(and 1 more damaged files)" in said, said


def _decode_children() -> list[int]:
    """Pids of this process's decode children still alive (from /proc)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next((int(line.split()[1]) for line in text.splitlines()
                     if line.startswith("PPid:")), -1)
        if ppid == os.getpid() and b"spine_core.io.decode_check" in cmdline:
            pids.append(int(status.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="lists children from /proc")
def test_a_slice_whose_decode_hangs_is_named_within_the_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real child, stopped for good on one file (its test hook): the parent kills it once the
    file has taken the configured timeout (SPINE_DECODE_TIMEOUT_S), names the file and leaves no
    child behind."""
    files = _j2k_series(tmp_path / "hang", n=6)
    monkeypatch.setenv(HANG_HOOK_ENV, files[4].name)
    monkeypatch.setenv("SPINE_DECODE_TIMEOUT_S", "1.5")
    started = time.monotonic()
    with pytest.raises(DicomError) as caught:
        check_pixels_decode(files, label="series H", processes=2)
    took = time.monotonic() - started
    said = str(caught.value)
    assert said == (f"series H: {files[4].name}: decoding its pixel data did not finish in 1.5 s "
                    "(SPINE_DECODE_TIMEOUT_S), the decoder hangs on it; the file is damaged — "
                    "re-export or remove it (or raise the limit if it is that large)")
    assert 1.5 <= took < 1.5 + 15, f"took {took:.1f} s"  # the child's start-up, then 1.5 s
    assert _decode_children() == []
    # the setting reaches the check; an explicit timeout wins over it
    with pytest.raises(DicomError, match=r"did not finish in 0\.5 s"):
        check_pixels_decode(files[4:], timeout_s=0.5)


def test_a_good_series_is_not_cut_short_by_the_timeout(tmp_path: Path) -> None:
    """Each file has its own timeout from when its child starts it, not the series as a whole."""
    files = _j2k_series(tmp_path / "many", n=12)
    check_pixels_decode(files, processes=1, timeout_s=2.0)


def test_a_multi_frame_file_gets_the_timeout_per_hundred_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of 250 frames may take 2.5 times the per-file timeout before it counts as hung."""
    one = pydicom.dcmread(write_series(
        Volume(np.zeros((2, 32, 32), dtype=np.int16), ct_affine((2, 32, 32), (1.0, 1.0, 1.0))),
        tmp_path / "src", SeriesInfo(uid_from_seed("mf", "a"), uid_from_seed("mf", "b")))[0])
    frames = np.random.default_rng(1).integers(0, 1000, size=(250, 32, 32)).astype(np.int16)
    one.NumberOfFrames = 250
    one.PixelData = frames.tobytes()
    one.compress(JPEG2000Lossless, encoding_plugin="")
    path = tmp_path / "multi.dcm"
    one.save_as(path)
    monkeypatch.setenv(HANG_HOOK_ENV, path.name)
    started = time.monotonic()
    with pytest.raises(DicomError, match=r"^multi\.dcm: decoding its pixel data did not finish "
                                         r"in 1 s \(SPINE_DECODE_TIMEOUT_S\)"):
        check_pixels_decode([path], timeout_s=0.4)
    assert time.monotonic() - started >= 1.0
