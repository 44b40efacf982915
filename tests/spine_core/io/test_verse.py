"""VerSe centroid JSON: the three flavours against hand-computed LPS positions, and round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spine_core.errors import InputError, LabelVocabularyError
from spine_core.io.nifti import load_nifti, save_nifti
from spine_core.io.verse import (
    Centroid,
    centroids_from_labels,
    read_centroids,
    write_centroids,
)
from spine_core.volume import Volume


def _image() -> Volume:
    """Shape (10, 20, 30); a0 steps 2 mm towards Inferior, a1 0.5 mm Posterior, a2 0.75 mm Left."""
    aff = np.eye(4)
    aff[:3, 0] = (0, 0, -2.0)
    aff[:3, 1] = (0, 0.5, 0)
    aff[:3, 2] = (0.75, 0, 0)
    aff[:3, 3] = (-10.0, -20.0, 30.0)
    return Volume(np.zeros((10, 20, 30), np.int16), aff)


def test_subject_based_direction_in_voxels(tmp_path: Path) -> None:
    # PIR: X -> our a1 (P), Y -> our a0 (I), Z -> a2 flipped (R), so a2 = 29 - Z.
    # X=4, Y=3, Z=9 -> index (3, 4, 20) -> LPS (-10 + 20*0.75, -20 + 4*0.5, 30 - 3*2) = (5, -18, 24)
    path = tmp_path / "sub-verse004_seg-subreg_ctd.json"
    path.write_text(json.dumps([{"direction": ["P", "I", "R"]}, {"label": 20, "X": 4, "Y": 3, "Z": 9}]))
    result = read_centroids(path, _image())
    assert result.units == "voxel" and result.axcodes == ("P", "I", "R")
    (c,) = result.centroids
    assert c.level_id == 20 and c.name == "L1"
    assert np.allclose(c.lps, (5, -18, 24))


def test_other_direction_codes(tmp_path: Path) -> None:
    # LAS: X -> a2 (L, no flip), Y -> a1 flipped (A: a1 = 19 - Y), Z -> a0 flipped (S: a0 = 9 - Z)
    # X=2, Y=5, Z=1 -> index (8, 14, 2) -> LPS (-10 + 1.5, -20 + 7, 30 - 16) = (-8.5, -13, 14)
    path = tmp_path / "c_ctd.json"
    path.write_text(json.dumps([{"direction": ["L", "A", "S"]}, {"label": 8, "X": 2, "Y": 5, "Z": 1}]))
    assert np.allclose(read_centroids(path, _image()).centroids[0].lps, (-8.5, -13, 14))


def test_miccai_2019_millimetres_ipl(tmp_path: Path) -> None:
    # IPL mm: X/2 -> a0, Y/0.5 -> a1, Z/0.75 -> a2. X=6, Y=2, Z=7.5 -> (3, 4, 10)
    # -> LPS (-10 + 7.5, -20 + 2, 30 - 6) = (-2.5, -18, 24)
    path = tmp_path / "verse004_ctd.json"
    path.write_text(json.dumps([{"label": 1, "X": 6, "Y": 2, "Z": 7.5}]))
    result = read_centroids(path, _image())
    assert result.units == "mm" and result.axcodes == ("I", "P", "L")
    assert np.allclose(result.centroids[0].lps, (-2.5, -18, 24))


def test_miccai_2020_iso_millimetres_pir(tmp_path: Path) -> None:
    # PIR mm: X/0.5 -> a1, Y/2 -> a0, Z/0.75 -> flipped a2 (29 - Z/0.75). X=1, Y=4, Z=1.5
    # -> index (2, 2, 27) -> LPS (-10 + 20.25, -20 + 1, 30 - 4) = (10.25, -19, 26)
    path = tmp_path / "verse512_CT-iso_iso-ctd.json"
    path.write_text(json.dumps([{"label": 28, "X": 1, "Y": 4, "Z": 1.5}]))
    result = read_centroids(path, _image())
    assert result.axcodes == ("P", "I", "R") and result.centroids[0].name == "T13"
    assert np.allclose(result.centroids[0].lps, (10.25, -19, 26))


def test_round_trip_through_file_and_nifti(tmp_path: Path) -> None:
    image = _image()
    save_nifti(image, tmp_path / "ct.nii.gz")
    reloaded = load_nifti(tmp_path / "ct.nii.gz")
    original = [Centroid(3, (1.25, -15.5, 20.0)), Centroid(19, (4.0, -17.0, 12.0))]
    path = write_centroids(tmp_path / "out_ctd.json", original, reloaded, decimals=6)
    entries = json.loads(path.read_text())
    assert entries[0] == {"direction": ["P", "I", "R"]} and [e["label"] for e in entries[1:]] == [3, 19]
    back = read_centroids(path, image).by_level()
    for c in original:
        assert np.allclose(back[c.level_id], c.lps, atol=1e-5)
    # default rounding (0.1 voxel) stays within 0.05 voxel of the truth
    coarse = read_centroids(write_centroids(tmp_path / "r_ctd.json", original, image), image).by_level()
    for c in original:
        assert np.all(np.abs(np.subtract(coarse[c.level_id], c.lps)) <= 0.05 * 2.0 + 1e-9)


def test_centroids_from_labels_are_centres_of_mass() -> None:
    image = _image()
    labels = np.zeros(image.shape, np.uint8)
    labels[2:5, 4:7, 10:13] = 9  # centre index (3, 5, 11)
    (c,) = centroids_from_labels(labels, image)
    assert c.level_id == 9 and np.allclose(c.lps, image.index_to_lps([3, 5, 11]))


def test_nan_skipped_unknown_label_and_bad_json_refused(tmp_path: Path) -> None:
    image = _image()
    path = tmp_path / "a_ctd.json"
    path.write_text('[{"direction": ["P", "I", "R"]}, {"label": 2, "X": NaN, "Y": 1, "Z": 1}, '
                    '{"label": 3, "X": 1, "Y": 1, "Z": 1}]')
    result = read_centroids(path, image)
    assert [c.level_id for c in result.centroids] == [3] and "label 2" in result.warnings[0]
    path.write_text(json.dumps([{"label": 41, "X": 1, "Y": 1, "Z": 1}]))
    with pytest.raises(LabelVocabularyError, match=r"\[41\]"):
        read_centroids(path, image)
    path.write_text(json.dumps([{"direction": ["P", "I", "P"]}]))
    with pytest.raises(InputError, match="each of"):
        read_centroids(path, image)
    path.write_text(json.dumps([{"label": 3, "X": 1, "Y": 1}]))
    with pytest.raises(InputError, match="'Z'"):
        read_centroids(path, image)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_centroids(path, image)
    path.write_text(json.dumps([{"label": 3, "X": 1, "Y": 1, "Z": 1}, {"label": 3, "X": 2, "Y": 1, "Z": 1}]))
    with pytest.raises(InputError, match="twice"):
        read_centroids(path, image)
