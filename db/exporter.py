"""Exports in the formats the field already uses.

* ``rsna``: ``train.csv`` (StudyInstanceUID, patient_overall, C1..C7) from the final labels and
  ``train_bounding_boxes.csv`` (StudyInstanceUID, x, y, width, height, slice_number) from the union
  of the readers' boxes (RSNA rule), or the dataset's reference boxes where no reader drew any.
  Studies with an undecided level (an open reader/report dispute on C1–C7) are left out of both
  unless asked for; then they carry their provisional labels (``db.disputes.provisional_labels_of``).
* ``readers``: every reader's boxes and level calls (the same columns ``spine import`` reads).
* ``nifti``: one study's image and vertebra mask on one grid, with affines.
* ``coco``: the axial slices that carry boxes, as PNG (bone window) + COCO JSON, for 2-D detectors.
* ``decisions``: the adjudication record (disputes, votes, decisions).

Files are written to a temporary name and renamed, so an interrupted export leaves no half file.
Every file name goes through :func:`spine_core.io.safe_paths.inside`: a StudyInstanceUID stored
as ``../../PWNED`` (never accepted at import, but a database is not proof) is refused with one line
instead of naming a file outside ``OUT``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.workspace import Workspace, open_workspace
from spine_core.boxes import Box
from spine_core.config import Settings
from spine_core.consensus import UnionBox, union_boxes
from spine_core.csv_safe import safe_row
from spine_core.errors import InputError, NotFound
from spine_core.io.safe_paths import inside, output_folder
from spine_core.labels import CERVICAL

RSNA_LABEL_COLUMNS = ("StudyInstanceUID", "patient_overall", *CERVICAL)
RSNA_BOX_COLUMNS = ("StudyInstanceUID", "x", "y", "width", "height", "slice_number")
READER_BOX_COLUMNS = ("StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader", "level", "note",
                      "fracture", "key")
READER_LEVEL_COLUMNS = ("StudyInstanceUID", "reader", "level", "call")
READER_STUDY_COLUMNS = ("StudyInstanceUID", "reader", "status", "opened_at", "submitted_at", "active_s")
#: A reader's Genant grades: ``level`` is the mask's name of the vertebra, ``reader_level`` the
#: reader's own (their renumbering, db.relabel, applied).
READER_GRADE_COLUMNS = ("StudyInstanceUID", "reader", "level", "reader_level", "grade", "morphology")
#: A reader's renumbering, one row per vertebra it renames (``at`` / ``says``: the shift said).
READER_RELABEL_COLUMNS = ("StudyInstanceUID", "reader", "level", "reader_level", "at", "says")


def format_number(value: float) -> str:
    """Numbers as RSNA writes them ('133.0', '124.81'): shortest repr after rounding to 1e-4 px.

    The rounding removes float noise of union extents (x1 - x0) far below a pixel.
    """
    return repr(round(float(value), 4) + 0.0)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV atomically (temp file + rename) at ``path`` (checked to lie in its folder);
    formula-like text cells are neutralised (:mod:`spine_core.csv_safe`)."""
    path = inside(output_folder(path.parent), path.name)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(safe_row(row) for row in rows)  # no cell a spreadsheet runs as a formula
    _atomic_write(path, buffer.getvalue().encode())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- final labels and boxes (shared with metrics and the pages) --------------------------------


def final_labels(session: Session, study_id: int) -> dict[str, bool]:
    """Level -> fractured: the adjudication store's final labels (``db.disputes.final_labels_of``:
    decisions and agreed labels, else the report except on levels still under dispute)."""
    from db.disputes import final_labels_of

    return final_labels_of(session, study_id)


def reader_core_boxes(session: Session, study_id: int) -> list[Box]:
    """Readers' live boxes of a study as core boxes (dataset reference boxes excluded)."""
    rows = session.execute(
        select(m.Box, m.User.username)
        .join(m.User, m.User.id == m.Box.reader_id)
        .where(m.Box.study_id == study_id, m.Box.deleted_at.is_(None), m.Box.source != "dataset")
        .order_by(m.Box.slice_index, m.Box.id)
    ).all()
    return [
        Box(x=b.x, y=b.y, width=b.width, height=b.height, slice_index=b.slice_index,
                reader=username, level=b.level, id=b.id)
        for b, username in rows
    ]


def final_boxes(session: Session, study_id: int, min_iou: float = 0.0
                ) -> list[tuple[int, Box | UnionBox]]:
    """(instance number, box) of the ground truth: union of readers' boxes, else dataset boxes."""
    series = session.scalars(
        select(m.Series).where(m.Series.study_id == study_id).order_by(m.Series.id)
    ).first()
    numbers: list[int] = list(series.instance_numbers) if series is not None else []

    def instance(slice_index: int) -> int:
        return int(numbers[slice_index]) if numbers else slice_index + 1

    readers = reader_core_boxes(session, study_id)
    if readers:
        return [(instance(u.slice_index), u) for u in union_boxes(readers, min_iou=min_iou)]
    dataset = session.scalars(
        select(m.Box).where(m.Box.study_id == study_id, m.Box.source == "dataset",
                            m.Box.deleted_at.is_(None))
        .order_by(m.Box.slice_index, m.Box.id)
    ).all()
    return [
        (b.instance_number, Box(x=b.x, y=b.y, width=b.width, height=b.height,
                                    slice_index=b.slice_index, reader="dataset", level=b.level))
        for b in dataset
    ]


# --- exports ------------------------------------------------------------------------------------


def _workspace(settings: Settings | Workspace) -> Workspace:
    return settings if isinstance(settings, Workspace) else open_workspace(settings)


@dataclass(frozen=True)
class UndecidedStudy:
    """A study whose label of some C1–C7 levels waits for the committee (open disputes)."""

    study_uid: str
    levels: tuple[str, ...]


@dataclass(frozen=True)
class RsnaExport:
    """What :func:`export_rsna` wrote, and the undecided studies it left out or included."""

    paths: list[Path]
    undecided: tuple[UndecidedStudy, ...] = ()
    included_undecided: bool = False

    def note(self, most: int = 5) -> str:
        """What to tell the user about the undecided studies ('' when there were none)."""
        n = len(self.undecided)
        if not n:
            return ""
        named = ", ".join(f"{u.study_uid} ({' '.join(u.levels)})" for u in self.undecided[:most])
        more = f" and {n - most} more" if n > most else ""
        studies = "study" if n == 1 else "studies"
        if self.included_undecided:
            return (f"included {n} {studies} with undecided levels at their provisional label "
                    f"(the report's; the committee may still decide otherwise): {named}{more}")
        return (f"left out {n} {studies} with undecided levels (open disputes; exporting them "
                f"would write a label nobody decided): {named}{more}. Decide them on the "
                "Adjudication page, or export them with their provisional label: "
                "spine export rsna --include-undecided OUT")


def undecided_cervical_levels(session: Session, study_id: int) -> tuple[str, ...]:
    """The study's C1–C7 levels under an open reader/report dispute, head to feet."""
    from db.disputes import undecided_levels_of

    open_levels = undecided_levels_of(session, study_id)
    return tuple(level for level in CERVICAL if level in open_levels)


def export_rsna(settings: Settings | Workspace, out: Path, *,
                include_undecided: bool = False) -> RsnaExport:
    """train.csv and train_bounding_boxes.csv in RSNA's exact columns.

    A study with an undecided level is left out of both files, or, with ``include_undecided``,
    written with its provisional labels (``db.disputes.provisional_labels_of``: the report's label
    on undecided levels); either way it is listed in the result.
    """
    from db.disputes import provisional_labels_of

    ws = _workspace(settings)
    label_rows: list[list[object]] = []
    box_rows: list[list[object]] = []
    undecided: list[UndecidedStudy] = []
    with ws.sessions() as session:
        studies = session.scalars(select(m.Study).order_by(m.Study.study_uid)).all()
        for study in studies:
            pending = undecided_cervical_levels(session, study.id)
            if pending:
                undecided.append(UndecidedStudy(study.study_uid, pending))
                if not include_undecided:
                    continue
                labels = provisional_labels_of(session, study.id)
            else:
                labels = final_labels(session, study.id)
            if any(level in labels for level in CERVICAL):
                values = [int(bool(labels.get(level, False))) for level in CERVICAL]
                label_rows.append([study.study_uid, int(any(values)), *values])
            boxes = final_boxes(session, study.id, ws.settings.union_min_iou)
            for number, box in sorted(boxes, key=lambda nb: (nb[0], nb[1].x, nb[1].y)):
                box_rows.append([study.study_uid, format_number(box.x), format_number(box.y),
                                 format_number(box.width), format_number(box.height), number])
    paths = [
        write_csv(inside(out, "train.csv"), RSNA_LABEL_COLUMNS, label_rows),
        write_csv(inside(out, "train_bounding_boxes.csv"), RSNA_BOX_COLUMNS, box_rows),
    ]
    return RsnaExport(paths, tuple(undecided), include_undecided)


def export_readers(settings: Settings | Workspace, out: Path) -> list[Path]:
    """Every reader's boxes and level calls (admin export; readers are not blinded here).

    * ``readers_boxes.csv``: live boxes with ``fracture`` (the reader's own id of the fracture,
      empty for a box on its own) and ``key`` (1: a key box the reader drew, 0: interpolated
      between two key boxes of its fracture) — the columns ``spine import`` reads back;
    * ``readers_levels.csv``: the level calls;
    * ``readers_studies.csv``: per reader and study, the assignment status and the reading time
      (``opened_at`` and ``submitted_at`` in ISO 8601 UTC, ``active_s`` seconds of active reading);
    * ``readers_grades.csv``: the Genant grades, each with the mask's level and the reader's own
      name for it (the reader's renumbering applied);
    * ``readers_relabel.csv``: each reader's renumbering (mask level -> reader's level);
    * ``readers_film_vertebrae.csv``: each reader's vertebra boxes on radiographs with their
      label, Genant grade and reference mark (:mod:`db.film_export`).
    """
    from db.film_export import FILM_VERTEBRA_COLUMNS, film_vertebra_rows
    from db.reading_time import reading_time_rows

    ws = _workspace(settings)
    with ws.sessions() as session:
        box_rows = [
            [uid, b.instance_number, format_number(b.x), format_number(b.y),
             format_number(b.width), format_number(b.height), reader, b.level or "", b.note,
             b.fracture or "", int(bool(b.is_key))]
            for b, uid, reader in session.execute(
                select(m.Box, m.Study.study_uid, m.User.username)
                .join(m.Study, m.Study.id == m.Box.study_id)
                .join(m.User, m.User.id == m.Box.reader_id)
                .where(m.Box.deleted_at.is_(None), m.Box.source != "dataset")
                .order_by(m.Study.study_uid, m.User.username, m.Box.instance_number, m.Box.id)
            )
        ]
        level_rows = [
            [uid, reader, label.level, label.call]
            for label, uid, reader in session.execute(
                select(m.LevelLabel, m.Study.study_uid, m.User.username)
                .join(m.Study, m.Study.id == m.LevelLabel.study_id)
                .join(m.User, m.User.id == m.LevelLabel.reader_id)
                .order_by(m.Study.study_uid, m.User.username, m.LevelLabel.level)
            )
        ]
        study_rows = [
            [r.study_uid, r.reader, r.status, _iso(r.opened_at), _iso(r.submitted_at),
             format_number(r.active_s)]
            for r in reading_time_rows(session)
        ]
        grade_rows, relabel_rows = _reader_grade_rows(session)
        film_rows = film_vertebra_rows(session)
    return [
        write_csv(inside(out, "readers_boxes.csv"), READER_BOX_COLUMNS, box_rows),
        write_csv(inside(out, "readers_levels.csv"), READER_LEVEL_COLUMNS, level_rows),
        write_csv(inside(out, "readers_studies.csv"), READER_STUDY_COLUMNS, study_rows),
        write_csv(inside(out, "readers_grades.csv"), READER_GRADE_COLUMNS, grade_rows),
        write_csv(inside(out, "readers_relabel.csv"), READER_RELABEL_COLUMNS, relabel_rows),
        write_csv(inside(out, "readers_film_vertebrae.csv"), FILM_VERTEBRA_COLUMNS, film_rows),
    ]


def _reader_grade_rows(session: Session) -> tuple[list[list[object]], list[list[object]]]:
    """Rows of readers_grades.csv and readers_relabel.csv (readers' work only, not the
    dataset's), head to feet."""
    from spine_core.adjudication import craniocaudal_key
    from spine_core.relabel import relabel_name

    relabels: dict[tuple[int, int], m.ReaderRelabel] = {
        (r.study_id, r.reader_id): r for r in session.scalars(select(m.ReaderRelabel))}
    grades = session.execute(
        select(m.LevelGrade, m.Study.study_uid, m.User.username)
        .join(m.Study, m.Study.id == m.LevelGrade.study_id)
        .join(m.User, m.User.id == m.LevelGrade.reader_id)
        .where(m.User.username != "dataset")).all()
    grade_rows: list[list[object]] = []
    for g, uid, reader in sorted(grades, key=lambda row: (row[1], row[2],
                                                          craniocaudal_key(row[0].level))):
        relabel = relabels.get((g.study_id, g.reader_id))
        mapping = dict(relabel.mapping or {}) if relabel is not None else {}
        grade_rows.append([uid, reader, g.level, relabel_name(g.level, mapping), g.grade,
                           g.morphology or ""])
    relabel_rows: list[list[object]] = []
    names: dict[int, str] = {i: n for i, n in session.execute(select(m.User.id, m.User.username))}
    uids: dict[int, str] = {i: u for i, u in session.execute(select(m.Study.id, m.Study.study_uid))}
    for (study_id, reader_id), r in sorted(relabels.items(), key=lambda kv: (
            uids.get(kv[0][0], ""), names.get(kv[0][1], ""))):
        for level, theirs in sorted((r.mapping or {}).items(), key=lambda kv: craniocaudal_key(kv[0])):
            relabel_rows.append([uids.get(study_id, ""), names.get(reader_id, ""), level, theirs,
                                 (r.rule or {}).get("at", ""), (r.rule or {}).get("says", "")])
    return grade_rows, relabel_rows


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def export_decisions(settings: Settings | Workspace, out: Path) -> list[Path]:
    """One row per decision (and per open dispute), with the votes cast; a grade dispute's
    decision reads ``grade_2_wedge`` (or ``cannot_tell``), as its votes do."""
    from spine_core.adjudication import GRADE_KINDS, grade_choice

    grade_kinds = {k.value for k in GRADE_KINDS}
    ws = _workspace(settings)
    header = ("StudyInstanceUID", "level", "kind", "status", "round", "decision", "policy",
              "reason", "decided_by", "decided_at", "votes")
    rows: list[list[object]] = []
    with ws.sessions() as session:
        disputes = session.execute(
            select(m.Dispute, m.Study.study_uid).join(m.Study, m.Study.id == m.Dispute.study_id)
            .order_by(m.Study.study_uid, m.Dispute.level, m.Dispute.kind)
        ).all()
        for dispute, uid in disputes:
            votes = session.execute(
                select(m.Vote, m.User.username).join(m.User, m.User.id == m.Vote.voter_id)
                .where(m.Vote.dispute_id == dispute.id).order_by(m.Vote.round, m.Vote.id)
            ).all()
            vote_text = "; ".join(f"r{v.round} {name}: {v.choice}" for v, name in votes)
            decisions = session.scalars(
                select(m.Decision).where(m.Decision.dispute_id == dispute.id).order_by(m.Decision.id)
            ).all()
            if not decisions:
                rows.append([uid, dispute.level, dispute.kind, dispute.status, dispute.round,
                             "", "", "", "", "", vote_text])
            for d in decisions:
                outcome = "cannot_tell" if d.fractured is None else ("fractured" if d.fractured else "not_fractured")
                if dispute.kind in grade_kinds:  # a grade decision: grade_2_wedge, cannot_tell
                    outcome = grade_choice(d.grade, d.morphology)
                rows.append([uid, dispute.level, dispute.kind,
                             "superseded" if d.superseded else dispute.status, d.round, outcome,
                             d.policy, d.reason, d.decided_by, d.decided_at.isoformat(), vote_text])
    return [write_csv(inside(out, "decisions.csv"), header, rows)]


def _study(session: Session, study_uid: str) -> m.Study:
    study = session.scalars(select(m.Study).where(m.Study.study_uid == study_uid)).first()
    if study is None:
        raise NotFound(f"no study with StudyInstanceUID {study_uid}; `spine info` lists what is imported")
    return study


def export_nifti(settings: Settings | Workspace, study_uid: str, out: Path) -> list[Path]:
    """image.nii.gz and mask.nii.gz (canonical level ids) of one study, on the image's grid."""
    import nibabel as nib
    import numpy as np

    from db.studies import open_image, open_mask

    ws = _workspace(settings)
    with ws.sessions() as session:
        study = _study(session, study_uid)
        series = session.scalars(
            select(m.Series).where(m.Series.study_id == study.id).order_by(m.Series.id)
        ).first()
        if series is None:
            raise NotFound(f"study {study_uid} has no image series; re-import it")
        image_path = inside(out, f"{study.study_uid}_image.nii.gz", what="StudyInstanceUID")
        mask_path = inside(out, f"{study.study_uid}_mask.nii.gz", what="StudyInstanceUID")
        image = open_image(ws, series)
        mask = open_mask(ws, series, image)
    output_folder(out)
    paths: list[Path] = []
    data, affine = image.to_nifti_arrays()
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    paths.append(_save_nifti(img, image_path))
    if mask is not None:
        mdata, maffine = image.with_array(mask.array).to_nifti_arrays()
        mimg = nib.Nifti1Image(np.asarray(mdata, dtype=np.uint8), maffine)
        mimg.set_qform(maffine, code=1)
        mimg.set_sform(maffine, code=1)
        paths.append(_save_nifti(mimg, mask_path))
    return paths


def _save_nifti(img: object, path: Path) -> Path:
    import nibabel as nib

    tmp = path.with_name(f".tmp.{path.name}")
    nib.save(img, tmp)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


def export_coco(settings: Settings | Workspace, out: Path) -> list[Path]:
    """COCO detection JSON + bone-window PNGs of every axial slice carrying a final box; films
    (radiographs) go to ``film_annotations.json`` with per-vertebra categories and masks
    (:func:`db.film_export.export_film_coco`)."""
    from PIL import Image

    from db.film_export import export_film_coco, film_studies
    from db.studies import open_image
    from spine_core.render import apply_window

    ws = _workspace(settings)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    films = export_film_coco(ws, out)
    with ws.sessions() as session:
        film_ids = {s.id for s in film_studies(session)}
        for study in session.scalars(select(m.Study).order_by(m.Study.study_uid)):
            if study.id in film_ids:
                continue
            boxes = final_boxes(session, study.id, ws.settings.union_min_iou)
            if not boxes:
                continue
            series = session.scalars(
                select(m.Series).where(m.Series.study_id == study.id).order_by(m.Series.id)
            ).first()
            if series is None:
                continue
            folder = inside(out, "images", study.study_uid, what="StudyInstanceUID")
            volume = open_image(ws, series)
            by_slice: dict[int, list[Box | UnionBox]] = defaultdict(list)
            numbers: dict[int, int] = {}
            for number, box in boxes:
                by_slice[box.slice_index].append(box)
                numbers[box.slice_index] = number
            for slice_index in sorted(by_slice):
                name = f"{study.study_uid}/{numbers[slice_index]}.png"
                target = inside(output_folder(folder), f"{numbers[slice_index]}.png")
                Image.fromarray(apply_window(volume.array[slice_index], 1800, 400)).save(target)
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": f"images/{name}",
                               "height": volume.shape[1], "width": volume.shape[2],
                               "study_uid": study.study_uid, "slice_number": numbers[slice_index]})
                for box in by_slice[slice_index]:
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                        "bbox": [box.x, box.y, box.width, box.height],
                        "area": box.width * box.height, "iscrowd": 0,
                        "attributes": {"level": box.level},
                    })
    if not images and films.paths:
        return films.paths
    if not images:
        raise InputError("no study has fracture boxes yet, so there is nothing to export to COCO")
    doc = {
        "info": {"description": "SpineReview axial fracture boxes (RSNA union rule)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "fracture", "supercategory": "spine"}],
    }
    path = inside(output_folder(out), "annotations.json")
    _atomic_write(path, json.dumps(doc, indent=1).encode())
    return [path, *films.paths]
