"""``spine export verse|ctspine1k OUT``: the final work in a published whole-spine layout.

VerSe 2020, per study with a mask::

    rawdata/sub-X/sub-X_dir-D_ct.nii.gz                   the image, in its own orientation
    derivatives/sub-X/sub-X_dir-D_seg-vert_msk.nii.gz     the mask in VerSe numbering, same grid
    derivatives/sub-X/sub-X_dir-D_seg-subreg_ctd.json     centroids, {"direction": [...]} first
    genant_grades.csv                                     subject,label,grade,morphology

CTSpine1K: ``raw_data/volumes/spinereview/N.nii.gz`` and ``raw_data/labels/spinereview/N_seg.nii.gz``
(labels 1-25: its vocabulary has no sacrum and no T13, which are left out with a warning), and the
same grades file.

The final grade of a level is the committee's decision on its grade dispute, else the one every
submitted reader gave when they agree, else the dataset's own; a level whose grade dispute is still
open is written with the dataset's grade and named in a warning; levels without any grade are left
out. A renumbering every submitted reader made alike (``db.relabel``: "T13 present at the vertebra
labelled L1") renames the exported mask's values, the centroids and the grades, named in a
warning; readers who renumber differently leave the mask's own numbering, also named.
A centroid that is not on its vertebra (or whose level has no voxel in the mask) is named in a
warning and kept out of the JSON; a bad centroid never changes the mask. Subjects are checked
before they become folder names, and every file written is proven to lie inside ``OUT``.
Importing the export gives back the same masks, centroids and grades.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.adjudication_inputs import submitted_readers
from db.grade_disputes import provisional_grades_of
from db.relabel import study_relabels
from db.studies import open_image, open_mask
from db.workspace import Workspace, open_workspace
from spine_core.config import Settings
from spine_core.csv_safe import safe_row
from spine_core.io.safe_paths import output_folder, safe_join
from spine_core.io.verse import Centroid, write_centroids
from spine_core.labels import CTSPINE1K, LEVEL_IDS
from spine_core.relabel import apply_relabel, relabel_name
from spine_core.volume import Volume

LAYOUTS = ("verse", "ctspine1k")
_SUBJECT = re.compile(r"^sub-([A-Za-z0-9]+)_")
_DIR = re.compile(r"_dir-([a-z]+)_")


@dataclass
class LayoutExport:
    """What an export wrote and what it left out (one line each)."""

    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _workspace(settings: Settings | Workspace) -> Workspace:
    return settings if isinstance(settings, Workspace) else open_workspace(settings)


def subject_of(study: m.Study) -> str:
    """``sub-...`` for a study: the VerSe subject it was imported as, else one made of its UID
    (letters and digits only, so it is a safe folder name)."""
    found = _SUBJECT.match(os.path.basename(study.description or ""))
    if study.dataset == "verse" and found:
        return f"sub-{found.group(1)}"
    digits = re.sub(r"[^0-9]", "", study.study_uid)[-24:]
    return f"sub-{digits}" if digits else f"sub-study{study.id}"


def _direction(study: m.Study) -> str:
    found = _DIR.search(os.path.basename(study.description or ""))
    return found.group(1) if found and found.group(1).isalpha() else "ax"


def final_grades(session: Session, study_id: int) -> dict[str, tuple[int, str | None]]:
    """Level -> (grade, morphology), mask numbering: the committee's decision, else the grade
    every submitted reader gave, else the dataset's; a level under an open grade dispute has the
    dataset's grade meanwhile (:func:`db.grade_disputes.provisional_grades_of`)."""
    final, _ = provisional_grades_of(session, study_id)
    return {level: (v.grade, v.morphology) for level, v in final.items()}


def agreed_relabel(session: Session, study_id: int, subject: str, warnings: list[str]
                   ) -> dict[str, str]:
    """The renumbering every submitted reader of the study made alike ({} when none did, or
    when they differ: then a warning names the study and the dataset's numbering is kept)."""
    readers = submitted_readers(session, study_id)
    relabels = study_relabels(session, study_id)
    made = {json.dumps(relabels.get(r, {}), sort_keys=True) for r in readers}
    if not readers or made == {"{}"}:
        return {}
    if len(made) > 1:
        said = "; ".join(f"{r}: {_arrows(relabels.get(r, {})) or 'as the mask'}" for r in readers)
        warnings.append(f"{subject}: the readers renumber the vertebrae differently ({said}); "
                        "the mask's own numbering was exported")
        return {}
    mapping = relabels[readers[0]]
    warnings.append(f"{subject}: vertebrae renumbered as every reader said ({_arrows(mapping)}): "
                    "the mask's values, the centroids and the grades follow")
    return mapping


def _arrows(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k} -> {v}" for k, v in mapping.items())


def _checked_centroids(session: Session, study: m.Study, image: Volume,
                       labels: npt.NDArray[np.integer], subject: str,
                       warnings: list[str]) -> list[Centroid]:
    """The study's dataset centroids that lie on their own vertebra in the mask."""
    rows = session.scalars(select(m.Centroid).where(m.Centroid.study_id == study.id,
                                                    m.Centroid.source == "dataset"))
    present = {int(v) for v in np.unique(labels) if v}
    inverse = np.linalg.inv(image.affine)
    kept = []
    for row in sorted(rows, key=lambda r: LEVEL_IDS.get(r.level, 99)):
        level = LEVEL_IDS.get(row.level)
        if level is None or level not in present:
            warnings.append(f"{subject}: centroid of {row.level} left out: the mask has no "
                            f"{row.level}")
            continue
        index = np.rint(inverse @ np.array([row.x, row.y, row.z, 1.0]))[:3].astype(int)
        inside = all(0 <= i < n for i, n in zip(index, labels.shape))
        if not inside or int(labels[tuple(index)]) != level:
            where = "outside the image" if not inside else f"on label {int(labels[tuple(index)])}"
            warnings.append(f"{subject}: centroid of {row.level} left out: it lies {where}, not on "
                            f"{row.level} in the mask (the mask was kept as it is)")
            continue
        kept.append(Centroid(level, (float(row.x), float(row.y), float(row.z))))
    return kept


def _save(volume: Volume, array: npt.NDArray[np.generic], path: Path, dtype: type) -> Path:
    data, affine = volume.with_array(array).to_nifti_arrays()
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp.{path.name}")
    nib.save(img, tmp)
    os.replace(tmp, path)
    return path


def _grades_csv(path: Path, rows: Iterable[tuple[str, int, int, str | None]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["subject", "label", "grade", "morphology"])
    writer.writerows(safe_row([s, label, grade, morph or ""]) for s, label, grade, morph in rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def export_layout(settings: Settings | Workspace, layout: str, out: Path) -> LayoutExport:
    """Write every study with a vertebra mask in the ``layout`` ("verse" or "ctspine1k")."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    ws = _workspace(settings)
    output_folder(out)
    result = LayoutExport()
    grade_rows: list[tuple[str, int, int, str | None]] = []
    with ws.sessions() as session:
        studies = session.scalars(select(m.Study).where(m.Study.has_mask.is_(True))
                                  .order_by(m.Study.id)).all()
        used: set[str] = set()
        for n, study in enumerate(studies, start=1):
            series = session.scalars(select(m.Series).where(m.Series.study_id == study.id)
                                     .order_by(m.Series.id)).first()
            if series is None:
                result.warnings.append(f"study {study.study_uid}: no image series; left out")
                continue
            image = open_image(ws, series)
            mask = open_mask(ws, series, image)
            if mask is None:
                continue
            labels = np.asarray(mask.array)
            subject = subject_of(study)
            if subject in used:
                subject = f"{subject}x{n}"
            used.add(subject)
            renumber = agreed_relabel(session, study.id, subject, result.warnings)
            out_labels = apply_relabel(labels, renumber) if renumber else labels
            name = subject if layout == "verse" else subject.removeprefix("sub-")
            if layout == "verse":
                stem = f"{subject}_dir-{_direction(study)}"
                result.paths.append(_save(image, np.asarray(image.array), safe_join(
                    out, f"rawdata/{subject}/{stem}_ct.nii.gz"), np.int16))
                result.paths.append(_save(image, out_labels, safe_join(
                    out, f"derivatives/{subject}/{stem}_seg-vert_msk.nii.gz"), np.uint8))
                centroids = [Centroid(LEVEL_IDS[relabel_name(c.name, renumber)], c.lps) for c in
                             _checked_centroids(session, study, image, labels, subject,
                                                result.warnings)]
                codes = nib.aff2axcodes(image.to_nifti_arrays()[1])
                result.paths.append(write_centroids(safe_join(
                    out, f"derivatives/{subject}/{stem}_seg-subreg_ctd.json"), centroids, image,
                    axcodes=codes))
            else:
                keep = np.isin(out_labels, list(CTSPINE1K.to_canonical.values()))
                dropped = sorted({int(v) for v in np.unique(out_labels[~keep]) if v})
                if dropped:
                    names = ", ".join(k for k, v in LEVEL_IDS.items() if v in dropped)
                    result.warnings.append(f"{name}: {names} left out of the label map (CTSpine1K "
                                           "labels C1-L6 only)")
                result.paths.append(_save(image, np.asarray(image.array), safe_join(
                    out, f"raw_data/volumes/spinereview/{name}.nii.gz"), np.int16))
                result.paths.append(_save(image, np.where(keep, out_labels, 0), safe_join(
                    out, f"raw_data/labels/spinereview/{name}_seg.nii.gz"), np.uint8))
            _, undecided = provisional_grades_of(session, study.id)
            if undecided:
                result.warnings.append(f"{name}: the grade of {', '.join(undecided)} waits for the "
                                       "committee (open dispute); the dataset's grade was written")
            named = {relabel_name(level, renumber): value
                     for level, value in final_grades(session, study.id).items()}
            for level, (grade, morph) in sorted(named.items(), key=lambda kv: LEVEL_IDS[kv[0]]):
                grade_rows.append((name, LEVEL_IDS[level], grade, morph))
    result.paths.append(_grades_csv(safe_join(out, "genant_grades.csv"), grade_rows))
    return result
