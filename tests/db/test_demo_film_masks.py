"""The synthetic films' projected vertebra masks come in as each film's label mask when
`spine demo --modality xray` folders are imported (SQLite and PostgreSQL): one dataset mask per
film with the truth's levels, mapped onto the film pixel for pixel, opened like a CT's mask."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db import models as m
from db.importer import import_path
from db.studies import open_image, open_mask
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.labels import LEVEL_IDS
from spine_core.phantom.xray_layout import write_xray_dataset


@pytest.mark.parametrize(("region", "shape"), [("lumbar", (200, 96, 96)),
                                               ("cervical", (240, 96, 96))])
def test_demo_films_import_with_their_vertebra_masks(migrated_db_url: str, tmp_path: Path,
                                                     region: str, shape: tuple[int, int, int]
                                                     ) -> None:
    root = tmp_path / "xr"
    truth = write_xray_dataset(root, region=region, n_studies=2, seed=5, phantom_shape=shape)
    with truth.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ws = Workspace(Settings(data_dir=tmp_path / "var", db_url=migrated_db_url, workers=1))
    report = import_path(root, ws, progress=False)
    assert report.ok and report.studies_added == 2 and report.masks_added == 2, report.problems
    with ws.sessions() as session:
        for series in session.scalars(select(m.Series)):
            uid = series.study.study_uid
            (mask,) = series.masks
            levels = [r["level"] for r in rows if r["StudyInstanceUID"] == uid]
            assert (mask.source, mask.vocabulary, mask.levels) == ("dataset", "canonical", levels)
            assert series.study.has_mask
            image = open_image(ws, series)
            labels = open_mask(ws, series, image, mask)
            assert labels is not None and labels.shape == image.shape
            film = np.asarray(Image.open(root / "masks" / f"{uid}.png"))
            assert np.array_equal(np.asarray(labels.array)[0], film)
            assert sorted(np.unique(film)[1:]) == sorted(LEVEL_IDS[v] for v in levels)
    again = import_path(root, ws, progress=False)
    assert again.studies_unchanged == 2 and again.masks_added == 0
