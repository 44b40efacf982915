"""Exports of radiographs' vertebra boxes (called by :mod:`db.exporter`).

* ``readers_film_vertebrae.csv`` (in ``spine export readers``): every reader's vertebra box of
  every film with its label (S1 for the sacrum), Genant grade (empty: not graded) and reference
  mark (1: the vertebra the reader counted from);
* ``film_annotations.json`` (in ``spine export coco``): each film with a final truth as a PNG
  (the file's window) and one COCO annotation per final vertebra box, its category the vertebra
  (category id = the canonical level id), with the vertebra's run-length mask where the film has a
  mask, else the box as a polygon;
* ``spine export film-masks``: each film's final truth as a PNG label map (canonical level ids,
  0 background; ``film_masks_levels.csv`` names them).

The final truth of a film is the union per label of its submitted readers' boxes, relabelled to
the labelling the committee chose (:mod:`spine_core.film_truth`); a film whose labelling dispute
is still open has no final truth yet and is left out, named in the result's ``skipped``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.film_disputes import LABELLING, labelling_in_force
from db.film_reading import is_film_study, submitted_film_boxes
from db.workspace import Workspace
from spine_core.consensus import UnionBox
from spine_core.film_labels import FILM_LEVELS, shown_level
from spine_core.film_truth import final_film_boxes, rle_encode, truth_map
from spine_core.io.safe_paths import inside, output_folder
from spine_core.labels import LEVEL_IDS

FILM_VERTEBRA_COLUMNS = ("StudyInstanceUID", "reader", "x", "y", "width", "height", "level",
                         "grade", "reference")
LEVEL_COLUMNS = ("id", "level")


def film_studies(session: Session) -> list[m.Study]:
    """Studies whose image is a radiograph, by StudyInstanceUID."""
    return [s for s in session.scalars(select(m.Study).order_by(m.Study.study_uid))
            if is_film_study(session, s.id)]


def film_vertebra_rows(session: Session) -> list[list[object]]:
    """Rows of ``readers_film_vertebrae.csv`` (readers are not blinded here: admin export)."""
    from db.exporter import format_number

    rows: list[list[object]] = []
    for study in film_studies(session):
        for box, reader in session.execute(
                select(m.Box, m.User.username).join(m.User, m.User.id == m.Box.reader_id)
                .where(m.Box.study_id == study.id, m.Box.deleted_at.is_(None),
                       m.Box.source != "dataset")
                .order_by(m.User.username, m.Box.y, m.Box.id)):
            rows.append([study.study_uid, reader, format_number(box.x), format_number(box.y),
                         format_number(box.width), format_number(box.height),
                         shown_level(box.level) if box.level else "",
                         "" if box.grade is None else int(box.grade), int(bool(box.is_reference))])
    return rows


@dataclass(frozen=True)
class FilmTruth:
    """One film's final vertebra boxes, and whose labelling was chosen (None: readers agreed)."""

    study: m.Study
    boxes: list[tuple[str, UnionBox]]
    labelling: str | None


def film_truth(session: Session, study: m.Study, min_iou: float = 0.0) -> FilmTruth | None:
    """The film's final truth; None while its labelling dispute is open or nobody submitted."""
    open_dispute = session.scalar(select(m.Dispute.id).where(
        m.Dispute.study_id == study.id, m.Dispute.kind == LABELLING, m.Dispute.status == "open"))
    by_reader = submitted_film_boxes(session, study.id)
    if open_dispute is not None or not by_reader:
        return None
    chosen = labelling_in_force(session, study.id)
    return FilmTruth(study, final_film_boxes(by_reader, chosen, min_iou=min_iou), chosen)


@dataclass
class FilmExport:
    """What a film export wrote, and the films it left out (with why)."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _truths(ws: Workspace, session: Session) -> tuple[list[FilmTruth], list[str]]:
    truths: list[FilmTruth] = []
    skipped: list[str] = []
    for study in film_studies(session):
        truth = film_truth(session, study, float(ws.settings.union_min_iou))
        if truth is None:
            if submitted_film_boxes(session, study.id):
                skipped.append(f"{study.study_uid}: its vertebra labelling is still disputed")
            continue
        truths.append(truth)
    return truths, skipped


def _images(ws: Workspace, study: m.Study) -> tuple[Any, np.ndarray | None]:
    """The film's image volume and its vertebra mask (None without one)."""
    from db.annotations import primary_series
    from db.studies import open_image, open_mask
    from spine_core.errors import MaskError

    with ws.sessions() as session:
        series = primary_series(session, study.id)
        image = open_image(ws, series)
        try:
            mask = open_mask(ws, series, image)
        except MaskError:
            mask = None
    return image, (np.asarray(mask.array[0]) if mask is not None else None)


def export_film_coco(ws: Workspace, out: Path) -> FilmExport:
    """``film_annotations.json`` and ``images/<uid>/film.png`` of every film with a final truth."""
    from PIL import Image

    from spine_core.io.radiograph import display_window
    from spine_core.render import apply_window

    result = FilmExport()
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    with ws.sessions() as session:
        truths, result.skipped = _truths(ws, session)
    for truth in truths:
        uid = truth.study.study_uid
        image, mask = _images(ws, truth.study)
        pixels = np.asarray(image.array[0])
        width, level = display_window(image) or (float(np.ptp(pixels)) or 1.0, float(pixels.mean()))
        target = inside(output_folder(inside(out, "images", uid, what="StudyInstanceUID")), "film.png")
        Image.fromarray(apply_window(pixels, width, level)).save(target)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": f"images/{uid}/film.png",
                       "height": int(pixels.shape[0]), "width": int(pixels.shape[1]),
                       "study_uid": uid, "labelling": truth.labelling})
        labels = truth_map(pixels.shape, truth.boxes, mask) if mask is not None else None
        for label, box in truth.boxes:
            annotations.append(_annotation(len(annotations) + 1, image_id, label, box, labels))
    if not images:
        return result
    doc = {
        "info": {"description": "SpineReview vertebrae on radiographs (union per label)"},
        "images": images, "annotations": annotations,
        "categories": [{"id": LEVEL_IDS[lvl], "name": shown_level(lvl), "supercategory": "vertebra"}
                       for lvl in FILM_LEVELS],
    }
    from db.exporter import _atomic_write

    path = inside(output_folder(out), "film_annotations.json")
    _atomic_write(path, json.dumps(doc, indent=1).encode())
    result.paths.append(path)
    return result


def _annotation(ann_id: int, image_id: int, label: str, box: UnionBox,
                labels: np.ndarray | None) -> dict[str, object]:
    x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
    segmentation: object = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    area = box.width * box.height
    if labels is not None:
        inside_box = np.zeros(labels.shape, dtype=bool)
        inside_box[max(int(np.floor(y0)), 0):int(np.ceil(y1)),
                   max(int(np.floor(x0)), 0):int(np.ceil(x1))] = True
        vertebra = (labels == LEVEL_IDS[label]) & inside_box
        if vertebra.any():
            segmentation, area = rle_encode(vertebra), float(vertebra.sum())
    return {"id": ann_id, "image_id": image_id, "category_id": LEVEL_IDS[label],
            "bbox": [box.x, box.y, box.width, box.height], "area": area, "iscrowd": 0,
            "segmentation": segmentation, "attributes": {"readers": list(box.readers)}}


def export_film_masks(ws: Workspace, out: Path) -> FilmExport:
    """``<uid>_truth.png`` per film with a final truth (canonical ids) and the ids' names."""
    from PIL import Image

    from db.exporter import write_csv

    result = FilmExport()
    with ws.sessions() as session:
        truths, result.skipped = _truths(ws, session)
    for truth in truths:
        image, mask = _images(ws, truth.study)
        labels = truth_map(tuple(image.array.shape[1:]), truth.boxes, mask)
        target = inside(output_folder(out), f"{truth.study.study_uid}_truth.png",
                        what="StudyInstanceUID")
        Image.fromarray(labels).save(target)
        result.paths.append(target)
    if result.paths:
        result.paths.append(write_csv(inside(out, "film_masks_levels.csv"), LEVEL_COLUMNS,
                                      [[LEVEL_IDS[lvl], shown_level(lvl)] for lvl in FILM_LEVELS]))
    return result
