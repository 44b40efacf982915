"""Broken and hostile inputs for ``spine import`` / ``spine export``, written on demand.

Small fixed inputs live beside this script (``j2k_abort_frame.j2k``: a damaged JPEG 2000 frame of
a 64×64 16-bit slice that makes GDCM abort the process, exit 134); everything else is generated
here, deterministically, so the repository holds no large binaries. Each case writes one dataset
folder (or CSV) under ``root`` with, where it makes sense, a *good* study beside the hostile one:
the good one must be imported, the hostile one refused with one line naming its file.

    python tests/data/hostile/make_hostile.py OUT    # writes every case under OUT/<case>/

:data:`CASES` maps a case name to ``(builder, expectation)``; see tests/db/test_hostile_inputs.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

HERE = Path(__file__).resolve().parent
SHAPE = (3, 64, 64)  # slices, rows, columns: small, and the J2K frame's size


@dataclass(frozen=True)
class Case:
    """What importing the case must give.

    ``target``: path (relative to the case folder) given to ``spine import``, or a CLI command
    (``argv``, with ``{case}`` for the case folder) instead of an import.
    ``named``: every string must appear in one line of the output (the file and what is wrong).
    ``good_studies``: studies the import must add (the good ones beside the hostile one).
    ``accepted``: the input is valid (e.g. formula-like text a reader wrote): imported as written.
    ``refused``: the command fails (exit status not 0); else it succeeds and a warning line names
    what it left out (a symlink loop, a file that is not DICOM Part 10).
    """

    build: Callable[[Path], None]
    named: tuple[str, ...]
    good_studies: int = 1
    target: str = "."
    argv: tuple[str, ...] = ()
    accepted: bool = False
    refused: bool = True


# --- DICOM helpers --------------------------------------------------------------------------------


def _ct(folder: Path, name: str, seed: int = 0) -> list[Path]:
    """A small, valid CT series of :data:`SHAPE` with UIDs derived from ``name``."""
    from spine_core.io.dicom_write import SeriesInfo, uid_from_seed, write_series
    from spine_core.volume import Volume

    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1500, size=SHAPE).astype(np.int16)
    affine = np.diag([2.0, 0.7, 0.7, 1.0])
    info = SeriesInfo(study_uid=uid_from_seed("hostile-study", name),
                      series_uid=uid_from_seed("hostile-series", name),
                      series_description=f"hostile {name}", extra={"PatientID": name})
    return write_series(Volume(hu, affine), folder, info)


def _edit(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _good(root: Path) -> None:
    _ct(root / "good", f"good-{root.name}")


def _bad_series(root: Path, **changes: object) -> list[Path]:
    files = _ct(root / "bad", f"bad-{root.name}")
    for path in files:
        _edit(path, **changes)
    return files


def traversal_uid(root: Path) -> None:
    _good(root)
    _bad_series(root, StudyInstanceUID="../../../../PWNED")


def long_uid(root: Path) -> None:
    _good(root)
    _bad_series(root, SeriesInstanceUID="1.2." + "3" * 70)


def nan_position(root: Path) -> None:
    _good(root)
    files = _ct(root / "bad", f"bad-{root.name}")
    ds = pydicom.dcmread(files[1])
    ds["ImagePositionPatient"].value = ["NaN", "0", "0"]
    with _lenient():
        ds.save_as(files[1])


class _lenient:
    """Let pydicom write values it would refuse (NaN in a DS)."""

    def __enter__(self) -> None:
        self.mode = pydicom.config.settings.writing_validation_mode
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

    def __exit__(self, *exc: object) -> None:
        pydicom.config.settings.writing_validation_mode = self.mode


def huge_header(root: Path) -> None:
    """65535×65535 pixels claimed, 512 bytes present."""
    _good(root)
    for path in _ct(root / "bad", f"bad-{root.name}"):
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 65535
        ds.PixelData = bytes(512)
        ds.save_as(path)


def zero_spacing(root: Path) -> None:
    _good(root)
    _bad_series(root, PixelSpacing=[0, 0])


def truncated_last_slice(root: Path) -> None:
    _good(root)
    files = _ct(root / "bad", f"bad-{root.name}")
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) - 3000])


def corrupt_j2k_slice(root: Path) -> None:
    """A JPEG 2000 series whose middle slice aborts the decoder (exit 134 if decoded in-process)."""
    _good(root)
    files = _ct(root / "bad", f"bad-{root.name}")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless, encoding_plugin="")
        ds.save_as(path)
    ds = pydicom.dcmread(files[1])
    ds.PixelData = encapsulate([(HERE / "j2k_abort_frame.j2k").read_bytes()])
    ds.save_as(files[1])


def symlink_loop(root: Path) -> None:
    _good(root)
    (root / "good" / "loop-a").symlink_to("loop-b")
    (root / "good" / "loop-b").symlink_to("loop-a")


def pydicom_file(name: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        from pydicom.data import get_testdata_file

        _good(root)
        (root / "bad").mkdir(parents=True)
        source = get_testdata_file(name)
        if source is None:
            raise FileNotFoundError(f"pydicom test file {name} is not installed")
        shutil.copy(source, root / "bad" / name)
    return build


# --- NIfTI (VerSe, flat MICCAI style) ------------------------------------------------------------


def _verse_pair(root: Path, subject: str, centroid_mm: float | None = None) -> Path:
    """``sub-X_ct.nii.gz``, its mask and centroids in ``root``; returns the image path."""
    from spine_core.io.nifti import save_nifti
    from spine_core.io.verse import Centroid, write_centroids
    from spine_core.labels import LEVEL_IDS
    from spine_core.volume import Volume

    shape = (24, 32, 32)
    image = Volume(np.random.default_rng(1).integers(-500, 900, size=shape).astype(np.int16),
                   np.diag([1.5, 1.0, 1.0, 1.0]))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[8:16, 10:20, 10:20] = 20  # L1
    ct = save_nifti(image, root / f"sub-{subject}_ct.nii.gz")
    save_nifti(image.with_array(labels), root / f"sub-{subject}_seg-vert_msk.nii.gz",
               dtype=np.uint8)
    centre = image.index_to_lps(np.array([11.5, 14.5, 14.5]))
    path = write_centroids(root / f"sub-{subject}_seg-subreg_ctd.json",
                           [Centroid(LEVEL_IDS["L1"], (float(centre[0]), float(centre[1]), float(centre[2])))], image)
    if centroid_mm is not None:
        entries = json.loads(path.read_text())
        entries[-1]["X"] = centroid_mm
        path.write_text(json.dumps(entries))
    return ct


def _good_subject(root: Path) -> str:
    return "good" + re.sub(r"[^A-Za-z0-9]", "", root.name)  # one study per case


def gzip_crc(root: Path) -> None:
    _verse_pair(root, _good_subject(root))
    ct = _verse_pair(root, "bad")
    data = bytearray(ct.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    ct.write_bytes(bytes(data))


def nan_sform(root: Path) -> None:
    import nibabel as nib

    _verse_pair(root, _good_subject(root))
    ct = _verse_pair(root, "bad")
    img = nib.load(ct)
    header = img.header.copy()
    header["srow_x"][0] = math.nan  # the sform; no qform to fall back on
    header["qform_code"] = 0
    bad = nib.Nifti1Image(np.asarray(img.dataobj), None, header=header)
    nib.save(bad, ct)


def far_centroid(root: Path) -> None:
    _verse_pair(root, _good_subject(root))
    _verse_pair(root, "bad", centroid_mm=8e307)


# --- CSV (the database holds a study and reader1 first) -------------------------------------------


def _readers_csv(root: Path, name: str, header: list[str], rows: list[list[str]]) -> None:
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


BOX_HEADER = ["StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader", "level",
              "note"]


def no_reader_column(study_uid: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        header = [c for c in BOX_HEADER if c != "reader"]
        _readers_csv(root, "readers_boxes.csv", header, [[study_uid, "2", "1", "1", "4", "4", "C5", ""]])
    return build


def huge_slice_number(study_uid: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        _readers_csv(root, "readers_boxes.csv", BOX_HEADER,
                     [[study_uid, "1e400", "1", "1", "4", "4", "reader1", "C5", ""]])
    return build


def formula_cells(study_uid: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        _readers_csv(root, "readers_boxes.csv", BOX_HEADER, [
            [study_uid, "1", "1", "1", "4", "4", "reader1", "C5", "=1+1"],
            [study_uid, "2", "1", "1", "4", "4", "reader1", "C5", "\t=HYPERLINK(\"x\")"],
            [study_uid, "3", "1", "1", "4", "4", "reader1", "C5", "@SUM(A1)"],
        ])
    return build


def output_is_a_file(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "taken").write_text("a file where the export folder should go")


#: pydicom's own broken test files (as ``pydicom.data.get_testdata_file`` names them).
PYDICOM_BROKEN = ("MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm", "badVR.dcm",
                  "bad_sequence.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm",
                  "rtplan_truncated.dcm", "ExplVR_BigEndNoMeta.dcm")


def cases(study_uid: str) -> dict[str, Case]:
    """Every case; CSV cases refer to ``study_uid`` (a study already in the database)."""
    found = {
        "traversal_uid": Case(traversal_uid, ("bad", "../../../../PWNED", "not a DICOM UID")),
        "uid_over_64": Case(long_uid, ("bad", "SeriesInstanceUID", "not a DICOM UID")),
        "nan_position": Case(nan_position, ("bad/2.dcm", "ImagePositionPatient", "not finite")),
        "huge_header": Case(huge_header, ("bad", "65535×65535")),
        "zero_pixel_spacing": Case(zero_spacing, ("bad", "PixelSpacing", "positive")),
        "truncated_last_slice": Case(truncated_last_slice, ("bad/3.dcm", "truncated", "not imported")),
        "corrupt_j2k_slice": Case(corrupt_j2k_slice, ("bad/2.dcm", "crashed the decoder", "not imported")),
        "symlink_loop": Case(symlink_loop, ("good/loop-a", "loop"), refused=False),
        "gzip_crc": Case(gzip_crc, ("sub-bad_ct.nii.gz", "CRC")),
        "nan_sform": Case(nan_sform, ("sub-bad_ct.nii.gz", "sform", "non-finite")),
        "far_centroid": Case(far_centroid, ("sub-bad_seg-subreg_ctd.json", "outside the image")),
        "readers_csv_without_reader": Case(no_reader_column(study_uid),
                                           ("readers_boxes.csv", "reader column"), 0,
                                           target="readers_boxes.csv"),
        "slice_number_1e400": Case(huge_slice_number(study_uid),
                                   ("readers_boxes.csv", "line 2", "1e400"), 0,
                                   target="readers_boxes.csv"),
        "formula_cells": Case(formula_cells(study_uid), (), 0, target="readers_boxes.csv",
                              accepted=True),
        "export_into_a_file": Case(output_is_a_file, ("taken", "is a file, not a folder"), 0,
                                   argv=("export", "rsna", "{case}/taken")),
    }
    for name in PYDICOM_BROKEN:
        # no_meta.dcm starts with a stray byte: no data set can be read from it, a warning names
        # it beside the good study; ExplVR_BigEndNoMeta.dcm is a data set without the preamble,
        # read like any other (an RT plan: not an image, its folder refused by name)
        no_preamble = name == "no_meta.dcm"
        found[f"pydicom_{name.removesuffix('.dcm')}"] = Case(
            pydicom_file(name), (name, "not a DICOM file") if no_preamble else (name,),
            refused=not no_preamble)
    return found


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-out")
    for case_name, case in cases("1.2.3").items():
        folder = out / case_name
        if folder.exists():
            shutil.rmtree(folder)
        case.build(folder)
        print(folder)
