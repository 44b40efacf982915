"""The Annotate page on the workstation, in Chromium: key boxes of one fracture interpolate (and
are exported with their fracture and key columns), a stale tab cannot delete another tab's box,
and deleting the last box of a level asks whether it is still fractured.

Two studies are imported for this module alone and assigned through the db layer.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ROOT, app_db, import_synthetic_studies, open_page, screenshot, settle, sign_in
from tests.browser.test_annotation_e2e import axial, axial_index, box_tool, choose_study, drag, step

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
    for uid in sys.argv[1:]:
        study = s.scalars(select(m.Study).where(m.Study.study_uid == uid)).one()
        ann.assign(s, admin, study.id, readers)
"""


@pytest.fixture(scope="module")
def studies(app_url: str, app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two synthetic studies, assigned to reader1 and reader2."""
    uids = import_synthetic_studies(app_env, tmp_path_factory.mktemp("e2e-workstation") / "data", 2,
                                    seed=4711)
    subprocess.run([sys.executable, "-c", ASSIGN, *uids], env=app_env, cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return uids


def rows(app_env: dict[str, str], uid: str, reader: str) -> list[tuple[Any, ...]]:
    """(id, slice, is_key, source, fracture, level) of the reader's live boxes."""
    with app_db(app_env) as con:
        return con.execute(
            "SELECT b.id, b.slice_index, b.is_key, b.source, b.fracture, b.level FROM boxes b "
            "JOIN users u ON u.id = b.reader_id JOIN studies s ON s.id = b.study_id "
            "WHERE s.study_uid = ? AND u.username = ? AND b.deleted_at IS NULL "
            "ORDER BY b.slice_index", (uid, reader)).fetchall()


def wait_saved(page: Any, n: int, timeout_ms: float = 15000) -> None:
    """Until the viewer counts ``n`` box saves the server confirmed (its ``data-saved``)."""
    root = page.locator("[data-testid=sv-root]").first
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(f"[data-testid=sv-root][data-saved='{n}']").first.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        said = root.evaluate("r => [r.dataset.saved, r.querySelector('[data-testid=sv-save]')"
                             "?.textContent, JSON.stringify(r.svWorkstation.saver.post)]")
        raise AssertionError(f"the viewer confirmed no save {n}: {said}") from None


def mark_viewer(page: Any) -> None:
    """Tag the viewer's root element, to tell later whether Streamlit mounted it anew."""
    page.locator("[data-testid=sv-root]").first.evaluate("r => { r.__testMark = 'same'; }")


def same_viewer(page: Any) -> bool:
    """Whether the viewer is still the one :func:`mark_viewer` tagged (not mounted anew, which
    loads its volume again and loses its zoom, window and tool)."""
    return bool(page.locator("[data-testid=sv-root]").first.evaluate(
        "r => r.__testMark === 'same'"))


def open_study(page: Any, app_url: str, reader: str, uid: str) -> None:
    """Sign in, then Annotate and the study over the same connection (no reload): the viewer
    fetches its volume over the session-checked route all the same."""
    sign_in(page, app_url, reader)
    open_page(page, "Annotate")
    choose_study(page, uid)
    assert page.locator("[data-testid=sv-root]").first.get_attribute("data-transport") == "fetch"


def test_two_key_boxes_ten_slices_apart_interpolate_and_export(
    app_url: str, app_env: dict[str, str], studies: list[str], contexts: Any, tmp_path: Path,
) -> None:
    uid = studies[0]
    page = contexts()
    open_study(page, app_url, "reader1", uid)
    page.get_by_role("button", name="New fracture").click()
    settle(page, 1.0)
    first = axial_index(page)
    drag(page, axial(page), 0.40, 0.40, 0.55, 0.52)
    page.get_by_text("Boxes on this slice (1)").wait_for()
    step(page, "PageUp")  # 10 slices on
    assert axial_index(page) == first + 10
    drag(page, axial(page), 0.42, 0.42, 0.57, 0.54)
    page.get_by_text("Fracture F1: 2 key box(es), 9 interpolated").wait_for()
    got = rows(app_env, uid, "reader1")
    keys = [r for r in got if r[2]]
    interp = [r for r in got if not r[2]]
    assert len(keys) == 2 and len(interp) == 9, got
    assert {r[4] for r in got} == {"F1"} and {r[3] for r in interp} == {"interpolated"}
    assert sorted(r[1] for r in interp) == list(range(min(r[1] for r in keys) + 1,
                                                      max(r[1] for r in keys)))
    # the viewer shows an interpolated box on a slice between the keys
    for _ in range(5):
        step(page, "ArrowDown")
    settle(page, 1.5)
    page.get_by_text("Boxes on this slice (1)").wait_for()
    page.get_by_text("interpolated · fracture F1").first.wait_for()
    screenshot(page, "annotation-10-interpolated")
    # moving the interpolated box makes it a key box: the fracture is re-interpolated around it
    drag(page, axial(page), 0.48, 0.47, 0.50, 0.49)
    page.get_by_text("Fracture F1: 3 key box(es), 8 interpolated").wait_for()
    assert sorted(r[1] for r in rows(app_env, uid, "reader1") if r[2]) == [first, first + 5, first + 10]
    page.set_viewport_size({"width": 1440, "height": 900})
    settle(page, 1.5)
    screenshot(page, "annotation-12-annotate-1440x900")

    out = tmp_path / "export"
    subprocess.run([sys.executable, "-m", "spine_cli.main", "export", "readers", str(out)],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    with (out / "readers_boxes.csv").open(newline="") as fh:
        exported = [r for r in csv.DictReader(fh) if r["StudyInstanceUID"] == uid]
    assert len(exported) == 11
    assert {r["fracture"] for r in exported} == {"F1"}
    assert sorted(r["key"] for r in exported) == ["0"] * 8 + ["1"] * 3
    with (out / "readers_studies.csv").open(newline="") as fh:
        mine = [r for r in csv.DictReader(fh)
                if r["StudyInstanceUID"] == uid and r["reader"] == "reader1"]
    assert mine and mine[0]["opened_at"], mine  # open_study stamped the reading


def test_a_stale_tab_cannot_delete_the_other_tabs_box(
    app_url: str, app_env: dict[str, str], studies: list[str], contexts: Any,
) -> None:
    uid = studies[1]
    tab1 = contexts()
    open_study(tab1, app_url, "reader1", uid)
    drag(tab1, axial(tab1), 0.30, 0.30, 0.45, 0.42)
    wait_saved(tab1, 1)  # off the vertebra: saved through the box route, the page not rerun
    (box_id, *_), = rows(app_env, uid, "reader1")

    tab2 = contexts()  # a second tab (its own session) loads the study with tab 1's box
    open_study(tab2, app_url, "reader1", uid)
    tab2.get_by_text("Boxes on this slice (1)").wait_for()

    # tab 1 moves its box (version 2) and draws a second one; tab 2 still shows version 1
    drag(tab1, axial(tab1), 0.37, 0.36, 0.47, 0.46)
    drag(tab1, axial(tab1), 0.60, 0.60, 0.72, 0.70)
    wait_saved(tab1, 3)
    assert len(rows(app_env, uid, "reader1")) == 2

    # tab 2 selects its stale view of the box and deletes it: refused, told, refreshed
    bb = axial(tab2).bounding_box()
    box_tool(tab2)
    mark_viewer(tab2)
    tab2.mouse.click(bb["x"] + bb["width"] * 0.35, bb["y"] + bb["height"] * 0.35)
    tab2.keyboard.press("Delete")
    settle(tab2, 2.0)
    tab2.get_by_text("changed in another tab or device; refreshed").first.wait_for()
    assert same_viewer(tab2), "the warning above the viewer made Streamlit mount the viewer anew"
    assert len(rows(app_env, uid, "reader1")) == 2
    assert box_id in {r[0] for r in rows(app_env, uid, "reader1")}
    tab2.get_by_text("Boxes on this slice (2)").wait_for()
    screenshot(tab2, "annotation-11-stale-tab")


def test_deleting_the_last_box_of_a_level_asks_whether_it_is_still_fractured(
    app_url: str, app_env: dict[str, str], studies: list[str], contexts: Any,
) -> None:
    uid = studies[1]
    page = contexts()
    open_study(page, app_url, "reader2", uid)
    drag(page, axial(page), 0.40, 0.40, 0.56, 0.55)  # on the vertebra in the middle of the spine
    page.get_by_text("Boxes on this slice (1)").wait_for()
    (_, _, _, _, _, level), = rows(app_env, uid, "reader2")
    assert level, "the box in the middle of the slice lies on a vertebra"
    bb = axial(page).bounding_box()
    box_tool(page)
    mark_viewer(page)
    page.mouse.click(bb["x"] + bb["width"] * 0.48, bb["y"] + bb["height"] * 0.47)
    page.keyboard.press("Delete")
    settle(page, 2.0)
    page.get_by_text(f"Is {level} still fractured?").wait_for()
    assert same_viewer(page), "the question above the viewer made Streamlit mount it anew"
    assert rows(app_env, uid, "reader2") == []
    page.get_by_role("button", name=f"No, {level} is not fractured").click()
    settle(page, 1.5)
    assert same_viewer(page), "the question's going made Streamlit mount the viewer anew"
    with app_db(app_env) as con:
        call = con.execute(
            "SELECT l.call FROM level_labels l JOIN users u ON u.id = l.reader_id "
            "JOIN studies s ON s.id = l.study_id WHERE s.study_uid = ? AND u.username = "
            "'reader2' AND l.level = ?", (uid, level)).fetchone()
    assert call == ("not_fractured",)
    assert page.get_by_text(f"Is {level} still fractured?").count() == 0


def test_a_box_is_saved_through_the_box_route_without_a_page_rerun(
    app_url: str, app_env: dict[str, str], studies: list[str], contexts: Any,
) -> None:
    uid = studies[0]
    page = contexts()
    open_study(page, app_url, "reader2", uid)
    root = page.locator("[data-testid=sv-root]").first
    drag(page, axial(page), 0.40, 0.40, 0.55, 0.52)  # on a vertebra: a level newly boxed
    wait_saved(page, 1)
    page.get_by_text("Boxes on this slice (1)").wait_for()  # ... so the viewer had the page rerun
    (box_id, _, _, _, _, level), = rows(app_env, uid, "reader2")
    assert level, "the box in the middle of the slice lies on a vertebra"
    caption = page.get_by_text(f"#{box_id} · {level}")
    before = caption.inner_text()
    sent = root.evaluate("r => r.svWorkstation.channel.sent")

    drag(page, axial(page), 0.47, 0.46, 0.49, 0.48)  # move it a little: a plain save
    wait_saved(page, 2)
    assert root.get_by_test_id("sv-save").inner_text() == f"Box changed on {level}"
    with app_db(app_env) as con:
        version, x = con.execute("SELECT version, x FROM boxes WHERE id = ?", (box_id,)).fetchone()
    assert version == 2
    # nothing went to Streamlit and the page did not rerun: its panel still shows the old place
    settle(page, 1.5)
    assert root.evaluate("r => r.svWorkstation.channel.sent") == sent
    assert caption.inner_text() == before and f"at ({x:.0f}," not in before
    assert root.evaluate("(r, id) => r.svWorkstation.boxes.boxes.find(b => b.id === id).version",
                         str(box_id)) == 2


def test_a_box_moved_before_its_save_returns_is_changed_not_drawn_twice(
    app_url: str, app_env: dict[str, str], studies: list[str], contexts: Any,
) -> None:
    uid = studies[1]
    page = contexts()
    open_study(page, app_url, "reader2", uid)
    before = {r[0] for r in rows(app_env, uid, "reader2")}
    held: list[Any] = []  # the first post waits here until the box was moved

    def hold_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/spine-box-events", hold_first)
    drag(page, axial(page), 0.06, 0.06, 0.16, 0.14)  # drawn; its save is held
    assert len(held) == 1 and {r[0] for r in rows(app_env, uid, "reader2")} == before
    drag(page, axial(page), 0.11, 0.10, 0.15, 0.13)  # moved while still "new-…": waits its turn
    held[0].continue_()
    wait_saved(page, 2)
    new = [r for r in rows(app_env, uid, "reader2") if r[0] not in before]
    assert len(new) == 1, new  # one box, created then changed: never two
    with app_db(app_env) as con:
        (version,) = con.execute("SELECT version FROM boxes WHERE id = ?", (new[0][0],)).fetchone()
    assert version == 2
    assert root_box_ids(page) == {str(r[0]) for r in rows(app_env, uid, "reader2")}


def root_box_ids(page: Any) -> set[str]:
    """Ids of the reader's boxes the viewer holds (no temporary "new-…" id left)."""
    ids = page.locator("[data-testid=sv-root]").first.evaluate(
        "r => r.svWorkstation.boxes.boxes.filter(b => b.kind === 'key').map(b => b.id)")
    pending = page.locator("[data-testid=sv-root]").first.evaluate(
        "r => [...r.svWorkstation.boxes.pending.keys()]")
    assert pending == [], pending
    return set(ids)
