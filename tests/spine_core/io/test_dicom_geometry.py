"""Slice geometry: sorting along the normal, oblique and tilted stacks, and every named problem."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from spine_core.errors import SeriesGeometryError
from spine_core.io.dicom import load_series, plan_series, scan_dicom_tree
from spine_core.io.dicom_geometry import stack_geometry
from spine_core.io.dicom_write import uid_from_seed
from spine_core.volume import Volume
from tests.dicom_fixtures import (
    assert_matches_sources,
    edit,
    hu_array,
    rotation,
    stack_affine,
    write_ct,
    write_localizer,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# --- stack_geometry on plain numbers ----------------------------------------------------------


def test_sorts_ascending_along_the_normal_whatever_the_input_order() -> None:
    z = np.array([5.0, -1.0, 3.0, 1.0])
    pos = np.stack([np.full(4, 10.0), np.full(4, -7.0), z], axis=1)
    geo = stack_geometry(pos, AXIAL, (0.5, 0.6), ["a", "b", "c", "d"])
    assert geo.order.tolist() == [1, 3, 2, 0]
    np.testing.assert_allclose(geo.affine[:3, 0], [0, 0, 2.0])
    np.testing.assert_allclose(geo.affine[:3, 1], [0, 0.5, 0])  # rows: col cosines × row spacing
    np.testing.assert_allclose(geo.affine[:3, 2], [0.6, 0, 0])  # columns: row cosines × col spacing
    np.testing.assert_allclose(geo.affine[:3, 3], [10, -7, -1])
    assert geo.warnings == [] and geo.issues == []


def test_one_slice_is_an_error_with_the_stated_message() -> None:
    with pytest.raises(SeriesGeometryError,
                       match=r"^series X has only one slice; a volume needs at least 2"):
        stack_geometry([[0, 0, 0]], AXIAL, (1, 1), ["only.dcm"], label="series X")


def test_duplicate_positions_name_both_files() -> None:
    pos = [[0, 0, 0], [0, 0, 2], [0, 0, 2.004], [0, 0, 4]]
    with pytest.raises(SeriesGeometryError, match=r"duplicate slice position.*b\.dcm and c\.dcm"):
        stack_geometry(pos, AXIAL, (1, 1), ["a.dcm", "b.dcm", "c.dcm", "d.dcm"])


def test_non_orthonormal_orientation_is_refused() -> None:
    with pytest.raises(SeriesGeometryError, match="not two orthogonal unit vectors"):
        stack_geometry([[0, 0, 0], [0, 0, 1]], (1, 0, 0, 0.3, 1, 0), (1, 1), ["a", "b"])


def test_gap_uneven_and_tilt_are_named_with_their_size() -> None:
    names = [f"s{i}" for i in range(6)]
    gap = stack_geometry([[0, 0, z] for z in (0, 1, 2, 5, 6, 7)], AXIAL, (1, 1), names)
    assert "missing_slices" in gap.issues
    (msg,) = [w for w in gap.warnings if w.startswith("missing slices")]
    assert "gap of 3.000 mm between s2 and s3" in msg and "about 2 slice(s) missing" in msg

    uneven = stack_geometry([[0, 0, z] for z in (0, 1, 2.2, 3, 4, 5)], AXIAL, (1, 1), names)
    assert uneven.issues[0] == "uneven_spacing"
    assert any(w.startswith("uneven spacing: steps along the normal range 0.800–1.200 mm")
               for w in uneven.warnings)

    t = math.tan(math.radians(12))
    tilted = stack_geometry([[0, z * t, z] for z in range(6)], AXIAL, (1, 1), names)
    assert tilted.issues == ["gantry_tilt"]
    assert tilted.tilt_deg == pytest.approx(12, abs=1e-6)
    assert tilted.warnings[0].startswith("gantry tilt: the slice step leaves the slice normal "
                                         "by 12.00°")
    np.testing.assert_allclose(tilted.affine[:3, 0], [0, t, 1])


# --- real series ------------------------------------------------------------------------------


def test_oblique_series(tmp_path: Path) -> None:
    src = Volume(hu_array((5, 40, 36), seed=1),
                 stack_affine((1.5, 0.7, 0.9), rot=rotation(20, -35, 110)))
    write_ct(tmp_path, src, "oblique", file_name=lambda i, n: f"f{(i * 3) % 5}")
    vol = load_series(tmp_path)
    np.testing.assert_allclose(vol.affine, src.affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, src.array)
    assert vol.meta["geometry_issues"] == []
    assert_matches_sources(vol)


def test_descending_series_is_sorted_ascending(tmp_path: Path) -> None:
    # slice 0 most superior (as many scanners and RSNA write them): a0 must still ascend along
    # the normal, so the array comes out reversed and every voxel keeps its patient position.
    aff = stack_affine((2.0, 0.8, 0.7))
    aff[:3, 3] += aff[:3, 0] * 5
    aff[:3, 0] *= -1
    src = Volume(hu_array((6, 40, 36), seed=2), aff)
    write_ct(tmp_path, src, "descending")
    vol = load_series(tmp_path)
    np.testing.assert_array_equal(vol.array, src.array[::-1])
    assert vol.meta["instance_numbers"] == [6, 5, 4, 3, 2, 1]
    assert vol.affine[2, 0] == pytest.approx(2.0)
    assert_matches_sources(vol)


def test_gantry_tilt_is_kept_exactly(tmp_path: Path) -> None:
    src = Volume(hu_array((6, 40, 36), seed=4), stack_affine((2.5, 0.8, 0.8), tilt_deg=15))
    normal = np.array([0.0, 0.0, 1.0])
    assert abs(src.affine[:3, 0] @ normal / np.linalg.norm(src.affine[:3, 0])) < 0.97
    write_ct(tmp_path, src, "tilt", extra={"GantryDetectorTilt": "15"})
    vol = load_series(tmp_path)
    np.testing.assert_allclose(vol.affine, src.affine, atol=1e-4)
    assert vol.meta["geometry_issues"] == ["gantry_tilt"]
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(15, abs=0.01)
    assert vol.meta["gantry_detector_tilt"] == 15.0
    assert vol.meta["max_grid_error_mm"] < 1e-3
    assert_matches_sources(vol)


def test_missing_slice_is_reported_by_name(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "gap", file_name=lambda i, n: f"slice{i}.dcm")
    paths[3].unlink()
    vol = load_series(tmp_path)
    assert vol.shape[0] == 5
    assert "missing_slices" in vol.meta["geometry_issues"]
    (msg,) = [w for w in vol.meta["warnings"] if w.startswith("missing slices")]
    assert "between slice2.dcm and slice4.dcm" in msg and "about 1 slice(s) missing" in msg
    # the grid is off around the gap, and the reader says by how much
    assert any(w.startswith("irregular positions") for w in vol.meta["warnings"])
    assert vol.meta["positions"][3][2] == pytest.approx(small_ct.index_to_lps((4, 0, 0))[2])


def test_uneven_spacing_is_reported(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "uneven")
    moved = small_ct.index_to_lps((2, 0, 0)) + [0, 0, 0.3]
    edit(paths[2], ImagePositionPatient=[f"{v:.6g}" for v in moved])
    vol = load_series(tmp_path)
    assert vol.meta["geometry_issues"][0] == "uneven_spacing"
    assert any(w.startswith("uneven spacing: steps along the normal range 1.700–2.300 mm")
               for w in vol.meta["warnings"])
    np.testing.assert_array_equal(vol.array, small_ct.array)


def test_duplicate_position_error_names_the_files(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "dup", file_name=lambda i, n: f"im{i}")
    edit(paths[2], tmp_path / "im2_copy", SOPInstanceUID=uid_from_seed("dup-copy"))
    with pytest.raises(SeriesGeometryError, match=r"duplicate slice position.*im2 and im2_copy|"
                                                  r"duplicate slice position.*im2_copy and im2"):
        load_series(tmp_path)


def test_a_second_copy_of_the_same_image_is_skipped_not_a_duplicate(
    tmp_path: Path, small_ct: Volume
) -> None:
    paths = write_ct(tmp_path / "a", small_ct, "copied", file_name=lambda i, n: f"im{i}")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "im2").write_bytes(paths[2].read_bytes())
    scan = scan_dicom_tree(tmp_path)
    (skip,) = scan.skipped
    assert skip.path == tmp_path / "backup" / "im2"
    assert skip.reason.startswith(f"copy of {paths[2]} (same SOPInstanceUID")
    assert skip.kind == "duplicate" and not skip.is_error
    vol = load_series(scan.series[0])
    np.testing.assert_array_equal(vol.array, small_ct.array)


def test_mixed_sizes_are_an_error(tmp_path: Path, small_ct: Volume) -> None:
    write_ct(tmp_path, small_ct, "mixed")
    other = Volume(hu_array((7, 40, 40), seed=5), small_ct.affine)
    odd = write_ct(tmp_path / "odd", other, "mixed", file_name=lambda i, n: f"odd{i}", part="odd")
    for p in odd[:-1]:
        p.unlink()
    with pytest.raises(SeriesGeometryError, match=r"mixes image sizes: 40×36 in 6 slice\(s\).*"
                                                  r"40×40 in 1 slice\(s\) \(odd6\)"):
        load_series(tmp_path)


def test_mixed_pixel_spacing_is_an_error(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "spacing")
    edit(paths[4], PixelSpacing=["0.9", "0.7"])
    with pytest.raises(SeriesGeometryError, match=r"mixes pixel spacings: 0\.8×0\.7 mm in 5 .*"
                                                  r"0\.9×0\.7 mm in 1"):
        load_series(tmp_path)


def test_single_slice_series_is_an_error(tmp_path: Path) -> None:
    vol = Volume(hu_array((1, 40, 36)), stack_affine())
    write_ct(tmp_path, vol, "single")
    (series,) = scan_dicom_tree(tmp_path).series
    with pytest.raises(SeriesGeometryError) as err:
        load_series(series)
    assert (f"series {series.series_uid} (test single) has only one slice; "
            "a volume needs at least 2") in str(err.value)


def test_missing_position_is_an_error_naming_the_file(tmp_path: Path, small_ct: Volume) -> None:
    paths = write_ct(tmp_path, small_ct, "nopos", file_name=lambda i, n: f"im{i}")
    edit(paths[1], ImagePositionPatient=None)
    with pytest.raises(SeriesGeometryError, match=r"1 slice\(s\) lack ImagePositionPatient/"
                                                  r"ImageOrientationPatient \(im1\)"):
        plan_series(tmp_path)


def test_mixed_orientations_without_a_clear_majority(tmp_path: Path, small_ct: Volume) -> None:
    axial = Volume(small_ct.array[:3], small_ct.affine)
    sagittal = Volume(small_ct.array[3:], stack_affine(rot=rotation(0, 90, 0)))
    write_ct(tmp_path / "ax", axial, "mixed-ori", file_name=lambda i, n: f"ax{i}")
    write_ct(tmp_path / "sag", sagittal, "mixed-ori", file_name=lambda i, n: f"sag{i}",
             instance_numbers=[4, 5, 6], part="sagittal")
    scan = scan_dicom_tree(tmp_path)
    assert scan.skipped == [] and len(scan.series[0].files) == 6
    with pytest.raises(SeriesGeometryError, match=r"mixes slice orientations: \[1, 0, 0, 0, 1, 0\] "
                                                  r"in 3 slice\(s\)"):
        load_series(scan.series[0])


def test_scout_with_other_orientation_is_dropped_when_the_majority_is_clear(
    tmp_path: Path, small_ct: Volume
) -> None:
    write_ct(tmp_path, small_ct, "scouted")
    # same series, sagittal, ImageType says nothing: an unlabelled scout
    scout = Volume(hu_array((1, 40, 36), seed=8), stack_affine(rot=rotation(0, 90, 0)))
    write_ct(tmp_path / "x", scout, "scouted", file_name=lambda i, n: "unlabelled",
             instance_numbers=[99], part="scout")
    # plus a labelled localizer, even in the majority orientation
    write_localizer(tmp_path / "y", "scouted", size=(40, 36))

    scan = scan_dicom_tree(tmp_path)
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert reasons["scout"] == "localizer (ImageType contains LOCALIZER)"
    assert reasons["unlabelled"].startswith("localizer: slice orientation [")
    assert "(6 of 7 files)" in reasons["unlabelled"]
    vol = load_series(scan.series[0])
    np.testing.assert_array_equal(vol.array, small_ct.array)
    # given the folder directly, the drops are listed in the volume's warnings
    vol = load_series(tmp_path)
    assert sum(w.startswith("skipped file:") for w in vol.meta["warnings"]) == 2
