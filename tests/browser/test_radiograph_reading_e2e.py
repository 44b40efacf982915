"""Vertebra labels on a lateral film in Chromium: reader1 draws four vertebra boxes by mouse on a
synthetic lumbar DX film and labels them in the table below the viewer (L2, L3, L4, L5 head to
feet, one with a Genant grade); reader2's boxes of the same vertebrae (made through the db layer,
2 px lower) are labelled one level lower; both submit, and the committee finds ONE labelling
dispute on the Adjudication page, in words, and decides whose labelling is right."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, app_db, open_page, screenshot, settle, sign_in
from tests.browser.test_annotation_e2e import axial, choose_study, drag, submit

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

MAKE = """
import sys
from pathlib import Path
from spine_core.phantom.xray_layout import write_xray_dataset
write_xray_dataset(Path(sys.argv[1]), region="lumbar", n_studies=1, seed=21,
                   phantom_shape=(200, 96, 96))
"""

ASSIGN = """
from db import annotations as ann, models as m
from db.session import unit_of_work
from db.workspace import open_workspace
from spine_core.config import load_settings
from sqlalchemy import select
ws = open_workspace(load_settings())
with unit_of_work(ws.sessions) as s:
    admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
    readers = [s.scalars(select(m.User).where(m.User.username == n)).one().id
               for n in ("reader1", "reader2")]
    study = s.scalars(select(m.Study).where(m.Study.study_uid.like("%"))
                      .order_by(m.Study.id.desc())).first()
    ann.assign(s, admin, study.id, readers)
    print(study.study_uid)
"""

#: reader2 boxes reader1's vertebrae 2 px lower and labels each one level lower, then submits.
SECOND_READER = """
import sys
from db import annotations as ann, box_events as be, film_reading as fr, models as m
from db.session import unit_of_work
from db.workspace import open_workspace
from spine_core.config import load_settings
from spine_core.film_labels import moved_level
from sqlalchemy import select
ws = open_workspace(load_settings())
uid = sys.argv[1]
with unit_of_work(ws.sessions) as s:
    study = s.scalars(select(m.Study).where(m.Study.study_uid == uid)).one()
    admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
    me = s.scalars(select(m.User).where(m.User.username == "reader2")).one()
    first = [b for b in fr.film_boxes(s, admin, study.id) if b.reader == "reader1"]
    for b in first:
        be.create_box(s, me, study.id, ann.BoxInput(0, b.x, b.y + 2, b.width, b.height))
    for mine, theirs in zip(fr.film_boxes(s, me, study.id), first, strict=True):
        fr.save_film_label(s, me, mine.id, mine.version, moved_level(theirs.level, 1), None, False)
    ann.submit(s, me, study.id)
"""

LABELS = ["L2", "L3", "L4", "L5"]


@pytest.fixture(scope="module")
def film_uid(app_url: str, app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("e2e-film") / "xr"
    subprocess.run([sys.executable, "-c", MAKE, str(root)], env=app_env, cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "spine_cli.main", "import", str(root), "--no-progress"],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", ASSIGN], env=app_env, cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


def film_boxes(app_env: dict[str, str], uid: str, reader: str) -> list[tuple[Any, ...]]:
    """(level, grade, is_reference) of the reader's live boxes, head to feet."""
    with app_db(app_env) as con:
        return con.execute(
            "SELECT b.level, b.grade, b.is_reference FROM boxes b JOIN users u ON u.id = "
            "b.reader_id JOIN studies s ON s.id = b.study_id WHERE s.study_uid = ? AND "
            "u.username = ? AND b.deleted_at IS NULL ORDER BY b.y", (uid, reader)).fetchall()


def choose(page: Any, row: int, what: str, value: str) -> None:
    """Pick ``value`` in the ``what`` (label or grade) select of table row ``row`` (0-based)."""
    select = page.locator(f"[class*='st-key-film_'][class*='_{what}']").nth(row)
    select.scroll_into_view_if_needed()
    select.click()
    page.keyboard.type(value)  # the list is long (C1 to S1): filter it
    settle(page, 0.5)
    page.get_by_role("option", name=value, exact=True).click()
    settle(page, 1.5)
    expect(page.locator(f"[class*='st-key-film_'][class*='_{what}']").nth(row)
           .get_by_role("combobox")).to_have_value(value)


def test_a_shifted_second_reader_opens_one_labelling_dispute(
    app_url: str, app_env: dict[str, str], film_uid: str, contexts: Any,
) -> None:
    page = contexts()
    sign_in(page, app_url, "reader1")
    open_page(page, "Annotate")
    choose_study(page, film_uid)
    page.get_by_text("Vertebrae on this film").wait_for()
    for n in range(4):  # four vertebra boxes, head to feet, by mouse
        top = 0.18 + 0.16 * n
        drag(page, axial(page), 0.42, top, 0.58, top + 0.12)
    page.get_by_role("button", name="Update the list").click()
    settle(page, 1.5)
    page.get_by_text("Box 4", exact=False).first.wait_for()
    assert len(film_boxes(app_env, film_uid, "reader1")) == 4
    for row, label in enumerate(LABELS):
        choose(page, row, "label", label)
    choose(page, 2, "grade", "grade 2 moderate")
    assert film_boxes(app_env, film_uid, "reader1") == [("L2", None, 0), ("L3", None, 0),
                                                          ("L4", 2, 0), ("L5", None, 0)]
    screenshot(page, "radiograph-01-vertebra-labels")
    submit(page)

    subprocess.run([sys.executable, "-c", SECOND_READER, film_uid], env=app_env, cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    assert [r[0] for r in film_boxes(app_env, film_uid, "reader2")] == ["L3", "L4", "L5", "S"]

    committee = contexts()
    sign_in(committee, app_url, "adjudicator1")
    open_page(committee, "Adjudication", 1.0)
    committee.get_by_role("button", name="Check read studies for disputes").click()
    settle(committee, 2.0)
    box = committee.get_by_role("combobox", name="Dispute")
    box.click()
    box.fill(film_uid[-16:])
    settle(committee, 1.0)
    options = committee.get_by_role("option", name=re.compile(rf"Vertebra labels shifted · {film_uid}"))
    assert options.count() == 1  # ONE dispute for the film, not one per vertebra
    options.first.click()
    settle(committee, 1.5)
    committee.get_by_text(re.compile(r"^reader2's labels are one level below reader1's on 4 "
                                     r"vertebrae")).wait_for()
    committee.get_by_role("heading", name=re.compile(r"^Whole film · Vertebra labels shifted"))\
        .wait_for()
    screenshot(committee, "radiograph-02-labelling-dispute")
    form = committee.locator("[data-testid=stForm]").filter(
        has=committee.get_by_role("button", name="Decide the labelling"))
    form.locator("label").filter(has_text=re.compile(r"^reader1's labels$")).click()
    form.get_by_label("Reason (required)").fill("counted up from S1")
    form.get_by_role("button", name="Decide the labelling").click()
    settle(committee, 1.5)
    committee.get_by_text("Decided: reader1's labelling is right.").wait_for()
    with app_db(app_env) as con:
        kinds = con.execute(
            "SELECT d.kind, d.status FROM disputes d JOIN studies s ON s.id = d.study_id "
            "WHERE s.study_uid = ?", (film_uid,)).fetchall()
    assert kinds == [("labelling", "decided")]
