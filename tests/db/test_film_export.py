"""Exports of films' vertebra boxes, SQLite and PostgreSQL, on a real imported synthetic lumbar
DX film: the readers' CSV carries label, grade and reference; COCO has per-vertebra categories
(run-length vertebra masks from the demo film's imported mask, box polygons without one); the final truth as a PNG
label map. A film whose labelling is disputed is left out until the committee chooses; then the
chosen labelling is the truth. Every file is read back and compared with what was stored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, select

from db import annotations as ann
from db import box_events as be
from db import disputes
from db import film_disputes as fd
from db import film_reading as fr
from db import models as m
from db.exporter import export_coco, export_readers
from db.film_export import export_film_masks
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.errors import InputError
from spine_core.film_truth import rle_decode
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.xray_layout import write_xray_dataset
from tests.annotation_helpers import add_user


def _user(session: object, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()  # type: ignore[attr-defined]


@pytest.fixture
def film(migrated_db_url: str, tmp_path: Path) -> tuple[Workspace, Path, list[list[str]]]:
    root = tmp_path / "xr"
    truth = write_xray_dataset(root, region="lumbar", n_studies=1, seed=9,
                               phantom_shape=(200, 96, 96))
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    assert import_path(root, ws, progress=False).ok
    with unit_of_work(ws.sessions) as s:
        for name, role in (("admin", "admin"), ("adjudicator", "adjudicator"),
                           ("reader1", "annotator"), ("reader2", "annotator")):
            add_user(s, name, role)
        ann.assign(s, _user(s, "admin"), 1, [_user(s, "reader1").id, _user(s, "reader2").id])
    with truth.open(newline="") as fh:
        rows = [r for r in csv.reader(fh)][1:]
    return ws, root, rows[-4:]  # the four lowest vertebrae (down to S)


def _read(ws: Workspace, rows: list[list[str]], labels: dict[str, list[str]]) -> None:
    """Each reader boxes the truth's vertebrae (reader2 3 px lower) and labels them."""
    for reader, names in labels.items():
        dy = 3.0 if reader == "reader2" else 0.0
        with unit_of_work(ws.sessions) as s:
            me = _user(s, reader)
            for row in rows:
                x, y, w, h = (float(v) for v in row[2:6])
                be.create_box(s, me, 1, ann.BoxInput(0, x, y + dy, w, h))
            for box, name in zip(fr.film_boxes(s, me, 1), names, strict=True):
                fr.save_film_label(s, me, box.id, box.version, name, 2 if name == "L4" else None,
                                   name == "S")
            ann.submit(s, me, 1)


def test_film_exports_round_trip(film: tuple[Workspace, Path, list[list[str]]],
                                 tmp_path: Path) -> None:
    ws, root, rows = film
    truth_levels = [r[1] for r in rows]
    assert truth_levels[-1] == "S"
    shifted = {"L2": "L1", "L3": "L2", "L4": "L3", "L5": "L4", "S": "L5"}
    _read(ws, rows, {"reader1": truth_levels, "reader2": [shifted[v] for v in truth_levels]})

    # readers' CSV: label (S1), grade, reference, as stored
    export_readers(ws, tmp_path / "readers")
    with (tmp_path / "readers" / "readers_film_vertebrae.csv").open(newline="") as fh:
        got = list(csv.DictReader(fh))
    with unit_of_work(ws.sessions, readonly=True) as s:
        stored = fr.film_boxes(s, _user(s, "admin"), 1)
    assert len(got) == len(stored) == 8
    by_id = {(b.reader, round(b.x, 4), round(b.y, 4)): b for b in stored}
    for row in got:
        box = by_id[(row["reader"], float(row["x"]), float(row["y"]))]
        assert row["level"] == ("S1" if box.level == "S" else box.level)
        assert row["grade"] == ("" if box.grade is None else str(box.grade))
        assert row["reference"] == str(int(box.is_reference))
    assert [(r["reader"], r["level"]) for r in got if r["reference"] == "1"] == [("reader1", "S1")]

    # the labelling is disputed: no final truth, the film is left out
    with unit_of_work(ws.sessions) as s:
        result = disputes.refresh_disputes(s, 1, ws.settings, actor="test")
        assert len(result.opened) == 1
        dispute_id = result.opened[0]
    with pytest.raises(InputError):
        export_coco(ws, tmp_path / "early")
    early = export_film_masks(ws, tmp_path / "early-masks")
    assert early.paths == [] and "disputed" in early.skipped[0]

    with unit_of_work(ws.sessions) as s:
        fd.decide_labelling(s, _user(s, "adjudicator"), dispute_id, "reader1", "S1 by the sacrum")

    # the demo film came in with its projected vertebra mask: run-length masks in COCO
    labels = np.asarray(Image.open(next(root.glob("masks/*.png"))))
    (path,) = export_coco(ws, tmp_path / "coco-masks")
    doc = json.loads(path.read_text())
    assert path.name == "film_annotations.json"
    assert {c["name"] for c in doc["categories"]} >= {"C2", "T13", "L6", "S1"}
    (image,) = doc["images"]
    assert image["labelling"] == "reader1"
    png = np.asarray(Image.open(path.parent / image["file_name"]))
    assert png.shape == (image["height"], image["width"])
    assert sorted(a["category_id"] for a in doc["annotations"]) == sorted(
        LEVEL_IDS[v] for v in truth_levels)
    for a in doc["annotations"]:
        assert a["attributes"]["readers"] == ["reader1", "reader2"]
        decoded = rle_decode(a["segmentation"])
        x, y, w, h = a["bbox"]
        region = np.zeros(labels.shape, dtype=bool)
        region[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
        assert np.array_equal(decoded, (labels == a["category_id"]) & region)
        assert a["area"] == decoded.sum() > 0

    # the final truth as a PNG label map: each vertebra's mask pixels, labelled as reader1 does
    paths = export_film_masks(ws, tmp_path / "masks").paths
    assert [p.name for p in paths][-1] == "film_masks_levels.csv"
    truth_png = np.asarray(Image.open(paths[0]))
    assert truth_png.shape == labels.shape and truth_png.dtype == np.uint8
    assert set(np.unique(truth_png)) == {0, *(LEVEL_IDS[v] for v in truth_levels)}
    for level in truth_levels:
        lid = LEVEL_IDS[level]
        assert (truth_png == lid).sum() <= (labels == lid).sum()
        assert (truth_png == lid).sum() > 0.9 * (labels == lid).sum()

    # a film without a mask: the boxes as polygons
    with unit_of_work(ws.sessions) as s:
        s.execute(delete(m.Mask))
    (path,) = export_coco(ws, tmp_path / "coco")
    doc = json.loads(path.read_text())
    assert len(doc["annotations"]) == len(truth_levels)
    for a in doc["annotations"]:
        assert isinstance(a["segmentation"], list) and len(a["segmentation"][0]) == 8
