"""Write synthetic lateral radiographs as a dataset: DX DICOM files in the RSNA-like layout, the
projected vertebra masks and one truth CSV.

Layout (``out/``)::

    train_images/<StudyInstanceUID>/1.dcm   one DX image per study (for presentation)
    masks/<StudyInstanceUID>.png            8-bit label image, canonical level ids (0 background)
    masks/<StudyInstanceUID>.nii.gz         the same labels on the film's grid (its display affine,
                                            from the DICOM file's own spacing), imported as the
                                            film's vertebra mask
    truth.csv                               one row per vertebra on the film
    manifest.json                           what wrote it (seed, region, count)

``truth.csv`` columns: StudyInstanceUID, level, x, y, width, height (the level's box in pixels),
centroid_x, centroid_y (pixels), grade and morphology (Genant; 0 and empty when intact),
reference (1 on the film's reference vertebra: C2 on cervical, S on lumbar films), pixel_mm (mm
per pixel in the patient: ImagerPixelSpacing / magnification).

The DICOM files carry ImagerPixelSpacing (the detector pitch) and
EstimatedRadiographicMagnificationFactor, never PixelSpacing, as a DX detector writes them; a
third of them are MONOCHROME1 (stored inverted, as many CR/DX systems do), with the window in
their VOI attributes. The same seed writes identical files.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from spine_core.csv_safe import safe_row
from spine_core.errors import InputError
from spine_core.io.dicom_write import uid_from_seed
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.radiograph import (
    BITS_STORED,
    XRAY_REGIONS,
    Radiograph,
    project_lateral,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
TRUTH_COLUMNS = ("StudyInstanceUID", "level", "x", "y", "width", "height", "centroid_x",
                 "centroid_y", "grade", "morphology", "reference", "pixel_mm")
#: Phantom grid (slices, rows, columns) each film is projected from.
PHANTOM_SHAPES: dict[str, tuple[int, int, int]] = {"cervical": (512, 256, 256),
                                                   "lumbar": (320, 256, 256)}
BODY_PART = {"cervical": "CSPINE", "lumbar": "LSPINE"}


def film_seeds(seed: int, n_studies: int) -> list[int]:
    """One phantom seed per film, deterministic per ``seed``."""
    return [int(s.generate_state(1)[0] & 0x7FFFFFFF)
            for s in np.random.SeedSequence([int(seed), 31]).spawn(int(n_studies))]


def dx_dataset(film: Radiograph, study_uid: str, patient_id: str, seed: int) -> Dataset:
    """The film as a DX "for presentation" dataset (see the module docstring)."""
    series_uid = uid_from_seed(study_uid, "series")
    sop_uid = uid_from_seed(study_uid, "image")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(DX_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "DX"
    ds.PatientID = patient_id
    ds.PatientName = f"Phantom^{patient_id}"
    date = (dt.date(2022, 1, 1) + dt.timedelta(days=seed % 365)).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = "120000"
    ds.Manufacturer = "SpineReview phantom"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"{film.region} spine lateral (synthetic)"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = BODY_PART[film.region]
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["P", "F"]  # columns towards the back, rows towards the feet
    ds.ImagerPixelSpacing = [f"{film.exposure.pitch_mm:.6g}"] * 2
    ds.EstimatedRadiographicMagnificationFactor = f"{film.exposure.magnification:.6g}"
    ds.KVP = "85" if film.region == "lumbar" else "70"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = film.image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    pixels = film.image
    top = (1 << BITS_STORED) - 1
    if np.random.default_rng([seed, 7]).random() < 1 / 3:
        ds.PhotometricInterpretation = "MONOCHROME1"  # stored inverted: bone is low
        pixels = (top - pixels).astype(np.uint16)
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
    lo, hi = np.percentile(film.image, [2, 99.5])
    centre = (lo + hi) / 2
    if ds.PhotometricInterpretation == "MONOCHROME1":
        centre = top - centre
    ds.WindowCenter = f"{centre:.0f}"
    ds.WindowWidth = f"{max(hi - lo, 1):.0f}"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def truth_rows(film: Radiograph, study_uid: str) -> list[list[Any]]:
    """One truth row per vertebra on the film, head to feet (:data:`TRUTH_COLUMNS`)."""
    rows: list[list[Any]] = []
    for level in film.levels:
        x, y, w, h = film.box(level)
        ys, xs = np.nonzero(film.labels == LEVEL_IDS[level])
        grade, morph = film.grades.get(level, (0, ""))
        rows.append([study_uid, level, x, y, w, h, f"{xs.mean():.1f}", f"{ys.mean():.1f}", grade,
                     morph, int(level == film.reference), f"{film.pixel_mm:.6g}"])
    return rows


def write_film_mask(labels: np.ndarray, dicom_path: Path, out: Path) -> Path:
    """``labels`` (rows × columns, canonical ids) as a one-slice NIfTI on the grid the importer
    gives the film ``dicom_path`` (the display affine of its own spacing), so the mask maps onto
    the film exactly."""
    from spine_core.io.nifti import save_nifti
    from spine_core.io.radiograph import display_affine, read_radiograph_header
    from spine_core.volume import Volume

    affine = display_affine(read_radiograph_header(dicom_path).spacing.mm)
    return save_nifti(Volume(np.asarray(labels, dtype=np.uint8)[None], affine), out)


def _one(job: tuple[Path, str, int, int, tuple[int, int, int]]) -> list[list[Any]]:
    """Generate, project and write film ``index`` (runs in a worker process)."""
    from PIL import Image

    from spine_core.phantom.spine_study import generate_spine_study

    root, region, index, seed, shape = job
    study = generate_spine_study(seed, shape, region=XRAY_REGIONS[region])
    film = project_lateral(study, region, np.random.default_rng([seed, 5]))
    study_uid = uid_from_seed("spinereview-phantom-xray", region, seed)
    patient = f"XR{region[0].upper()}{index:04d}"
    folder = root / "train_images" / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    dx_dataset(film, study_uid, patient, seed).save_as(folder / "1.dcm", enforce_file_format=True)
    Image.fromarray(film.labels).save(root / "masks" / f"{study_uid}.png")
    write_film_mask(film.labels, folder / "1.dcm", root / "masks" / f"{study_uid}.nii.gz")
    return truth_rows(film, study_uid)


def write_xray_dataset(out_dir: Path | str, *, region: str = "cervical", n_studies: int = 10,
                       seed: int = 2022, workers: int = 1,
                       phantom_shape: tuple[int, int, int] | None = None) -> Path:
    """Write ``n_studies`` lateral films of ``region`` (cervical or lumbar) to ``out_dir``,
    projected from phantoms of ``phantom_shape`` (default :data:`PHANTOM_SHAPES`).

    Returns the truth CSV's path.

    Raises:
        InputError: an unknown region, a bad count, or an output folder that holds other files.
    """
    if region not in XRAY_REGIONS:
        raise InputError(f"radiograph region {region!r}: choose {' or '.join(XRAY_REGIONS)}")
    if int(n_studies) < 1:
        raise InputError(f"--studies must be at least 1, got {n_studies}")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()) and not (root / "manifest.json").is_file():
        raise InputError(f"{root} holds other files: give an empty or new folder")
    (root / "masks").mkdir(parents=True, exist_ok=True)
    shape = phantom_shape or PHANTOM_SHAPES[region]
    jobs = [(root, region, i, s, shape) for i, s in enumerate(film_seeds(seed, n_studies))]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        with ProcessPoolExecutor(min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_one, jobs))
    else:
        results = [_one(job) for job in jobs]
    truth = root / "truth.csv"
    with truth.open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(TRUTH_COLUMNS)
        for rows in results:
            out.writerows(safe_row(r) for r in rows)
    (root / "manifest.json").write_text(json.dumps(
        {"generator": "spinereview-phantom-xray", "modality": "DX", "region": region,
         "studies": int(n_studies), "seed": int(seed), "view": "lateral"}, indent=2) + "\n")
    return truth
