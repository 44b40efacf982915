"""DICOM series -> Volume: scanning folders, sorting, encodings, rescale, enhanced multi-frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from spine_core.errors import DicomError, UnsupportedTransferSyntax
from spine_core.io.dicom import load_series, plan_series, scan_dicom_tree
from spine_core.volume import Volume
from tests.dicom_fixtures import (
    JPEG_LOSSLESS_SV1,
    assert_matches_sources,
    bundled,
    hu_array,
    stack_affine,
    transcode,
    truncate,
    write_ct,
    write_enhanced_ct,
    write_localizer,
)


def test_sorts_by_position_not_instance_number_or_name(tmp_path: Path, small_ct: Volume) -> None:
    # InstanceNumber runs against position; names are random and extension-less in nested folders.
    names = ["zeta", "alpha", "m0", "b17", "a2", "q"]
    paths = write_ct(tmp_path / "a", small_ct, instance_numbers=[60, 50, 40, 30, 20, 10],
                     file_name=lambda i, n: names[i])
    for i, p in enumerate(paths[:3]):
        dest = tmp_path / "a" / f"sub{i}" / "deeper" / p.name
        dest.parent.mkdir(parents=True)
        p.rename(dest)

    vol = load_series(tmp_path / "a")

    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, small_ct.array)
    np.testing.assert_allclose(vol.affine, small_ct.affine, atol=1e-4)
    assert vol.meta["instance_numbers"] == [60, 50, 40, 30, 20, 10]
    assert [Path(f).name for f in vol.meta["files"]] == names
    assert vol.meta["warnings"] == [] and vol.meta["geometry_issues"] == []
    assert len(vol.meta["sop_uids"]) == 6 and len(set(vol.meta["sop_uids"])) == 6
    assert vol.meta["series_uid"] and vol.meta["study_uid"] and vol.meta["modality"] == "CT"
    assert_matches_sources(vol)


def test_scan_groups_series_and_reports_every_skipped_file(tmp_path: Path, small_ct: Volume) -> None:
    root = tmp_path / "export"
    a = write_ct(root / "p1" / "s1", small_ct, "first", file_name=lambda i, n: f"IM{i}")
    write_ct(root / "p1" / "s2", small_ct, "second", file_name=lambda i, n: f"{n}.dcm")
    write_localizer(root / "p1" / "s1", "first")
    (root / "README.txt").write_text("exported by a PACS\n")
    (root / "empty").write_bytes(b"")
    truncate(a[2], root / "broken" / "cut_native", 0.6)
    rle = transcode(a[3], tmp_path / "rle.dcm", RLELossless)
    truncate(rle, root / "broken" / "cut_rle", 0.8)
    sr = root / "reports" / "sr"
    sr.parent.mkdir(parents=True)
    sr.write_bytes(bundled("test-SR.dcm").read_bytes())

    scan = scan_dicom_tree(root, workers=2)

    assert sorted(len(s.files) for s in scan.series) == [6, 6]
    assert {s.description for s in scan.series} == {"test first", "test second"}
    reasons = {p.path.relative_to(root).as_posix(): p.reason for p in scan.skipped}
    assert set(reasons) == {"README.txt", "empty", "broken/cut_native", "broken/cut_rle",
                            "reports/sr", "p1/s1/scout"}
    assert "not a DICOM file" in reasons["README.txt"]
    assert "not a DICOM file" in reasons["empty"]
    assert "truncated" in reasons["broken/cut_native"]
    assert "truncated" in reasons["broken/cut_rle"]
    assert "structured report" in reasons["reports/sr"]
    assert reasons["p1/s1/scout"].startswith("localizer")
    kinds = {p.path.name: p.kind for p in scan.skipped}
    assert kinds == {"README.txt": "not_dicom", "empty": "not_dicom", "cut_native": "unreadable",
                     "cut_rle": "unreadable", "sr": "not_image", "scout": "localizer"}
    # the same answer with one reader, and with a process pool
    one = scan_dicom_tree(root, workers=1)
    assert [s.files for s in one.series] == [s.files for s in scan.series]
    assert one.skipped == scan.skipped
    procs = scan_dicom_tree(root, workers=2, executor="process")
    assert [s.files for s in procs.series] == [s.files for s in scan.series]


def test_scan_reports_series_fields(tmp_path: Path, small_ct: Volume) -> None:
    write_ct(tmp_path, small_ct, "fields")
    (series,) = scan_dicom_tree(tmp_path).series
    assert series.modality == "CT" and series.patient_id == "ANON"
    assert series.description == "test fields"
    assert series.n_frames == 6 and len(series.headers) == 6
    assert all(h.rows == 40 and h.columns == 36 for h in series.headers)


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEG_LOSSLESS_SV1, ExplicitVRBigEndian,
     ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian],
    ids=["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless-gdcm", "big-endian", "implicit", "deflated"],
)
def test_encodings_decode_to_the_same_hu(tmp_path: Path, small_ct: Volume, syntax: str) -> None:
    native = write_ct(tmp_path / "native", small_ct, "enc")
    for p in native:
        transcode(p, tmp_path / "enc" / p.name, syntax)
    assert pydicom.dcmread(tmp_path / "enc" / native[0].name).file_meta.TransferSyntaxUID == syntax

    vol = load_series(tmp_path / "enc")

    assert vol.meta["transfer_syntaxes"] == [syntax]
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, small_ct.array)
    assert_matches_sources(vol)


def test_write_series_compressed_output_reads_back(tmp_path: Path, small_ct: Volume) -> None:
    write_ct(tmp_path, small_ct, "j2k", transfer_syntax=JPEG2000Lossless)
    vol = load_series(tmp_path, workers=3)
    np.testing.assert_array_equal(vol.array, small_ct.array)


def test_rescale_slope_half_gives_float32(tmp_path: Path) -> None:
    hu = hu_array((4, 16, 12)).astype(np.float32) + 0.5
    write_ct(tmp_path, Volume(hu, stack_affine()), "half", rescale_slope=0.5,
             rescale_intercept=-1024.0)
    vol = load_series(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu)
    assert any(w.startswith("float32 voxels: RescaleSlope/Intercept are not integers")
               for w in vol.meta["warnings"])
    assert_matches_sources(vol)


def test_values_beyond_int16_give_float32(tmp_path: Path) -> None:
    values = np.full((3, 8, 8), 40000.0, dtype=np.float32)
    values[:, 0, 0] = 0
    write_ct(tmp_path, Volume(values, stack_affine()), "big", rescale_intercept=0.0)
    vol = load_series(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, values)
    assert any("exceed the int16 range" in w for w in vol.meta["warnings"])


def test_unsigned_stored_values_with_intercept_stay_int16(tmp_path: Path, small_ct: Volume) -> None:
    # write_series stores HU+1024 as unsigned 16-bit; the largest stored values exceed int16
    # before the intercept, and the reader must check the real range, not the theoretical one.
    paths = write_ct(tmp_path, small_ct, "u16")
    assert pydicom.dcmread(paths[0]).PixelRepresentation == 0
    vol = load_series(tmp_path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, small_ct.array)


def test_per_slice_rescale_is_applied_per_slice(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "perslice")
    ds = pydicom.dcmread(paths[2])
    stored = ds.pixel_array.astype(np.int32)
    ds.PixelData = (stored + 24).astype(np.uint16).tobytes()
    ds.RescaleIntercept = "-1048"
    ds.save_as(paths[2])
    vol = load_series(tmp_path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, small_ct.array)
    assert vol.meta["rescale"]["intercepts"] == [-1048.0, -1024.0]


def test_bits_above_bits_stored_are_masked(tmp_path: Path) -> None:
    hu = hu_array((3, 10, 10)) // 2  # stored = HU + 1024 < 4096: 12 bits are enough
    paths = write_ct(tmp_path, Volume(hu, stack_affine()), "bits12")
    for p in paths:
        ds = pydicom.dcmread(p)
        garbage = ds.pixel_array.astype(np.uint16) | np.uint16(0xA000)  # overlay-style high bits
        ds.PixelData = garbage.tobytes()
        ds.BitsStored, ds.HighBit = 12, 11
        ds.save_as(p)
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.array, hu)
    assert_matches_sources(vol)


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    shape = (5, 16, 12)
    source = Volume(hu_array(shape, seed=3), stack_affine((1.25, 0.6, 0.6)))
    order = [3, 0, 4, 1, 2]  # frames stored out of position order
    intercepts = [-1024, -1024, -1000, -1024, -900]
    path = write_enhanced_ct(tmp_path / "enh" / "multi", source, "enh", frame_order=order,
                             intercepts=intercepts)

    (series,) = scan_dicom_tree(tmp_path).series
    assert len(series.files) == 1 and series.n_frames == 5
    vol = load_series(series)

    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, source.array)
    np.testing.assert_allclose(vol.affine, source.affine, atol=1e-4)
    assert vol.meta["files"] == [str(path)] * 5
    assert vol.meta["frame_numbers"] == [order.index(k) + 1 for k in range(5)]
    assert vol.meta["rescale"]["intercepts"] == [-1024.0, -1000.0, -900.0]
    assert_matches_sources(vol)


def test_unsupported_transfer_syntax_names_it(tmp_path: Path, small_ct: Volume) -> None:
    native = write_ct(tmp_path / "n", small_ct, "mpeg")
    for p in native:
        out = transcode(p, tmp_path / "mpeg" / p.name, RLELossless)
        ds = pydicom.dcmread(out)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
        ds.save_as(out)
    with pytest.raises(UnsupportedTransferSyntax, match=r"MPEG2 Main Profile.*1\.2\.840\.10008"
                                                         r"\.1\.2\.4\.100.*uncompressed"):
        load_series(tmp_path / "mpeg")
    # the check happens from headers alone, before any pixel is decoded
    with pytest.raises(UnsupportedTransferSyntax):
        plan_series(tmp_path / "mpeg")


def test_missing_decoder_package_is_named(
    tmp_path: Path, small_ct: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ct(tmp_path, small_ct, "jls", transfer_syntax=JPEGLSLossless)
    # pretend neither CharLS binding is installed (the packages cannot be removed from a test)
    decoder = pydicom.pixels.get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("pyjpegls",)})
    with pytest.raises(UnsupportedTransferSyntax,
                       match=r"'JPEG-LS Lossless Image Compression'.*needs a decoder that is not "
                             r"installed: install pyjpegls or python-gdcm"):
        load_series(tmp_path)


def test_load_series_accepts_scan_plan_files_and_folder(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "ways")
    (series,) = scan_dicom_tree(tmp_path).series
    plan = plan_series(series)
    assert plan.shape == small_ct.shape
    assert [p.name for p in plan.files] == [p.name for p in paths]
    for source in (series, plan, list(reversed(paths)), tmp_path):
        vol = load_series(source)
        np.testing.assert_array_equal(vol.array, small_ct.array)
        np.testing.assert_allclose(vol.affine, plan.affine)


def test_folder_with_two_series_is_refused_with_their_names(tmp_path: Path, small_ct: Volume) -> None:
    write_ct(tmp_path / "a", small_ct, "one")
    write_ct(tmp_path / "b", small_ct, "two")
    with pytest.raises(DicomError, match=r"holds 2 series .*test one.*test two"):
        load_series(tmp_path)


def test_explicit_file_list_with_a_broken_file_is_refused(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path / "s", small_ct, "list")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(DicomError, match=r"notes\.txt: not a DICOM file"):
        load_series([*paths, junk])
    # in a folder, the same junk is skipped with a warning instead
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    vol = load_series(tmp_path / "s")
    assert any(w.startswith("skipped file: notes.txt") for w in vol.meta["warnings"])


def test_decode_error_names_the_file(tmp_path: Path, small_ct: Volume) -> None:
    native = write_ct(tmp_path / "n", small_ct, "damaged")
    for p in native:
        transcode(p, tmp_path / "j2k" / p.name, JPEG2000Lossless)
    victim = tmp_path / "j2k" / native[1].name
    ds = pydicom.dcmread(victim)
    data = bytearray(ds.PixelData)
    data[40:200] = bytes(160)  # wreck the codestream, keep the item structure valid
    ds.PixelData = bytes(data)
    ds.save_as(victim)
    with pytest.raises(DicomError, match=rf"{victim.name}.*cannot be decoded"):
        load_series(tmp_path / "j2k")
