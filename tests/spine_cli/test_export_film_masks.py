"""`spine export film-masks` as a user runs it: a real process on a real imported film whose two
readers agree on four vertebrae writes one PNG label map and the ids' names; with no film read
yet it is one line and exit status 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from db import annotations as ann
from db import box_events as be
from db import film_reading as fr
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import open_workspace
from spine_core.config import Settings
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.xray_layout import write_xray_dataset
from tests.annotation_helpers import add_user
from tests.spine_cli.test_main import run_spine


def test_film_masks_of_nothing_read_is_one_line(tmp_path: Path) -> None:
    result = run_spine("export", "film-masks", str(tmp_path / "out"), data_dir=tmp_path / "var")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no radiograph has a final truth yet" in lines[0]


def test_film_masks_of_two_agreeing_readers(tmp_path: Path) -> None:
    truth = write_xray_dataset(tmp_path / "xr", region="cervical", n_studies=1, seed=5,
                               phantom_shape=(160, 96, 96))
    ws = open_workspace(Settings(data_dir=tmp_path / "var", workers=1))
    assert import_path(tmp_path / "xr", ws, progress=False).ok
    with truth.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:4]
    with unit_of_work(ws.sessions) as s:
        admin = add_user(s, "admin", "admin")
        readers = [add_user(s, f"reader{i}", "annotator") for i in (1, 2)]
        ann.assign(s, admin, 1, [r.id for r in readers])
    for name in ("reader1", "reader2"):
        with unit_of_work(ws.sessions) as s:
            me = s.scalars(select(m.User).where(m.User.username == name)).one()
            for row in rows:
                x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
                be.create_box(s, me, 1, ann.BoxInput(0, x, y, w, h))
            for box, row in zip(fr.film_boxes(s, me, 1), rows, strict=True):
                fr.save_film_label(s, me, box.id, box.version, row["level"], None, False)
            ann.submit(s, me, 1)
    result = run_spine("export", "film-masks", str(tmp_path / "out"), data_dir=tmp_path / "var")
    assert result.returncode == 0, result.stderr
    png, levels = (Path(line) for line in result.stdout.split())
    labels = np.asarray(Image.open(png))
    assert set(np.unique(labels)) == {0, *(LEVEL_IDS[r["level"]] for r in rows)}
    for row in rows:  # no mask on the film: the final box is the vertebra's region
        ys, xs = np.nonzero(labels == LEVEL_IDS[row["level"]])
        assert abs(xs.min() - float(row["x"])) <= 1 and abs(ys.min() - float(row["y"])) <= 1
    assert levels.name == "film_masks_levels.csv" and "S1" in levels.read_text()
