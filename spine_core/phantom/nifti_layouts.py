"""Write cases in the published NIfTI layouts of VerSe 2020 and CTSpine1K.

VerSe 2020 (subject-based release, BIDS-like), ``out_dir``::

    rawdata/sub-phantomNNN/sub-phantomNNN_dir-ax_ct.nii.gz            CT, int16 HU
    derivatives/sub-phantomNNN/sub-phantomNNN_dir-ax_seg-vert_msk.nii.gz  labels (VerSe ids)
    derivatives/sub-phantomNNN/sub-phantomNNN_dir-ax_seg-subreg_ctd.json  centroids
    genant_grades.csv       subject,label,grade,morphology (every labelled vertebra)
    manifest.json           the truth per study (seed, orientation, transitional anatomy...)

Files keep the scanner's orientation, as VerSe's do: a study is stored with NIfTI axis codes
LPS, RAS or PIR (``dir-sag`` instead of ``dir-ax`` for the sagittal PIR one), with a correct
affine. The centroid file's first element names that orientation (``{"direction": [...]}``), the
others are ``{"label", "X", "Y", "Z"}`` in voxel coordinates of the stored array.
VerSe labels: 1–7 C1–C7, 8–19 T1–T12, 20–24 L1–L5, 25 L6, 26 sacrum, 28 T13.

CTSpine1K (as published, e.g. its Hugging Face copy), ``out_dir``::

    raw_data/volumes/<source>/<name>.nii.gz        CT
    raw_data/labels/<source>/<name>_seg.nii.gz     labels 1–25 (C1–L6)
    metadata/data_split.txt                        trainset: / test_public: / test_private:
    genant_grades.csv, manifest.json               as above (subject = <name>)

CTSpine1K labels no sacrum and has no T13 label: those voxels are 0 there (the manifest says
which levels were left unlabelled). ``<source>`` is the CTSpine1K sub-dataset the region
resembles: HNSCC-3DCT-RT (cervical), COLONOG (thoracolumbar), MSD-T10 (whole).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.io.nifti import save_nifti
from spine_core.io.verse import Centroid, write_centroids
from spine_core.labels import CTSPINE1K, LEVEL_NAMES
from spine_core.phantom.cases import DemoCase

GRADE_COLUMNS = ("subject", "label", "grade", "morphology")
GRADES_CSV = "genant_grades.csv"
CTSPINE_SOURCES = {"cervical": "HNSCC-3DCT-RT", "thoracolumbar": "COLONOG", "whole": "MSD-T10"}
#: Labels that are vertebrae graded by Genant (not the sacrum or coccyx).
_GRADED = tuple(i for i in LEVEL_NAMES if i not in (26, 27))


def verse_key(index: int, case: DemoCase) -> str:
    """BIDS-like file key of study ``index``: ``sub-phantom001_dir-ax``."""
    plane = "ax" if case.orientation[2] in ("S", "I") else "sag"
    return f"sub-phantom{index:03d}_dir-{plane}"


def grade_rows(subject: str, case: DemoCase, labels: Sequence[int]) -> list[list[Any]]:
    """One genant_grades.csv row per labelled vertebra (grade 0 and no morphology if intact)."""
    by_label = {c.level: c for c in case.compressions}
    rows: list[list[Any]] = []
    for lid in sorted(labels):
        if lid not in _GRADED:
            continue
        c = by_label.get(LEVEL_NAMES[lid])
        rows.append([subject, lid, c.grade if c else 0, c.morphology.value if c else ""])
    return rows


def write_verse_case(case: DemoCase, root: Path, index: int) -> dict[str, Any]:
    """Write one case in the VerSe 2020 layout; return its manifest entry (with grade rows)."""
    key = verse_key(index, case)
    subject = key.split("_")[0]
    image = case.stored(case.image)
    save_nifti(image, root / "rawdata" / subject / f"{key}_ct.nii.gz", dtype=np.int16)
    deriv = root / "derivatives" / subject
    save_nifti(case.stored(case.labels), deriv / f"{key}_seg-vert_msk.nii.gz", dtype=np.uint8)
    centroids = [Centroid(lid, p) for lid, p in sorted(case.centroids.items())]
    write_centroids(deriv / f"{key}_seg-subreg_ctd.json", centroids, image,
                    axcodes=case.orientation)
    return {**case.truth(), "subject": subject, "files": key,
            "grades": grade_rows(subject, case, list(case.centroids))}


def _ctspine_orientation(case: DemoCase) -> tuple[str, str, str]:
    """CTSpine1K volumes are axial: a sagittal orientation is stored as LPS."""
    return case.orientation if case.orientation[2] in ("S", "I") else ("L", "P", "S")


def write_ctspine_case(case: DemoCase, root: Path, index: int) -> dict[str, Any]:
    """Write one case in the CTSpine1K layout; return its manifest entry (with grade rows)."""
    source = CTSPINE_SOURCES[case.region]
    name = f"phantom_{index:03d}"
    i, j, k = _ctspine_orientation(case)
    axcodes = (k, j, i)
    save_nifti(case.image.reoriented(axcodes),
               root / "raw_data" / "volumes" / source / f"{name}.nii.gz", dtype=np.int16)
    labels = case.labels.array
    allowed = np.zeros(256, dtype=np.uint8)
    for value in CTSPINE1K.to_canonical:
        allowed[value] = value
    kept = case.labels.with_array(allowed[labels])
    save_nifti(kept.reoriented(axcodes),
               root / "raw_data" / "labels" / source / f"{name}_seg.nii.gz", dtype=np.uint8)
    present = [lid for lid in case.centroids if lid in CTSPINE1K.to_canonical]
    dropped = [LEVEL_NAMES[lid] for lid in sorted(case.centroids) if lid not in present]
    return {**case.truth(), "subject": name, "orientation": f"{i}{j}{k}",
            "files": f"raw_data/volumes/{source}/{name}.nii.gz", "unlabelled": dropped,
            "grades": grade_rows(name, case, present)}


def write_grades(root: Path, entries: Sequence[dict[str, Any]]) -> Path:
    path = root / GRADES_CSV
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GRADE_COLUMNS)
        for entry in entries:
            writer.writerows(entry["grades"])
    return path


def write_data_split(root: Path, entries: Sequence[dict[str, Any]]) -> Path:
    """CTSpine1K's ``metadata/data_split.txt``: about 60 % train, 20 % public and private test."""
    names = [f"{e['subject']}.nii.gz" for e in entries]
    n = len(names)
    n_train, n_public = max(1, round(0.6 * n)), round(0.2 * n)
    parts = [("trainset:", names[:n_train]), ("test_public:", names[n_train:n_train + n_public]),
             ("test_private:", names[n_train + n_public:])]
    text = "\n\n".join("\n".join([head, *items]) for head, items in parts) + "\n"
    path = root / "metadata" / "data_split.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
