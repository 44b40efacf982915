"""NIfTI reading and mask alignment on real files written with nibabel."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_core.errors import LabelVocabularyError, MaskError, NiftiError
from spine_core.io.dicom_write import ct_affine
from spine_core.io.masks import align_mask_to_image, load_aligned_mask, load_totalseg_folder
from spine_core.io.nifti import load_nifti, save_nifti
from spine_core.labels import RSNA, VERSE, totalseg_multilabel_vocabulary
from spine_core.volume import Volume

SHAPE = (5, 6, 7)


def _labels(seed: int = 0, high: int = 20) -> np.ndarray:
    """Random labels: any wrong flip or permutation changes the array."""
    return np.random.default_rng(seed).integers(0, high, SHAPE).astype(np.uint8)


def _image(superior_first: bool = True) -> Volume:
    """An axial DICOM-like stack, slice 0 the most superior (a non-canonical orientation)."""
    return Volume(np.zeros(SHAPE, np.int16), ct_affine(SHAPE, (2.5, 0.8, 0.7), superior_first=superior_first))


def _reorient_by_hand(array: np.ndarray, affine: np.ndarray, perm: tuple[int, ...], flips: tuple[bool, ...]):
    """Flip then permute the voxel axes, moving the affine so every voxel keeps its position."""
    arr, aff = array, affine.copy()
    for axis, flip in enumerate(flips):
        if flip:
            arr = np.flip(arr, axis=axis)
            aff[:3, 3] += aff[:3, axis] * (array.shape[axis] - 1)
            aff[:3, axis] = -aff[:3, axis]
    arr = arr.transpose(perm)
    out = aff.copy()
    out[:3, :3] = aff[:3, list(perm)]
    return np.ascontiguousarray(arr), out


def _save_with_nibabel(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    data, ras = Volume(array, affine).to_nifti_arrays()
    img = nib.Nifti1Image(np.ascontiguousarray(data), ras)
    img.set_sform(ras, code=1)
    img.set_qform(ras, code=1)
    nib.save(img, str(path))
    return path


ORIENTATIONS = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((False, True), repeat=3)
]


def test_there_are_48_orientations_and_all_distinct() -> None:
    image = _image()
    codes = {
        Volume(np.zeros(SHAPE), _reorient_by_hand(np.zeros(SHAPE), image.affine, p, f)[1]).axcodes
        for p, f in ORIENTATIONS
    }
    assert len(ORIENTATIONS) == 48 and len(codes) == 48


@pytest.mark.parametrize("superior_first", [True, False])
def test_mask_in_every_orientation_aligns_exactly(tmp_path: Path, superior_first: bool) -> None:
    image = _image(superior_first)
    labels = _labels()
    for n, (perm, flips) in enumerate(ORIENTATIONS):
        arr, aff = _reorient_by_hand(labels, image.affine, perm, flips)
        path = _save_with_nibabel(arr, aff, tmp_path / f"m{n}.nii.gz")
        aligned = load_aligned_mask(path, image, vocabulary=RSNA)
        assert np.array_equal(aligned.array, labels), (perm, flips)
        assert not aligned.resampled and aligned.warnings == []


def test_image_and_mask_both_reoriented_from_nifti(tmp_path: Path) -> None:
    """The image itself comes from a NIfTI in another orientation: compare on its grid."""
    base = _image()
    labels = _labels(1)
    img_arr, img_aff = _reorient_by_hand(labels.astype(np.int16), base.affine, (2, 0, 1), (True, False, True))
    image = load_nifti(_save_with_nibabel(img_arr, img_aff, tmp_path / "ct.nii.gz"))
    for perm, flips in ORIENTATIONS[::5]:
        arr, aff = _reorient_by_hand(labels, base.affine, perm, flips)
        mask = load_nifti(_save_with_nibabel(arr, aff, tmp_path / "m.nii.gz"))
        aligned = align_mask_to_image(mask, image, vocabulary=RSNA)
        # the image voxels hold the labels as HU, so the aligned mask must equal them voxel for voxel
        assert np.array_equal(aligned.array, np.asarray(image.array, dtype=np.uint8))


def test_oblique_grids_still_align_without_resampling(tmp_path: Path) -> None:
    theta = np.deg2rad(12)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    aff = _image().affine.copy()
    aff[:3, :3] = rot @ aff[:3, :3]
    image = Volume(np.zeros(SHAPE, np.int16), aff)
    labels = _labels(2)
    arr, maff = _reorient_by_hand(labels, aff, (1, 2, 0), (False, True, True))
    aligned = load_aligned_mask(_save_with_nibabel(arr, maff, tmp_path / "m.nii"), image, vocabulary=RSNA)
    assert np.array_equal(aligned.array, labels) and not aligned.resampled


def test_rsna_like_sagittal_mask_over_axial_stack(tmp_path: Path) -> None:
    """RSNA stores masks sagittally: the NIfTI's slicing (k) axis runs left-right."""
    image = _image(superior_first=True)  # slice 0 superior, rows posterior, columns left
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 1:4, 2:5] = 1  # C1 at the top slice
    labels[1:3, 2:4, 3] = 2
    labels[4, :, :] = 8  # T1 at the bottom slice
    # sagittal storage: NIfTI (i, j, k) = (A->P reversed, S->I, R->L) i.e. array axes (L/R, I/S, A/P)
    arr, aff = _reorient_by_hand(labels, image.affine, (2, 0, 1), (False, False, True))
    path = _save_with_nibabel(arr, aff, tmp_path / "1.2.826.0.1.3680043.8.498.1.nii")
    stored = nib.load(str(path))
    assert nib.aff2axcodes(stored.affine)[2] in ("L", "R")  # slicing axis runs left-right
    aligned = load_aligned_mask(path, image, vocabulary=RSNA)
    assert np.array_equal(aligned.array, labels)
    assert aligned.levels == (1, 2, 8)


def test_nifti_index_convention_against_hand_computed_lps(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    ras = np.array([[-2.0, 0, 0, 10], [0, 3, 0, -20], [0, 0, 4, 30], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, ras), str(tmp_path / "h.nii.gz"))
    vol = load_nifti(tmp_path / "h.nii.gz")
    # voxel (i, j, k) = (1, 2, 3): RAS = (10 - 2, -20 + 6, 30 + 12) -> LPS (-8, 14, 42)
    assert vol.array[3, 2, 1] == data[1, 2, 3]
    assert np.allclose(vol.index_to_lps([3, 2, 1]), [-8, 14, 42])
    assert vol.axcodes == ("S", "A", "L")  # k up, j anterior, i towards -R = left


def test_different_grid_is_resampled_with_warning(tmp_path: Path) -> None:
    image = Volume(np.zeros((8, 10, 12), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    coarse = np.random.default_rng(3).integers(1, 20, (4, 5, 6)).astype(np.uint8)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = 0.5  # mask voxel centres sit at 0.5, 2.5, 4.5...: image voxel p -> mask p // 2
    arr, maff = _reorient_by_hand(coarse, aff, (1, 0, 2), (True, False, False))
    aligned = load_aligned_mask(_save_with_nibabel(arr, maff, tmp_path / "c.nii.gz"), image, vocabulary=RSNA)
    assert aligned.resampled
    assert any("resampled nearest-neighbour" in w and "spacing differs by up to 1 mm" in w for w in aligned.warnings)
    for p in [(0, 0, 0), (3, 4, 5), (7, 9, 11), (5, 2, 8), (1, 1, 1)]:
        assert aligned.array[p] == coarse[p[0] // 2, p[1] // 2, p[2] // 2], p


def test_partial_overlap_reports_lost_levels() -> None:
    image = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4))
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0] = 3
    labels[3] = 5
    aff = np.eye(4)
    aff[0, 3] = 2.0  # shifted two voxels along a0: mask slices 0-1 land on image slices 2-3
    aligned = align_mask_to_image(Volume(labels, aff), image, vocabulary=RSNA)
    assert aligned.array[2].max() == 3 and aligned.array[:2].max() == 0
    assert any("C5" in w and "outside" in w for w in aligned.warnings)


def test_oblique_mismatch_uses_general_resampling() -> None:
    image = Volume(np.zeros((6, 6, 6), np.int16), np.eye(4))
    labels = np.full((6, 6, 6), 4, np.uint8)
    theta = np.deg2rad(30)
    aff = np.eye(4)
    aff[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    aligned = align_mask_to_image(Volume(labels, aff), image, vocabulary=RSNA)
    assert aligned.resampled
    # voxel (k, 0, 0) is the mask's own origin row: inside; far corner rotated out: background
    assert aligned.array[0, 0, 0] == 4
    point = image.index_to_lps([0, 5, 0])
    inside = np.all(np.abs(np.floor(Volume(labels, aff).lps_to_index(point) + 0.5) - 2.5) <= 2.5)
    assert (aligned.array[0, 5, 0] == 4) == bool(inside)


def test_non_overlapping_mask_raises(tmp_path: Path) -> None:
    image = _image()
    aff = image.affine.copy()
    aff[:3, 3] += (0, 0, 1000.0)
    path = _save_with_nibabel(_labels(), aff, tmp_path / "far.nii.gz")
    with pytest.raises(MaskError, match="does not overlap"):
        load_aligned_mask(path, image, vocabulary=RSNA)


def test_label_outside_vocabulary_is_named(tmp_path: Path) -> None:
    image = _image()
    labels = _labels()
    labels[0, 0, 0] = 42
    path = _save_with_nibabel(labels, image.affine, tmp_path / "bad.nii.gz")
    with pytest.raises(LabelVocabularyError, match=r"\[42\].*RSNA"):
        load_aligned_mask(path, image, vocabulary=RSNA)


def test_float_stored_mask_with_whole_values_is_accepted(tmp_path: Path) -> None:
    image = _image()
    labels = _labels()
    path = _save_with_nibabel(labels.astype(np.float32), image.affine, tmp_path / "f.nii.gz")
    assert np.array_equal(load_aligned_mask(path, image, vocabulary=VERSE).array, labels)
    path2 = _save_with_nibabel(labels.astype(np.float32) + 0.5, image.affine, tmp_path / "g.nii.gz")
    with pytest.raises(LabelVocabularyError, match="not whole numbers"):
        load_aligned_mask(path2, image, vocabulary=VERSE)


def test_totalsegmentator_multilabel_maps_v2_indices(tmp_path: Path) -> None:
    image = _image()
    values = np.zeros(SHAPE, np.uint8)
    values[0], values[1], values[2], values[3] = 50, 49, 44, 43  # C1, C2, C7, T1
    values[4, 0, 0] = 5  # liver -> background
    values[4, 1, 1] = 25  # sacrum
    arr, aff = _reorient_by_hand(values, image.affine, (2, 1, 0), (True, True, False))
    path = _save_with_nibabel(arr, aff, tmp_path / "segmentations.nii.gz")
    aligned = load_aligned_mask(path, image, vocabulary=totalseg_multilabel_vocabulary())
    assert aligned.array[0].max() == 1 and aligned.array[1].max() == 2
    assert aligned.array[2].max() == 7 and aligned.array[3].max() == 8
    assert aligned.array[4, 0, 0] == 0 and aligned.array[4, 1, 1] == 26


def test_totalsegmentator_per_class_folder(tmp_path: Path) -> None:
    image = _image()
    folder = tmp_path / "segmentations"
    folder.mkdir()
    expected = np.zeros(SHAPE, np.uint8)
    for level, (name, slab) in enumerate([("vertebrae_C1", 0), ("vertebrae_C2", 1), ("vertebrae_C3", 2)], start=1):
        binary = np.zeros(SHAPE, np.uint8)
        binary[slab, 1:5, 1:6] = 1
        expected[binary == 1] = level
        arr, aff = _reorient_by_hand(binary, image.affine, (0, 2, 1), (False, True, False))
        _save_with_nibabel(arr, aff, folder / f"{name}.nii.gz")
    _save_with_nibabel(np.ones(SHAPE, np.uint8), image.affine, folder / "liver.nii.gz")  # ignored
    aligned = load_totalseg_folder(folder, image)
    assert np.array_equal(aligned.array, expected)
    _save_with_nibabel(np.zeros(SHAPE, np.uint8), image.affine, folder / "vertebrae_X9.nii.gz")
    with pytest.raises(LabelVocabularyError, match="vertebrae_X9"):
        load_totalseg_folder(folder, image)


# --- load_nifti --------------------------------------------------------------------------------


def test_load_keeps_integer_dtypes(tmp_path: Path) -> None:
    image = _image()
    save_nifti(Volume(_labels(), image.affine), tmp_path / "m.nii.gz")
    save_nifti(Volume(np.full(SHAPE, -1000, np.int16), image.affine), tmp_path / "ct.nii")
    assert load_nifti(tmp_path / "m.nii.gz").array.dtype == np.uint8
    ct = load_nifti(tmp_path / "ct.nii")
    assert ct.array.dtype == np.int16 and int(ct.array.min()) == -1000
    assert isinstance(ct.array.base, np.memmap) or isinstance(ct.array, np.memmap)


def test_integer_scaling_gives_exact_int16(tmp_path: Path) -> None:
    raw = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE) * 300  # up to 62700 stored
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(1, -32000)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = load_nifti(tmp_path / "s.nii")
    assert vol.array.dtype == np.int16
    assert np.array_equal(vol.array, (raw.astype(np.int64) - 32000).transpose(2, 1, 0))


def test_fractional_scaling_gives_float32(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.ones(SHAPE, np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 0.25)
    nib.save(img, str(tmp_path / "f.nii"))
    vol = load_nifti(tmp_path / "f.nii")
    assert vol.array.dtype == np.float32 and np.allclose(vol.array, 0.75)


def test_trailing_singleton_dimension_is_dropped_and_4d_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 1), np.uint8), np.eye(4)), str(tmp_path / "a.nii.gz"))
    assert load_nifti(tmp_path / "a.nii.gz").shape == SHAPE[::-1]
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.uint8), np.eye(4)), str(tmp_path / "b.nii.gz"))
    with pytest.raises(NiftiError, match="4-D"):
        load_nifti(tmp_path / "b.nii.gz")


def test_not_nifti_and_corrupt_files_raise_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NiftiError, match="not a NIfTI file name"):
        load_nifti(tmp_path / "notes.txt")
    (tmp_path / "fake.nii.gz").write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(NiftiError, match="not a readable NIfTI"):
        load_nifti(tmp_path / "fake.nii.gz")
    save_nifti(Volume(_labels(), np.eye(4)), tmp_path / "ok.nii.gz")
    blob = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(NiftiError):
        load_nifti(tmp_path / "cut.nii.gz")
    with pytest.raises(NiftiError, match="no such file"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_sform_preferred_and_disagreement_warned(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros(SHAPE, np.uint8), None)
    sform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform = np.diag([1.0, 1.0, 1.0, 1.0])
    qform[:3, 3] = (5.0, 0.0, 0.0)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    nib.save(img, str(tmp_path / "d.nii.gz"))
    vol = load_nifti(tmp_path / "d.nii.gz")
    assert vol.meta["affine_source"] == "sform"
    assert np.allclose(vol.affine[:3, 3], 0)
    assert any("disagree by up to 5 mm" in w for w in vol.meta["warnings"])


def test_qform_used_when_sform_unset_and_fallback_warned(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros(SHAPE, np.uint8), None)
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    qform[:3, 3] = (1.0, 2.0, 3.0)
    img.set_qform(qform, code=1)
    img.set_sform(np.eye(4), code=0)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    vol = load_nifti(tmp_path / "q.nii.gz")
    assert vol.meta["affine_source"] == "qform" and np.allclose(vol.affine[:3, 3], (-1, -2, 3))
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "n.nii.gz"))
    vol2 = load_nifti(tmp_path / "n.nii.gz")
    assert vol2.meta["affine_source"] == "fallback"
    assert any("orientation is unknown" in w for w in vol2.meta["warnings"])
