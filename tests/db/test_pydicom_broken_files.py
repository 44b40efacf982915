"""pydicom's own broken test files through the real ``spine import``, each into an empty database,
on SQLite and PostgreSQL.

The files are found in pydicom's test data (``pydicom.data.get_testdata_files()``, which includes
pydicom-data's when it is installed): every file without the Part 10 preamble, every file pydicom
itself cannot read cleanly (it raises, or warns while reading the data set), and every file whose
name says it is damaged (truncated, too short, bad VR, no meta, missing transfer syntax...). Each
is either imported (a study recorded) or refused with one line that names the file and says what
to do, never a traceback, an "internal error" or SQL text, and the database is unchanged. Both
databases must answer alike.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from sqlalchemy import select

from db import models as m
from db.session import make_engine, make_sessionmaker
from spine_cli.main import main
from tests.db_fixtures import row_counts

pytestmark = pytest.mark.filterwarnings("ignore")

#: Names that say the file is damaged on purpose.
DAMAGED_NAME = re.compile(r"no_?meta|nometa|no_preamble|truncat|too_short|bad|missing|mismatch|"
                          r"invalid|empty|nooffset|nopatient|padded|UN_sequence|priv_SQ|"
                          r"embedded-sequence", re.IGNORECASE)
NOT_DICOM_SUFFIXES = (".txt", ".json", ".dump", ".icc")
#: Text a refusal must never hold.
FORBIDDEN = ("Traceback", "internal error", "INSERT INTO", "SELECT ", "UPDATE ", "psycopg",
             "sqlite3.", "IntegrityError", "OperationalError", "[Errno")
#: A refusal says what to do: one of these.
ADVICE = ("re-export", "remove it", "export it", "re-copy", "fix ", "import ", "unpack",
          "read it as", "raise the limit")


def _why_broken(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(132)
    if head[128:132] != b"DICM":
        return "no preamble"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            for _ in pydicom.dcmread(path).iterall():
                pass
        except Exception as exc:  # noqa: BLE001 - whatever pydicom says about the file
            return f"pydicom: {type(exc).__name__}"
    if DAMAGED_NAME.search(path.name):
        return "named as damaged"
    return None


def _broken_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for raw in get_testdata_files():
        path = Path(raw)
        if (not path.is_file() or path.suffix in NOT_DICOM_SUFFIXES
                or path.name.startswith("README")):
            continue
        if _why_broken(path) is not None:
            key = path.name
            if key in found:  # the same name in two folders (DICOMDIR...)
                key = f"{path.parent.name}/{path.name}"
            found[key] = path
    return dict(sorted(found.items()))


BROKEN = _broken_files()
_SEEN: dict[str, dict[str, str]] = {}


def test_the_broken_files_are_found() -> None:
    """The selection holds the files the issue names, so the test cannot pass on an empty list."""
    for name in ("no_meta.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "badVR.dcm",
                 "MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
                 "meta_missing_tsyntax.dcm", "rtplan_truncated.dcm"):
        assert name in BROKEN, sorted(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_pydicom_file_is_imported_or_refused_in_one_line(
        name: str, db_backend: str, migrated_db_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = BROKEN[name]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(source, folder / source.name)
    before = row_counts(migrated_db_url)
    code = main(["import", str(folder), "--no-progress", "--db", migrated_db_url,
                 "--data-dir", str(tmp_path / "var"), "--workers", "1"])
    got = capsys.readouterr()
    output = got.out + got.err
    after = row_counts(migrated_db_url)
    for text in FORBIDDEN:
        assert text not in output, f"{name}: {text!r} in the output:\n{output}"
    said = [line for line in output.splitlines() if source.name in line]
    if code == 0:
        assert after["studies"] == before["studies"] + 1 and after["series"] >= 1, output
        _SEEN.setdefault(db_backend, {})[name] = "imported"
        return
    assert code in (2, 3), output
    assert len(said) == 1, f"{name}: not one line names the file:\n{output}"
    assert any(advice in said[0] for advice in ADVICE), f"{name}: says nothing to do: {said[0]}"
    assert after == before, f"{name} changed the database:\n{output}"
    _SEEN.setdefault(db_backend, {})[name] = said[0].replace(str(tmp_path), "<tmp>")


def test_both_databases_answer_alike() -> None:
    """Runs after the files on both backends (same module, later in order)."""
    if len(_SEEN) < 2 or any(len(seen) < len(BROKEN) for seen in _SEEN.values()):
        pytest.skip("needs every file on both databases in this run")
    assert _SEEN["sqlite"] == _SEEN["postgresql"]


@pytest.mark.parametrize("stripped", [[2], [0, 1, 2, 3]], ids=["one-slice", "every-slice"])
def test_slices_written_without_the_preamble_are_read_with_their_series(
        stripped: list[int], migrated_db_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """CT slices whose Part 10 preamble and file meta were stripped (ACR-NEMA style) are read
    with their series: one such slice is not left out (the series one short), and a folder of
    them only is found as DICOM (was "matches no dataset layout")."""
    import numpy as np
    from pydicom.dataset import FileMetaDataset

    from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
    from spine_core.volume import Volume

    hu = np.random.default_rng(5).integers(-1000, 1500, size=(4, 32, 32)).astype(np.int16)
    folder = tmp_path / "in" / "study"
    files = write_series(Volume(hu, ct_affine(hu.shape, (2.0, 0.7, 0.7))), folder,
                         SeriesInfo(uid_from_seed("raw", "st"), uid_from_seed("raw", "se")))
    for index in stripped:
        ds = pydicom.dcmread(files[index])
        ds.file_meta = FileMetaDataset()
        ds.preamble = None
        pydicom.dcmwrite(files[index], ds, implicit_vr=True, little_endian=True,
                         enforce_file_format=False)
        assert files[index].read_bytes()[128:132] != b"DICM"
    code = main(["import", str(tmp_path / "in"), "--no-progress", "--db", migrated_db_url,
                 "--data-dir", str(tmp_path / "var"), "--workers", "1"])
    output = "".join(capsys.readouterr())
    assert code == 0, output
    engine = make_engine(migrated_db_url)
    try:
        with make_sessionmaker(engine)() as s:
            series = s.scalars(select(m.Series)).one()
            assert list(series.shape) == [4, 32, 32] and len(series.files) == 4
    finally:
        engine.dispose()
