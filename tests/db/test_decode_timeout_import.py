"""A compressed slice whose decode hangs is refused at import within SPINE_DECODE_TIMEOUT_S, on
SQLite and PostgreSQL: the real ``spine import`` and the real decode child, stopped for good on one
file through the child's test hook (``decode_check.HANG_HOOK_ENV``), as a decoder that hangs would.
One line names the folder, the file and the series and says what to do; nothing is recorded; the
good study beside it is imported."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import select

from db import models as m
from db.session import make_engine, make_sessionmaker
from spine_cli.main import main
from spine_core.io.decode_check import HANG_HOOK_ENV
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.volume import Volume
from tests.db_fixtures import row_counts

TIMEOUT_S = 2.0


def _j2k_study(folder: Path, seed: str, n: int = 5) -> list[Path]:
    hu = np.random.default_rng(7).integers(-1000, 1500, size=(n, 48, 48)).astype(np.int16)
    files = write_series(Volume(hu, ct_affine(hu.shape, (2.0, 0.7, 0.7))), folder,
                         SeriesInfo(uid_from_seed("hang", seed), uid_from_seed("hang", seed + "s")))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless, encoding_plugin="")
        ds.save_as(path)
    return files


def test_a_slice_whose_decode_hangs_is_refused_at_import_in_one_line(
        migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    hung = _j2k_study(data / "bad", "bad")[3]
    _j2k_study(data / "good", "good")
    hung.rename(hung.with_name("hangs.dcm"))
    monkeypatch.setenv(HANG_HOOK_ENV, "hangs.dcm")
    monkeypatch.setenv("SPINE_DECODE_TIMEOUT_S", str(TIMEOUT_S))
    before = row_counts(migrated_db_url)
    started = time.monotonic()
    code = main(["import", str(data), "--no-progress", "--db", migrated_db_url,
                 "--data-dir", str(tmp_path / "var"), "--workers", "1"])
    took = time.monotonic() - started
    out = capsys.readouterr()
    output = out.out + out.err
    assert code == 3, output
    assert "Traceback" not in output and "internal error" not in output
    named = [line for line in output.splitlines() if "hangs.dcm" in line]
    assert named == [
        f"skipped case bad: bad/hangs.dcm: decoding its pixel data did not finish in {TIMEOUT_S:g} s "
        "(SPINE_DECODE_TIMEOUT_S), the decoder hangs on it; the file is damaged — re-export or "
        "remove it (or raise the limit if it is that large); series "
        f"{uid_from_seed('hang', 'bads')} was not imported"], output
    assert took < TIMEOUT_S + 30, f"the import took {took:.0f} s"
    after = row_counts(migrated_db_url)
    assert after["studies"] == before["studies"] + 1  # the good one
    engine = make_engine(migrated_db_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert s.scalars(select(m.Study.study_uid)).all() == [str(uid_from_seed("hang", "good"))]
    finally:
        engine.dispose()


def test_a_slice_whose_decode_hangs_when_the_cache_is_filled_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The file went bad after import (here: the decoder now hangs on it): ``spine export nifti``
    fills the cache through the same check, so it names the file within the timeout instead of
    waiting for ever."""
    data = tmp_path / "data"
    files = _j2k_study(data / "study", "later")
    db_url = f"sqlite:///{tmp_path / 'spine.db'}"
    assert main(["import", str(data), "--no-progress", "--db", db_url,
                 "--data-dir", str(tmp_path / "var"), "--workers", "1"]) == 0
    capsys.readouterr()
    monkeypatch.setenv(HANG_HOOK_ENV, files[2].name)
    monkeypatch.setenv("SPINE_DECODE_TIMEOUT_S", str(TIMEOUT_S))
    started = time.monotonic()
    code = main(["export", "nifti", str(uid_from_seed("hang", "later")), str(tmp_path / "out"),
                 "--db", db_url, "--data-dir", str(tmp_path / "fresh-cache"), "--workers", "1"])
    took = time.monotonic() - started
    got = capsys.readouterr()
    output = got.out + got.err
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and files[2].name in lines[0], output
    assert f"did not finish in {TIMEOUT_S:g} s (SPINE_DECODE_TIMEOUT_S)" in lines[0], output
    assert "Traceback" not in output and "internal error" not in output
    assert took < TIMEOUT_S + 30, f"the export took {took:.0f} s"
