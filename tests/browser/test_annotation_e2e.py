"""End to end in Chromium: an admin assigns a study to reader1 and reader2; reader1 draws a box,
reloads the page and finds it still there; reader2 does not see it (blinded) and draws their own;
an adjudicator sees both readers' boxes and their union on the agreement page.

The study is imported for this test alone (the demo studies other browser tests use are left as
they are). Boxes are checked three ways: in the page's box list, in the database, and by the
colours drawn on the canvas / consensus image.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import ARTIFACTS, ROOT, app_db, open_page, screenshot, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

READER_BLUE = (64, 160, 255)  # the canvas stroke of a reader's own boxes, and reader1's colour
READER2_RED = (255, 80, 80)
UNION_YELLOW = (255, 230, 0)


@pytest.fixture(scope="module")
def fresh_study(app_url: str, app_env: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> str:
    """A synthetic RSNA study without readers, imported into the running app's database."""
    from spine_core.phantom.rsna_layout import write_rsna_dataset

    root = tmp_path_factory.mktemp("e2e-annotation") / "data"
    write_rsna_dataset(root, n_studies=1, seed=90210, shape=(48, 112, 112), workers=1, n_readers=0)
    subprocess.run([sys.executable, "-m", "spine_cli.main", "import", str(root), "--no-progress"],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    with (root / "train.csv").open(newline="") as fh:
        return next(csv.DictReader(fh))["StudyInstanceUID"]


def choose_study(page: Any, uid: str) -> None:
    """Pick the study in the reader's sidebar queue (labels end with the UID's last 24 chars)."""
    page.locator("[data-testid=stSidebar]").get_by_role("combobox").click()
    page.get_by_role("option", name=uid[-24:]).click()
    settle(page, 1.5)
    page.get_by_text(uid).first.wait_for()


def outlines_off(page: Any) -> None:
    """Hide the level outlines (some level colours are close to the box colours)."""
    toggle = page.get_by_role("switch", name="Level outlines")
    if toggle.is_checked():
        page.locator("[data-testid=stCheckbox]").filter(has=toggle).locator("label").click()
        settle(page, 1.0)
    assert not toggle.is_checked()


def canvas_box(page: Any) -> Any:
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for()
    return canvas


def drag(page: Any, canvas: Any, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Drag on the canvas from one fraction of its size to another, then wait for the save."""
    bb = canvas.bounding_box()
    page.mouse.move(bb["x"] + bb["width"] * fx0, bb["y"] + bb["height"] * fy0)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] * fx1, bb["y"] + bb["height"] * fy1, steps=10)
    page.mouse.up()
    settle(page, 1.5)


def colour_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    """Pixels clearly of the hue of ``rgb`` (blue, red or yellow here), whatever the scaling:
    each channel well above (or below) the pixel's grey level where it is well above (below)
    in ``rgb``. Grey CT pixels (R = G = B) never count."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.asarray(rgb)
    grey = target.mean()
    high, low = target > grey + 40, target < grey - 40
    mean = img.mean(axis=2, keepdims=True)
    ok = np.all(np.where(high, img - mean > 25, True) & np.where(low, mean - img > 25, True), axis=2)
    return int(ok.sum())


def boxes_in_db(app_env: dict[str, str], uid: str) -> list[tuple[str, int, float, float, float, float]]:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT u.username, b.slice_index, b.x, b.y, b.width, b.height FROM boxes b "
            "JOIN users u ON u.id = b.reader_id JOIN studies s ON s.id = b.study_id "
            "WHERE s.study_uid = ? AND b.deleted_at IS NULL AND b.source = 'drawn' "
            "ORDER BY u.username", (uid,)).fetchall()


def test_readers_draw_blinded_and_the_adjudicator_sees_both_and_the_union(
    app_url: str, app_env: dict[str, str], fresh_study: str, contexts: Any,
) -> None:
    uid = fresh_study

    # -- the admin assigns the study to reader1 and reader2 on the Assignments page ------------
    admin = contexts()
    sign_in(admin, app_url, "admin")
    open_page(admin, "Assignments")
    form = admin.locator("[data-testid=stForm]").filter(
        has=admin.get_by_role("button", name="Assign readers"))
    form.get_by_role("combobox").first.click()
    admin.get_by_role("option", name=uid).click()
    for reader in ("reader1", "reader2"):
        form.get_by_role("combobox").nth(1).click()
        admin.get_by_role("option", name=reader, exact=True).click()
        admin.keyboard.press("Escape")
    form.get_by_role("button", name="Assign readers").click()
    settle(admin, 1.5)
    admin.get_by_text("Assigned reader1, reader2.").wait_for()
    screenshot(admin, "annotation-01-admin-assigns")

    # -- reader1 draws a box ---------------------------------------------------------------------
    r1 = contexts()
    sign_in(r1, app_url, "reader1")
    open_page(r1, "Annotate")
    choose_study(r1, uid)
    outlines_off(r1)
    r1.get_by_text("Boxes on this slice (0)").wait_for()
    drag(r1, canvas_box(r1), 0.40, 0.36, 0.52, 0.46)
    r1.get_by_text("Boxes on this slice (1)").wait_for()
    saved = boxes_in_db(app_env, uid)
    assert [b[0] for b in saved] == ["reader1"], saved
    _, k, x, y, w, h = saved[0]
    assert 112 * 0.40 - 2 <= x <= 112 * 0.40 + 2 and 112 * 0.36 - 2 <= y <= 112 * 0.36 + 2
    assert 12 <= w <= 15 and 10 <= h <= 13  # about 12% by 10% of a 112-pixel slice
    assert colour_pixels(canvas_box(r1).screenshot(), READER_BLUE) > 40
    screenshot(r1, "annotation-02-reader1-draws")

    # -- reload: a new Streamlit session; the reader stays signed in (token in the URL) and the
    # box comes back from the database -------------------------------------------------------------
    r1.reload()
    r1.get_by_role("button", name="Sign out").wait_for()
    assert r1.get_by_label("User name").count() == 0
    settle(r1)
    if "/annotate" not in r1.url:
        open_page(r1, "Annotate")
    choose_study(r1, uid)
    outlines_off(r1)
    r1.get_by_text("Boxes on this slice (1)").wait_for()
    assert colour_pixels(canvas_box(r1).screenshot(), READER_BLUE) > 40
    screenshot(r1, "annotation-03-reader1-after-reload")
    r1.get_by_role("button", name="Submit study").click()
    settle(r1, 1.5)
    r1.get_by_text("You submitted this study.").wait_for()

    # -- reader2 sees none of it, and draws an overlapping box ------------------------------------
    r2 = contexts()
    sign_in(r2, app_url, "reader2")
    open_page(r2, "Annotate")
    choose_study(r2, uid)
    outlines_off(r2)
    r2.get_by_text("Boxes on this slice (0)").wait_for()
    assert colour_pixels(canvas_box(r2).screenshot(), READER_BLUE) == 0
    screenshot(r2, "annotation-04-reader2-blinded")
    drag(r2, canvas_box(r2), 0.46, 0.40, 0.58, 0.50)
    r2.get_by_text("Boxes on this slice (1)").wait_for()
    assert sorted(b[0] for b in boxes_in_db(app_env, uid)) == ["reader1", "reader2"]
    assert all(b[1] == k for b in boxes_in_db(app_env, uid))  # same slice: the boxes overlap
    # reader2's box lies off the vertebra, so it has no level: submitting asks for a decision
    r2.get_by_text("1 box has no level").wait_for()
    r2.get_by_role("button", name="Submit anyway").click()
    settle(r2, 1.5)
    r2.get_by_text("You submitted this study.").wait_for()

    # -- the adjudicator sees both readers' boxes and their union --------------------------------
    adj = contexts()
    sign_in(adj, app_url, "adjudicator1")
    open_page(adj, "Agreement")
    adj.get_by_role("tab", name="Consensus view").click()
    settle(adj)
    panel = adj.get_by_role("tabpanel")
    panel.get_by_role("combobox").first.click()
    adj.get_by_role("option", name=uid).click()
    settle(adj, 1.5)
    # the union table lists one union of both readers (grid cells are in the DOM, not visible)
    panel.get_by_text("reader1, reader2").wait_for(state="attached")
    image = panel.locator("[data-testid=stImage] img").first
    image.scroll_into_view_if_needed()
    png = image.screenshot()
    screenshot(adj, "annotation-05-adjudicator-consensus")
    (ARTIFACTS / "annotation-05-consensus-image.png").write_bytes(png)
    assert colour_pixels(png, READER_BLUE) > 40
    assert colour_pixels(png, READER2_RED) > 40
    assert colour_pixels(png, UNION_YELLOW) > 40
