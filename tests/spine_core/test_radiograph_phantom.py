"""Synthetic lateral radiographs (DRR of the whole-spine phantom) and their DX files: the levels on
each film, a compression fracture's height loss seen on the film, the DICOM attributes a DX
detector writes (ImagerPixelSpacing, magnification, MONOCHROME1 stored inverted), the truth CSV,
and the same seed writing the same bytes."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from spine_core.errors import InputError
from spine_core.genant import GenantGrade, Morphology
from spine_core.phantom.compression import Compression
from spine_core.phantom.radiograph import BITS_STORED, project_lateral
from spine_core.phantom.spine_study import generate_spine_study
from spine_core.phantom.xray_layout import TRUTH_COLUMNS, dx_dataset, write_xray_dataset

SHAPE = (200, 96, 96)


def _body_height(film: object, level: str) -> float:
    """Median height (pixels) of the level's mask over the front quarter of its box: the
    vertebral body, without the posterior elements that overlap the next level."""
    from spine_core.labels import LEVEL_IDS

    x, y, w, h = film.box(level)  # type: ignore[attr-defined]
    mask = film.labels[y:y + h, x:x + max(1, w // 4)] == LEVEL_IDS[level]  # type: ignore[attr-defined]
    return float(np.median(mask.sum(axis=0)))


def test_a_lumbar_film_shows_the_lumbar_spine_head_to_feet_and_a_crush_fracture_as_height_loss() -> None:
    crush = Compression("L2", GenantGrade(3), Morphology.CRUSH, 0.45)
    study = generate_spine_study(5, SHAPE, region="thoracolumbar", compressions=[crush])
    film = project_lateral(study, "lumbar", np.random.default_rng(1))
    assert {"L1", "L2", "L3", "L4", "L5", "S"} <= set(film.levels)
    order = [film.box(lv)[1] for lv in ("L1", "L2", "L3", "L4")]
    assert order == sorted(order), "rows run head to feet"
    assert film.grades == {"L2": (3, "crush")} and film.reference == "S"
    heights = {lv: _body_height(film, lv) for lv in ("L1", "L2", "L3")}
    assert heights["L2"] < 0.8 * (heights["L1"] + heights["L3"]) / 2, heights
    assert film.image.dtype == np.uint16 and int(film.image.max()) <= (1 << BITS_STORED) - 1
    assert film.labels.shape == film.image.shape
    # bone is bright: the vertebrae are brighter than the soft tissue just in front of them
    x, y, w, h = film.box("L3")
    body = film.image[y + h // 3: y + 2 * h // 3, x: x + w // 3].mean()
    front = film.image[y + h // 3: y + 2 * h // 3, max(0, x - w // 2): x - w // 6].mean()
    assert body > front


def test_a_cervical_film_holds_c1_to_t1_with_c2_as_reference() -> None:
    study = generate_spine_study(3, (256, 96, 96), region="whole", compressions=[])
    film = project_lateral(study, "cervical", np.random.default_rng(2))
    assert [lv for lv in film.levels if lv.startswith("C")] == [f"C{i}" for i in range(1, 8)]
    assert film.reference == "C2" and 0.15 < film.pixel_mm < 0.4


def test_a_film_of_a_region_the_phantom_lacks_is_refused_in_words() -> None:
    study = generate_spine_study(5, SHAPE, region="thoracolumbar", compressions=[])
    with pytest.raises(InputError, match="does not hold C1–T1"):
        project_lateral(study, "cervical", np.random.default_rng(1))
    with pytest.raises(InputError, match="choose cervical or lumbar"):
        project_lateral(study, "thoracic", np.random.default_rng(1))


def test_dx_files_carry_the_detector_pitch_magnification_and_monochrome1_inverted() -> None:
    study = generate_spine_study(5, SHAPE, region="thoracolumbar", compressions=[])
    film = project_lateral(study, "lumbar", np.random.default_rng(1))
    seen = set()
    for seed in range(8):
        ds = dx_dataset(film, "1.2.3.4", "P1", seed)
        assert ds.Modality == "DX" and ds.ViewPosition == "LL" and "PixelSpacing" not in ds
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(film.exposure.pitch_mm)
        assert float(ds.EstimatedRadiographicMagnificationFactor) == pytest.approx(
            film.exposure.magnification, rel=1e-5)
        stored = ds.pixel_array
        top = (1 << BITS_STORED) - 1
        if ds.PhotometricInterpretation == "MONOCHROME1":
            assert np.array_equal(stored, top - film.image)
        else:
            assert np.array_equal(stored, film.image)
        seen.add(ds.PhotometricInterpretation)
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_the_dataset_is_laid_out_with_truth_and_the_same_seed_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    from PIL import Image

    first = write_xray_dataset(tmp_path / "a", region="lumbar", n_studies=2, seed=9,
                               phantom_shape=SHAPE)
    write_xray_dataset(tmp_path / "b", region="lumbar", n_studies=2, seed=9, phantom_shape=SHAPE)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    files = sorted((tmp_path / "a" / "train_images").glob("*/1.dcm"))
    assert len(files) == 2
    with first.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == TRUTH_COLUMNS
    for path in files:
        ds = pydicom.dcmread(path)
        uid = path.parent.name
        assert ds.StudyInstanceUID == uid
        mask = np.asarray(Image.open(tmp_path / "a" / "masks" / f"{uid}.png"))
        assert mask.shape == (ds.Rows, ds.Columns)
        mine = [r for r in rows if r["StudyInstanceUID"] == uid]
        assert sum(r["reference"] == "1" for r in mine) == 1
        l3 = next(r for r in mine if r["level"] == "L3")
        x, y, w, h = (int(l3[k]) for k in ("x", "y", "width", "height"))
        assert (mask[y:y + h, x:x + w] == 22).any() and not (mask[:y] == 22).any()  # L3 is 22
