"""Dataset layout detection and case listing on small real trees (DICOM via write_series, NIfTI via nibabel)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spine_core.errors import DatasetLayoutError, UnsafePathError
from spine_core.io.dicom_write import SeriesInfo, ct_affine, uid_from_seed, write_series
from spine_core.io.layouts import CaseSource, detect_layout, is_dicom_file, iter_cases
from spine_core.io.nifti import load_nifti, save_nifti
from spine_core.io.safe_paths import ensure_inside, safe_join
from spine_core.labels import CTSPINE1K, RSNA, VERSE
from spine_core.volume import Volume

SHAPE = (3, 4, 5)


def _image() -> Volume:
    return Volume(np.full(SHAPE, 40, np.int16), ct_affine(SHAPE, (2.0, 0.5, 0.5), superior_first=True))


def _labels(first: int = 1) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[0], labels[1], labels[2] = first, first + 1, first + 2
    return labels


def _sagittal(labels: np.ndarray) -> Volume:
    """The labels on the image grid, stored with array axes (L/R, S/I, A/P)."""
    return Volume(labels, _image().affine).reoriented(("L", "I", "A"))


def _write_dicom(folder: Path, seed: str) -> list[Path]:
    info = SeriesInfo(study_uid=uid_from_seed(seed, "study"), series_uid=uid_from_seed(seed, "series"))
    return write_series(_image(), folder, info)


def _cases(root: Path) -> dict[str, CaseSource]:
    return {c.case_id: c for c in iter_cases(root)}


# --- RSNA --------------------------------------------------------------------------------------


def _rsna_tree(root: Path) -> tuple[str, str]:
    a, b = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.22"
    _write_dicom(root / "train_images" / a, a)
    _write_dicom(root / "train_images" / b, b)
    (root / "train.csv").write_text(
        "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7\n"
        f"{a},1,0,1,0,0,0,0,0\n{b},0,0,0,0,0,0,0,0\n1.2.3.missing,0,0,0,0,0,0,0,0\n"
    )
    (root / "train_bounding_boxes.csv").write_text(
        f"StudyInstanceUID,x,y,width,height,slice_number\n{a},10.5,20,30,40,2\n{a},11,21,31,41,3\n"
    )
    save_nifti(_sagittal(_labels()), root / "segmentations" / f"{a}.nii")
    return a, b


def test_rsna_layout_cases_csv_rows_and_mask(tmp_path: Path) -> None:
    a, b = _rsna_tree(tmp_path)
    assert detect_layout(tmp_path).kind == "rsna"
    notes: list[str] = []
    cases = {c.case_id: c for c in iter_cases(tmp_path, warnings=notes)}
    assert sorted(cases) == [a, b]
    ca = cases[a]
    assert ca.image_format == "dicom" and ca.image_path == tmp_path / "train_images" / a
    assert ca.vocabulary is RSNA and ca.mask_paths == (tmp_path / "segmentations" / f"{a}.nii",)
    assert ca.extra["labels"] == {"patient_overall": 1, "C1": 0, "C2": 1, "C3": 0, "C4": 0, "C5": 0, "C6": 0, "C7": 0}
    assert ca.extra["boxes"][0] == {"x": 10.5, "y": 20.0, "width": 30.0, "height": 40.0, "slice_number": 2}
    assert len(ca.extra["boxes"]) == 2
    assert not cases[b].has_mask and "boxes" not in cases[b].extra
    assert any("1.2.3.missing" in n for n in notes)
    aligned = ca.load_mask(_image())
    assert aligned is not None and np.array_equal(aligned.array, _labels())


def test_rsna_csv_with_path_traversal_is_refused(tmp_path: Path) -> None:
    _rsna_tree(tmp_path)
    with (tmp_path / "train.csv").open("a") as handle:
        handle.write("../../etc,0,0,0,0,0,0,0,0\n")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        list(iter_cases(tmp_path))


# --- VerSe -------------------------------------------------------------------------------------


def _verse_subject_case(split: Path, subject: str, key: str, with_mask: bool = True) -> None:
    save_nifti(_image(), split / "rawdata" / subject / f"{key}_ct.nii.gz")
    if with_mask:
        save_nifti(_sagittal(_labels(20)), split / "derivatives" / subject / f"{key}_seg-vert_msk.nii.gz")
        ctd = [{"direction": ["P", "I", "R"]}, {"label": 20, "X": 1.0, "Y": 0.0, "Z": 2.0}]
        (split / "derivatives" / subject / f"{key}_seg-subreg_ctd.json").write_text(json.dumps(ctd))


def test_verse_subject_based(tmp_path: Path) -> None:
    split = tmp_path / "dataset-verse20training"
    _verse_subject_case(split, "sub-verse004", "sub-verse004_dir-ax")
    _verse_subject_case(split, "sub-verse400", "sub-verse400_split-verse090_dir-iso")
    _verse_subject_case(split, "sub-verse401", "sub-verse401", with_mask=False)
    layout = detect_layout(tmp_path)
    assert (layout.kind, layout.style) == ("verse", "subject")
    cases = _cases(tmp_path)
    assert sorted(cases) == ["verse004_dir-ax", "verse400_split-verse090_dir-iso", "verse401"]
    c = cases["verse004_dir-ax"]
    assert c.vocabulary is VERSE and c.centroid_path is not None
    assert c.mask_paths[0].name == "sub-verse004_dir-ax_seg-vert_msk.nii.gz"
    image = load_nifti(c.image_path)
    aligned = c.load_mask(image)
    assert aligned is not None and np.array_equal(aligned.array, _labels(20))
    centroids = c.load_centroids(image)
    # PIR voxel (X=1, Y=0, Z=2) = our index (0, 1, 4 - 2): the image's own voxel
    assert centroids is not None and np.allclose(centroids.centroids[0].lps, image.index_to_lps([0, 1, 2]))
    assert not cases["verse401"].has_mask


def test_verse_miccai_flat_2019_and_2020(tmp_path: Path) -> None:
    save_nifti(_image(), tmp_path / "verse004.nii.gz")
    save_nifti(_sagittal(_labels()), tmp_path / "verse004_seg.nii.gz")
    (tmp_path / "verse004_ctd.json").write_text(json.dumps([{"label": 1, "X": 0, "Y": 0, "Z": 0}]))
    save_nifti(_image(), tmp_path / "verse005_ct.nii.gz")
    save_nifti(_sagittal(_labels()), tmp_path / "verse005_seg.nii.gz")
    (tmp_path / "verse005_ctd.json").write_text("[]")
    save_nifti(_image(), tmp_path / "verse512_CT-iso.nii.gz")
    save_nifti(_sagittal(_labels()), tmp_path / "verse512_CT-iso_seg.nii.gz")
    (tmp_path / "verse512_CT-iso_iso-ctd.json").write_text("[]")
    layout = detect_layout(tmp_path)
    assert (layout.kind, layout.style) == ("verse", "miccai")
    cases = _cases(tmp_path)
    assert sorted(cases) == ["verse004", "verse005", "verse512_CT-iso"]
    assert cases["verse005"].image_path.name == "verse005_ct.nii.gz"
    assert cases["verse005"].mask_paths[0].name == "verse005_seg.nii.gz"
    assert cases["verse512_CT-iso"].centroid_path.name == "verse512_CT-iso_iso-ctd.json"  # type: ignore[union-attr]
    image = load_nifti(cases["verse004"].image_path)
    loaded = cases["verse004"].load_centroids(image)
    assert loaded is not None and loaded.axcodes == ("I", "P", "L")
    assert np.array_equal(cases["verse004"].load_mask(image).array, _labels())  # type: ignore[union-attr]


# --- CTSpine1K ---------------------------------------------------------------------------------


def test_ctspine1k_volumes_and_labels(tmp_path: Path) -> None:
    raw = tmp_path / "rawdata"
    uid = "1.3.6.1.4.1.9328.50.4.0001"
    save_nifti(_image(), raw / "volumes" / "COLONOG" / f"{uid}.nii.gz")
    save_nifti(_sagittal(_labels(23)), raw / "labels" / "COLONOG" / f"{uid}_seg.nii.gz")
    save_nifti(_image(), raw / "volumes" / "HNSCC-3DCT-RT" / "HN_P001.nii.gz")
    layout = detect_layout(tmp_path)
    assert (layout.kind, layout.style) == ("ctspine1k", "volumes-labels")
    notes: list[str] = []
    cases = {c.case_id: c for c in iter_cases(tmp_path, warnings=notes)}
    assert sorted(cases) == [f"COLONOG/{uid}", "HNSCC-3DCT-RT/HN_P001"]
    c = cases[f"COLONOG/{uid}"]
    assert c.vocabulary is CTSPINE1K and c.mask_paths[0].name == f"{uid}_seg.nii.gz"
    aligned = c.load_mask(load_nifti(c.image_path))
    assert aligned is not None and aligned.levels == (23, 24, 25)  # L4, L5, L6
    assert any("HN_P001" in n for n in notes)


def test_ctspine1k_flat_pairs(tmp_path: Path) -> None:
    save_nifti(_image(), tmp_path / "liver_83.nii.gz")
    save_nifti(_sagittal(_labels()), tmp_path / "liver_83_seg.nii.gz")
    layout = detect_layout(tmp_path)
    assert (layout.kind, layout.style) == ("ctspine1k", "flat")
    (case,) = iter_cases(tmp_path)
    assert case.case_id == "liver_83" and case.vocabulary is CTSPINE1K and case.centroid_path is None


# --- TotalSegmentator --------------------------------------------------------------------------


def test_totalsegmentator_per_class_and_multilabel(tmp_path: Path) -> None:
    save_nifti(_image(), tmp_path / "s0001" / "ct.nii.gz")
    for level, name in enumerate(["vertebrae_C1", "vertebrae_C2", "vertebrae_C3"]):
        binary = (_labels() == level + 1).astype(np.uint8)
        save_nifti(_sagittal(binary), tmp_path / "s0001" / "segmentations" / f"{name}.nii.gz")
    save_nifti(_sagittal(np.ones(SHAPE, np.uint8)), tmp_path / "s0001" / "segmentations" / "liver.nii.gz")
    save_nifti(_image(), tmp_path / "s0002" / "ct.nii.gz")
    multi = np.zeros(SHAPE, np.uint8)
    multi[0], multi[1], multi[2] = 50, 49, 5  # C1, C2, liver
    save_nifti(_sagittal(multi), tmp_path / "s0002" / "segmentations.nii.gz")
    assert detect_layout(tmp_path).kind == "totalsegmentator"
    cases = _cases(tmp_path)
    assert sorted(cases) == ["s0001", "s0002"]
    per_class, multilabel = cases["s0001"], cases["s0002"]
    assert per_class.mask_format == "per_class" and len(per_class.mask_paths) == 3
    assert multilabel.mask_format == "labelmap"
    image = load_nifti(per_class.image_path)
    assert np.array_equal(per_class.load_mask(image).array, _labels())  # type: ignore[union-attr]
    expected = np.zeros(SHAPE, np.uint8)
    expected[0], expected[1] = 1, 2
    assert np.array_equal(multilabel.load_mask(image).array, expected)  # type: ignore[union-attr]


def test_single_totalsegmentator_case_folder_as_root(tmp_path: Path) -> None:
    save_nifti(_image(), tmp_path / "scan.nii.gz")
    save_nifti(_image().with_array(np.zeros(SHAPE, np.uint8)), tmp_path / "segmentations.nii.gz")
    (case,) = iter_cases(tmp_path)
    assert case.case_id == tmp_path.name and case.image_path.name == "scan.nii.gz"


# --- plain DICOM -------------------------------------------------------------------------------


def test_plain_dicom_tree_detected_by_preamble(tmp_path: Path) -> None:
    series = tmp_path / "PAT1" / "STUDY" / "SER1"
    paths = write_series(
        _image(), series, SeriesInfo("1.2.826.0.1.3680043.8.498.5", "1.2.826.0.1.3680043.8.498.6"),
        file_name=lambda k, n: f"IM{n:04d}",  # no extension: detection must not rely on one
    )
    (tmp_path / "README.txt").write_text("not dicom")
    assert is_dicom_file(paths[0]) and not is_dicom_file(tmp_path / "README.txt")
    assert detect_layout(tmp_path).kind == "dicom"
    (case,) = iter_cases(tmp_path)
    assert case.case_id == "PAT1/STUDY/SER1" and case.image_path == series and case.image_format == "dicom"


def test_fake_dcm_extension_and_empty_folder_match_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(DatasetLayoutError, match="matches no dataset layout"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        detect_layout(tmp_path / "a.dcm")


# --- path safety -------------------------------------------------------------------------------


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "inner").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    assert safe_join(root, "inner/x.nii.gz") == root / "inner" / "x.nii.gz"
    for bad in ("../secret", "inner/../../secret", "/etc/passwd", "C:/x", "inner\\..\\x", "", "a\x00b"):
        with pytest.raises(UnsafePathError):
            safe_join(root, bad)
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="outside the dataset folder"):
        safe_join(root, "link/file.dcm")
    os.symlink(root / "inner", root / "ok_link")
    assert safe_join(root, "ok_link/a") == root / "ok_link" / "a"
    assert ensure_inside(root, root / "inner") == root / "inner"


def test_symlink_escaping_the_dataset_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write_dicom(root / "S1", "s1")
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes((root / "S1" / "1.dcm").read_bytes())
    os.symlink(outside, root / "S1" / "99.dcm")
    with pytest.raises(UnsafePathError, match="symlink"):
        list(iter_cases(root))

    verse = tmp_path / "verse"
    save_nifti(_image(), verse / "verse004.nii.gz")
    save_nifti(_sagittal(_labels()), tmp_path / "stolen_seg.nii.gz")
    os.symlink(tmp_path / "stolen_seg.nii.gz", verse / "verse004_seg.nii.gz")
    with pytest.raises(UnsafePathError):
        list(iter_cases(verse))
