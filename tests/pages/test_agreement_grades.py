"""The Agreement page's Genant tab through AppTest, on a real SQLite workspace: a VerSe demo
imported with the dataset's grades, one reader's grades, and the weighted kappa between them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db import annotations as ann
from db import grades
from db import models as m
from db.importer import import_path
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.phantom.demo import write_demo_dataset
from tests.app_helpers import app, demo_workspace, pages_on, signed_in, texts


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    workspace = demo_workspace(tmp_path / "var")
    write_demo_dataset(tmp_path / "verse", region="thoracolumbar", layout="verse", n_studies=1,
                       seed=3, shape=(96, 48, 48), workers=1)
    report = import_path(tmp_path / "verse", workspace.settings, actor="test", progress=False)
    assert report.studies_added == 1 and not report.problems
    with unit_of_work(workspace.sessions) as s:
        study = s.scalars(select(m.Study)).one()
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        reader = s.scalars(select(m.User).where(m.User.username == "reader1")).one()
        ann.assign(s, admin, study.id, [reader.id])
        owner = s.scalars(select(m.User).where(m.User.username == "dataset")).one()
        for level, g in grades.grades_of(s, owner, study.id).items():
            # reader1 agrees with the dataset everywhere except one grade more on the first level
            bump = 1 if level == sorted(grades.grades_of(s, owner, study.id))[0] else 0
            value = min(3, g.grade + bump)
            grades.set_grade(s, reader, study.id, level, value, "wedge" if value else None)
    with pages_on(workspace, monkeypatch) as w:
        yield w


def _quadratic_kappa(ws: Workspace) -> float:
    """Cohen's quadratic-weighted kappa of reader1's and the dataset's grades, from the rows."""
    with unit_of_work(ws.sessions, readonly=True) as s:
        study = s.scalars(select(m.Study)).one()
        a, b = (grades.grades_of(s, s.scalars(select(m.User).where(m.User.username == name)).one(),
                                 study.id) for name in ("dataset", "reader1"))
        pairs = [(a[lvl].grade, b[lvl].grade) for lvl in a if lvl in b]
    observed = np.zeros((4, 4))
    for x, y in pairs:
        observed[x, y] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.subtract.outer(np.arange(4), np.arange(4)) ** 2
    return float(1 - (weights * observed).sum() / (weights * expected).sum())


def test_the_committee_sees_the_weighted_kappa_of_the_readers_grades(ws: Workspace) -> None:
    at = app(signed_in(ws, "adjudicator1"), script="pages/agreement.py").run()
    assert not at.exception, at.exception
    assert "Genant grades: agreement between readers" in texts(at, "subheader")
    pairs = next(d for d in at.dataframe if "kappa (quadratic)" in d.value.columns).value
    row = pairs.iloc[0]
    assert {row["reader A"], row["reader B"]} == {"dataset", "reader1"}
    assert row["vertebrae"] >= 5
    assert row["kappa (quadratic)"] == f"{_quadratic_kappa(ws):.2f}" != "undefined"
    confusion = next(d for d in at.dataframe if "reader1 0" in list(d.value.columns)
                     or "dataset 0" in list(d.value.columns)).value
    assert int(confusion.values.sum()) == row["vertebrae"]
    # readers never see it
    reader = app(signed_in(ws, "reader1"), script="pages/agreement.py").run()
    assert not reader.dataframe
