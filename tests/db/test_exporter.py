"""Readers' boxes in the database -> exports, on SQLite and PostgreSQL: ``export_rsna`` writes
the union of the readers' boxes (Settings.union_min_iou) in RSNA's exact columns, ``export_readers``
every reader's live boxes and calls, ``export_coco`` COCO JSON with the slices as PNG."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db import annotations as ann
from db import box_events
from db import models as m
from db.exporter import export_coco, export_readers, export_rsna
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.annotation_helpers import add_user, user

SHAPE = (48, 96, 96)

# Boxes of three readers (slice index, x, y, width, height, level). On slice 20, reader1's and
# reader2's boxes overlap (intersection 4×4 = 16, union area 48 + 48 - 16 = 80, IoU 0.2) and
# merge into (10, 10, 12, 8) when any overlap counts; reader3's box on slice 21 stays alone.
BOXES = {
    "reader1": [(20, 10.0, 10.0, 8.0, 6.0, "C5")],
    "reader2": [(20, 14.0, 12.0, 8.0, 6.0, "C5")],
    "reader3": [(21, 30.0, 30.0, 5.0, 5.0, "C6")],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic study in the RSNA layout (real DICOM, mask, CSVs), without readers."""
    root = tmp_path_factory.mktemp("rsna-one") / "data"
    write_rsna_dataset(root, n_studies=1, seed=11, shape=SHAPE, workers=1, n_readers=0)
    return root


@pytest.fixture
def drawn(dataset: Path, migrated_db_url: str, tmp_path: Path) -> tuple[Workspace, str, list[int]]:
    """The study imported, assigned to three readers who drew :data:`BOXES` through the store
    (plus one box reader1 deleted again); returns the workspace, StudyInstanceUID and the series'
    instance numbers."""
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    report = import_path(dataset, ws, actor="test", progress=False)
    assert report.ok, report.problems
    with unit_of_work(ws.sessions) as s:
        admin = add_user(s, "admin", "admin")
        readers = [add_user(s, name, "annotator") for name in BOXES]
        study = s.scalars(select(m.Study)).one()
        ann.assign(s, admin, study.id, [r.id for r in readers])
        uid, study_id = study.study_uid, study.id
        numbers = [int(n) for n in ann.primary_series(s, study.id).instance_numbers]
    for name, boxes in BOXES.items():
        for k, x, y, w, h, level in boxes:
            with unit_of_work(ws.sessions) as s:
                reader = s.scalars(select(m.User).where(m.User.username == name)).one()
                box_events.save_box(s, reader, study_id, ann.BoxInput(k, x, y, w, h, level=level, note="n"))
    with unit_of_work(ws.sessions) as s:
        reader1 = s.scalars(select(m.User).where(m.User.username == "reader1")).one()
        gone = box_events.save_box(s, reader1, study_id, ann.BoxInput(30, 1, 1, 9, 9, level="C7"))
    with unit_of_work(ws.sessions) as s:
        box_events.delete_saved_box(s, user(s, reader1.id), gone.id)
    return ws, uid, numbers


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_rsna_writes_the_union_of_readers_boxes(drawn, tmp_path: Path) -> None:
    ws, uid, numbers = drawn
    paths = export_rsna(ws, tmp_path / "out").paths
    boxes_csv = tmp_path / "out" / "train_bounding_boxes.csv"
    assert boxes_csv in paths
    lines = boxes_csv.read_text().splitlines()
    assert lines[0] == "StudyInstanceUID,x,y,width,height,slice_number"
    # the readers' union replaces the dataset's own reference boxes of the study
    assert lines[1:] == [
        f"{uid},10.0,10.0,12.0,8.0,{numbers[20]}",
        f"{uid},30.0,30.0,5.0,5.0,{numbers[21]}",
    ]
    labels = rows(tmp_path / "out" / "train.csv")
    assert list(labels[0]) == ["StudyInstanceUID", "patient_overall", *(f"C{i}" for i in range(1, 8))]
    assert labels[0]["StudyInstanceUID"] == uid


def test_union_min_iou_setting_reaches_the_export(drawn, tmp_path: Path) -> None:
    ws, uid, numbers = drawn
    strict = Workspace(dataclasses.replace(ws.settings, union_min_iou=0.5))
    export_rsna(strict, tmp_path / "strict")
    got = (tmp_path / "strict" / "train_bounding_boxes.csv").read_text().splitlines()[1:]
    assert got == [  # IoU 0.2 < 0.5: the two boxes stay apart
        f"{uid},10.0,10.0,8.0,6.0,{numbers[20]}",
        f"{uid},14.0,12.0,8.0,6.0,{numbers[20]}",
        f"{uid},30.0,30.0,5.0,5.0,{numbers[21]}",
    ]


def test_export_readers_writes_every_readers_live_boxes_and_calls(drawn, tmp_path: Path) -> None:
    ws, uid, numbers = drawn
    export_readers(ws, tmp_path / "readers")
    boxes = rows(tmp_path / "readers" / "readers_boxes.csv")
    got = sorted((b["reader"], int(b["slice_number"]), float(b["x"]), float(b["y"]),
                  float(b["width"]), float(b["height"]), b["level"]) for b in boxes)
    expected = sorted((name, numbers[k], x, y, w, h, level)
                      for name, bs in BOXES.items() for k, x, y, w, h, level in bs)
    assert got == expected  # reader1's deleted box is not exported
    assert {b["StudyInstanceUID"] for b in boxes} == {uid}
    calls = sorted((c["reader"], c["level"], c["call"])
                   for c in rows(tmp_path / "readers" / "readers_levels.csv"))
    assert calls == [("reader1", "C5", "fractured"), ("reader1", "C7", "fractured"),
                     ("reader2", "C5", "fractured"), ("reader3", "C6", "fractured")]


def test_export_coco_writes_union_boxes_and_slice_images(drawn, tmp_path: Path) -> None:
    ws, uid, numbers = drawn
    (path,) = export_coco(ws, tmp_path / "coco")
    doc = json.loads(path.read_text())
    assert [c["name"] for c in doc["categories"]] == ["fracture"]
    images = {i["id"]: i for i in doc["images"]}
    assert sorted(i["slice_number"] for i in images.values()) == [numbers[20], numbers[21]]
    got = sorted((images[a["image_id"]]["slice_number"], tuple(a["bbox"]), a["area"],
                  a["attributes"]["level"]) for a in doc["annotations"])
    assert got == [(numbers[20], (10.0, 10.0, 12.0, 8.0), 96.0, "C5"),
                   (numbers[21], (30.0, 30.0, 5.0, 5.0), 25.0, "C6")]
    for image in images.values():
        png = np.asarray(Image.open(tmp_path / "coco" / image["file_name"]))
        assert png.shape == (image["height"], image["width"]) == SHAPE[1:]
        assert png.dtype == np.uint8 and png.max() > png.min()  # a real windowed slice
