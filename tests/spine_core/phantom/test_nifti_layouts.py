"""Demo datasets in the VerSe 2020 and CTSpine1K layouts: files, geometry, truth, detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spine_core.errors import InputError
from spine_core.genant import check_grade
from spine_core.io.layouts import detect_layout, iter_cases
from spine_core.io.nifti import load_nifti
from spine_core.phantom.cases import from_spine_study
from spine_core.phantom.demo import write_demo_dataset
from spine_core.phantom.nifti_layouts import write_verse_case
from spine_core.phantom.spine_study import ORIENTATIONS, SpineStudy, generate_spine_study

SMALL = (112, 48, 48)


@pytest.fixture(scope="module")
def study() -> SpineStudy:
    return generate_spine_study(11, SMALL, region="thoracolumbar")


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids="".join)
def test_verse_files_keep_the_scanner_orientation_with_mask_and_centroids_aligned(
        study: SpineStudy, orientation: tuple[str, str, str], tmp_path: Path) -> None:
    case = from_spine_study(study)
    case = type(case)(**{**case.__dict__, "orientation": orientation})
    entry = write_verse_case(case, tmp_path, 1)
    plane = "ax" if orientation[2] == "S" else "sag"
    key = f"sub-phantom001_dir-{plane}"
    ct = tmp_path / "rawdata" / "sub-phantom001" / f"{key}_ct.nii.gz"
    deriv = tmp_path / "derivatives" / "sub-phantom001"
    msk = deriv / f"{key}_seg-vert_msk.nii.gz"
    ctd = deriv / f"{key}_seg-subreg_ctd.json"
    assert ct.is_file() and msk.is_file() and ctd.is_file()
    assert entry["subject"] == "sub-phantom001"
    assert nib.aff2axcodes(nib.load(str(ct)).affine) == orientation  # type: ignore[attr-defined]
    assert nib.aff2axcodes(nib.load(str(msk)).affine) == orientation  # type: ignore[attr-defined]

    (source,) = list(iter_cases(tmp_path))
    image = load_nifti(source.image_path)
    # The same voxels at the same places: back in the generator's orientation, arrays agree.
    back = image.reoriented(study.image.axcodes)
    assert np.array_equal(np.asarray(back.array), study.image.array)
    assert np.allclose(back.affine, study.image.affine, atol=1e-3)
    mask = source.load_mask(image)
    assert mask is not None and not mask.resampled
    assert np.array_equal(
        type(image)(np.asarray(mask.array), image.affine).reoriented(study.image.axcodes).array,
        study.labels.array)

    entries = json.loads(ctd.read_text())
    assert entries[0] == {"direction": list(orientation)}
    assert all(set(e) == {"label", "X", "Y", "Z"} for e in entries[1:])
    centroids = source.load_centroids(image)
    assert centroids is not None
    assert {c.level_id for c in centroids.centroids} == set(study.centroids)
    for c in centroids.centroids:
        idx = np.rint(image.lps_to_index(c.lps)).astype(int)
        assert mask.array[tuple(idx)] == c.level_id, c


def test_verse_dataset_detected_with_grades_and_manifest(tmp_path: Path) -> None:
    root = tmp_path / "verse"
    write_demo_dataset(root, region="thoracolumbar", layout="verse", n_studies=3, seed=4,
                       shape=SMALL, workers=1)
    layout = detect_layout(root)
    assert (layout.kind, layout.style) == ("verse", "subject")
    cases = list(iter_cases(root))
    assert len(cases) == 3 and all(c.has_mask and c.centroid_path for c in cases)
    manifest = json.loads((root / "manifest.json").read_text())
    assert (manifest["layout"], manifest["region"]) == ("verse", "thoracolumbar")
    with (root / "genant_grades.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == ["subject", "label", "grade", "morphology"]
    for row in rows:
        check_grade(int(row["grade"]), row["morphology"] or None)
    fractured = {(r["subject"], int(r["label"])): (int(r["grade"]), r["morphology"])
                 for r in rows if int(r["grade"]) > 0}
    truth = {(s["subject"], c["label"]): (c["grade"], c["morphology"])
             for s in manifest["studies"] for c in s["compressions"]}
    assert fractured == truth
    assert {int(r["label"]) for r in rows} <= set(range(1, 26)) | {28}


def test_ctspine1k_dataset_detected_and_in_its_vocabulary(tmp_path: Path) -> None:
    root = tmp_path / "ctspine"
    write_demo_dataset(root, region="whole", layout="ctspine1k", n_studies=2, seed=3,
                       shape=(128, 48, 48), workers=1)
    layout = detect_layout(root)
    assert (layout.kind, layout.style) == ("ctspine1k", "volumes-labels")
    cases = list(iter_cases(root))
    assert [c.case_id for c in cases] == ["MSD-T10/phantom_001", "MSD-T10/phantom_002"]
    for c in cases:
        name = Path(c.case_id).name
        assert c.image_path == root / "raw_data" / "volumes" / "MSD-T10" / f"{name}.nii.gz"
        assert c.mask_paths == (root / "raw_data" / "labels" / "MSD-T10" / f"{name}_seg.nii.gz",)
        image = load_nifti(c.image_path)
        mask = c.load_mask(image)
        assert mask is not None
        values = set(np.unique(mask.array).tolist())
        assert 26 not in values and 28 not in values and {20, 24} <= values
    split = (root / "metadata" / "data_split.txt").read_text().splitlines()
    assert split[0] == "trainset:" and "test_public:" in split and "test_private:" in split
    assert (root / "genant_grades.csv").is_file()


def test_cervical_region_in_verse_layout(tmp_path: Path) -> None:
    root = tmp_path / "cerv"
    write_demo_dataset(root, region="cervical", layout="verse", n_studies=2, seed=2,
                       shape=(64, 64, 64), workers=1)
    cases = list(iter_cases(root))
    assert len(cases) == 2
    image = load_nifti(cases[0].image_path)
    mask = cases[0].load_mask(image)
    cents = cases[0].load_centroids(image)
    assert mask is not None and cents is not None
    assert {c.level_id for c in cents.centroids} <= set(range(1, 20))


def test_same_arguments_same_bytes_and_layouts_replace_each_other(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write_demo_dataset(root, region="thoracolumbar", layout="verse", n_studies=1, seed=9,
                           shape=(96, 48, 48), workers=1)
    assert digest(a) == digest(b)
    write_demo_dataset(a, region="thoracolumbar", layout="ctspine1k", n_studies=1, seed=9,
                       shape=(96, 48, 48), workers=1)
    assert not (a / "rawdata").exists() and detect_layout(a).kind == "ctspine1k"


def test_rsna_layout_refuses_other_regions(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="RSNA layout holds cervical studies only"):
        write_demo_dataset(tmp_path / "x", region="whole", layout="rsna", n_studies=1)
    with pytest.raises(InputError, match="region"):
        write_demo_dataset(tmp_path / "x", region="neck", layout="verse", n_studies=1)
