"""Genant grading in Chromium: a whole-spine VerSe study is read with grades, not fracture calls;
reader1 grades two levels (and renumbers the spine: the vertebra labelled L1 is a T13), reader2
grades one of them two grades lower; both submit, and the committee finds the grade dispute on
the Adjudication page, sees both grades and reader1's name for the vertebra, and decides it by
two grade votes: the level's final grade is the committee's."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, app_db, open_page, pick_option, screenshot, settle, sign_in
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


def open_grading(contexts: Any, app_url: str, user: str, uid: str) -> Any:
    """A new browser context signed in as ``user`` on Annotate, on ``uid``'s grade panel."""
    page = contexts()
    sign_in(page, app_url, user)
    open_page(page, "Annotate")
    choose_study(page, uid)
    page.get_by_text("Levels: Genant grade").wait_for()
    return page


def test_two_readers_grade_levels_and_disagree_by_two_grades(
    app_url: str, app_env: dict[str, str], verse_uid: str, contexts: Any,
) -> None:
    first = open_grading(contexts, app_url, "reader1", verse_uid)
    assert first.get_by_text("Levels — a box on a level").count() == 0  # no fracture calls here
    grade(first, "L1", "2 moderate", "wedge")
    grade(first, "T12", "0 normal")
    got = grades(app_env, verse_uid)
    assert got[("reader1", "L1")] == (2, "wedge") and got[("reader1", "T12")] == (0, None)

    second = open_grading(contexts, app_url, "reader2", verse_uid)
    grade(second, "L1", "0 normal")
    got = grades(app_env, verse_uid)
    assert got[("reader2", "L1")] == (0, None)
    assert abs(got[("reader1", "L1")][0] - got[("reader2", "L1")][0]) == 2
    assert any(reader == "dataset" for reader, _ in got)  # the dataset's grades came with it


def submit(page: Any) -> None:
    """Submit the study (confirming if the page asks)."""
    button = page.get_by_role("button", name=re.compile(r"^Submit (study|anyway)$"))
    button.click()
    settle(page, 1.5)
    page.get_by_text("You submitted this study.").wait_for()


def renumber(page: Any, at: str, says: str) -> None:
    """In the Numbering expander: the vertebra labelled ``at`` is ``says``."""
    page.get_by_text(re.compile(r"^Numbering: a mislabelled")).click()
    for label, value in (("The vertebra labelled", at), ("is", says)):
        box = page.get_by_role("combobox", name=label, exact=True)
        pick_option(page, box, value)
        expect(box).to_have_value(value)
    page.get_by_role("button", name="Renumber").click()
    settle(page, 1.5)


def vote_grade(page: Any, grade: str, morphology: str, rationale: str) -> None:
    form = page.locator("[data-testid=stForm]").filter(
        has=page.get_by_role("button", name="Cast grade vote"))
    form.locator("label").filter(has_text=re.compile(rf"^{grade}$")).click()
    form.locator("label").filter(has_text=re.compile(rf"^{morphology}$")).click()
    form.get_by_label("Rationale (required)").fill(rationale)
    form.get_by_role("button", name="Cast grade vote").click()
    settle(page, 1.5)


def open_grade_dispute(page: Any, uid: str, level: str) -> None:
    open_page(page, "Adjudication", 1.0)
    page.get_by_role("heading", name="Adjudication").wait_for()
    box = page.get_by_role("combobox", name="Dispute")
    box.click()
    box.fill(uid[-16:])
    settle(page, 1.0)
    page.get_by_role("option", name=re.compile(rf"^{level} · .*grade.*{re.escape(uid)}")).first.click()
    settle(page, 1.5)
    page.get_by_role("heading", name=re.compile(rf"^{level} · .*grade.* · study {uid}$")).wait_for()


def final_grade(app_env: dict[str, str], uid: str, level: str) -> tuple[Any, ...] | None:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT f.grade, f.morphology, f.source FROM final_grades f JOIN studies s ON "
            "s.id = f.study_id WHERE s.study_uid = ? AND f.level = ?", (uid, level)).fetchone()


def test_the_committee_decides_the_grade_dispute_in_the_browser(
    app_url: str, app_env: dict[str, str], verse_uid: str, contexts: Any,
) -> None:
    # (runs after the test above: reader1 gave L1 grade 2, reader2 grade 0)
    first = open_grading(contexts, app_url, "reader1", verse_uid)
    renumber(first, "L1", "T13")
    first.get_by_text(re.compile(r"^Your numbering: the vertebra labelled L1 is T13: L1 → T13"))\
        .wait_for()
    first.get_by_text("L1 → T13", exact=True).wait_for()  # the grade panel shows both names
    submit(first)
    second = open_grading(contexts, app_url, "reader2", verse_uid)
    submit(second)

    a1 = contexts()
    sign_in(a1, app_url, "adjudicator1")
    open_page(a1, "Adjudication", 1.0)
    a1.get_by_role("button", name="Check read studies for disputes").click()
    settle(a1, 2.0)
    open_grade_dispute(a1, verse_uid, "L1")
    a1.get_by_text(re.compile(r"^Readers grade L1 0 and 2")).wait_for()
    table = a1.locator("[data-testid=stTable]").first
    assert "grade 2 moderate, wedge" in table.inner_text() and "T13" in table.inner_text()
    screenshot(a1, "grading-01-grade-dispute-opened")
    vote_grade(a1, "2 moderate", "wedge", "anterior height lost by a third")
    a1.get_by_text(re.compile(r"^Vote recorded\. 1 of 2 votes needed")).wait_for()
    assert final_grade(app_env, verse_uid, "L1") is None  # no final grade while it is open

    a2 = contexts()
    sign_in(a2, app_url, "adjudicator2")
    open_grade_dispute(a2, verse_uid, "L1")
    vote_grade(a2, "2 moderate", "wedge", "wedge deformity, grade 2")
    a2.get_by_text(re.compile(r"^Vote recorded\.")).wait_for()
    a2.get_by_text(re.compile(r"^Decision.*grade 2 moderate, wedge.*in force")).wait_for()
    assert final_grade(app_env, verse_uid, "L1") == (2, "wedge", "decision")
    screenshot(a2, "grading-02-grade-dispute-decided")
