"""Genant grading in Chromium: a whole-spine VerSe study is read with grades, not fracture calls;
reader1 grades two levels, reader2 grades one of them two grades lower, and the database holds
both readers' grades and the dataset's own, with the grade agreement a committee sees."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.browser.conftest import ROOT, app_db, open_page, settle, sign_in
from tests.browser.test_annotation_e2e import choose_study

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ASSIGN = """
import sys
from db import annotations as ann, models as m
from db.session import unit_of_work
from db.workspace import open_workspace
from spine_core.config import load_settings
from sqlalchemy import select
ws = open_workspace(load_settings())
with unit_of_work(ws.sessions) as s:
    admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
    readers = [s.scalars(select(m.User).where(m.User.username == n)).one().id for n in ("reader1", "reader2")]
    study = s.scalars(select(m.Study).where(m.Study.dataset == "verse")).one()
    ann.assign(s, admin, study.id, readers)
    print(study.study_uid)
"""


@pytest.fixture(scope="module")
def verse_uid(app_url: str, app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("e2e-grading") / "verse"
    subprocess.run([sys.executable, "-m", "spine_cli.main", "demo", "--region", "thoracolumbar",
                    "--layout", "verse", "--studies", "1", "--shape", "96x64x64", "--seed", "7",
                    "--out", str(out), "--import", "--no-progress"],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", ASSIGN], env=app_env, cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


def grade(page: Any, level: str, value: str, morphology: str | None = None) -> None:
    """Click the grade (then the morphology) of ``level`` in the Genant panel."""
    page.locator(f"[class*='st-key-annotate_grade_'][class*='_{level}_']").get_by_text(
        value, exact=True).click()
    settle(page, 1.5)
    if morphology:
        page.locator(f"[class*='st-key-annotate_morph_'][class*='_{level}_']").get_by_text(
            morphology, exact=True).click()
        settle(page, 1.5)


def grades(app_env: dict[str, str], uid: str) -> dict[tuple[str, str], tuple[int, str | None]]:
    with app_db(app_env) as con:
        rows = con.execute(
            "SELECT u.username, g.level, g.grade, g.morphology FROM level_grades g JOIN users u "
            "ON u.id = g.reader_id JOIN studies s ON s.id = g.study_id WHERE s.study_uid = ?",
            (uid,)).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_two_readers_grade_levels_and_disagree_by_two_grades(
    app_url: str, app_env: dict[str, str], verse_uid: str, contexts: Any,
) -> None:
    first = contexts()
    sign_in(first, app_url, "reader1")
    open_page(first, "Annotate")
    choose_study(first, verse_uid)
    first.get_by_text("Levels: Genant grade").wait_for()
    assert first.get_by_text("Levels — a box on a level").count() == 0  # no fracture calls here
    grade(first, "L1", "2 moderate", "wedge")
    grade(first, "T12", "0 normal")
    got = grades(app_env, verse_uid)
    assert got[("reader1", "L1")] == (2, "wedge") and got[("reader1", "T12")] == (0, None)

    second = contexts()
    sign_in(second, app_url, "reader2")
    open_page(second, "Annotate")
    choose_study(second, verse_uid)
    second.get_by_text("Levels: Genant grade").wait_for()
    grade(second, "L1", "0 normal")
    got = grades(app_env, verse_uid)
    assert got[("reader2", "L1")] == (0, None)
    assert abs(got[("reader1", "L1")][0] - got[("reader2", "L1")][0]) == 2
    assert any(reader == "dataset" for reader, _ in got)  # the dataset's grades came with it
