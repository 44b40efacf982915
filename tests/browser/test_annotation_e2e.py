"""End to end in Chromium: an admin assigns a study to reader1 and reader2; reader1 draws a box,
reloads the page and finds it still there; reader2 does not see it (blinded) and draws their own;
an adjudicator sees both readers' boxes and their union on the agreement page.

The study is imported for this test alone (the demo studies other browser tests use are left as
they are). Boxes are checked three ways: in the page's box list, in the database, and by the
colours drawn on the canvas / consensus image.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import ARTIFACTS, app_db, import_synthetic_studies, open_page, screenshot, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

READER_BLUE = (64, 160, 255)  # the canvas stroke of a reader's own boxes, and reader1's colour
READER2_RED = (255, 80, 80)
UNION_YELLOW = (255, 230, 0)


@pytest.fixture(scope="module")
def fresh_study(app_url: str, app_env: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> str:
    """A synthetic RSNA study without readers, imported into the running app's database."""
    folder = tmp_path_factory.mktemp("e2e-annotation") / "data"
    return import_synthetic_studies(app_env, folder, 1, seed=90210)[0]


def choose_study(page: Any, uid: str) -> None:
    """Pick the study in the reader's sidebar queue (labels end with the UID's last 24 chars)."""
    page.locator("[data-testid=stSidebar]").get_by_role("combobox").click()
    page.get_by_role("option", name=uid[-24:]).click()
    settle(page, 1.5)
    page.get_by_text(uid).first.wait_for()
    wait_viewer(page)


def wait_viewer(page: Any) -> None:
    """Wait until the workstation holds the whole volume."""
    page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=90_000)
    settle(page, 0.5)


def axial(page: Any) -> Any:
    """The axial image of the workstation."""
    canvas = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").first
    canvas.wait_for()
    return canvas


def axial_png(page: Any) -> bytes:
    return page.locator("[data-testid=sv-vp-axial]").first.screenshot()


def box_tool(page: Any) -> None:
    """Turn the viewer's box tool on (key B of spine_viewer.keymap)."""
    root = page.locator("[data-testid=sv-root]").first
    root.focus()
    if root.get_attribute("data-tool") != "box":
        page.keyboard.press("b")
    from playwright.sync_api import expect

    expect(root).to_have_attribute("data-tool", "box", timeout=5000)


def axial_index(page: Any) -> int:
    return int(page.locator("[data-testid=sv-vp-axial] .sv-info").get_attribute("data-index"))


def step(page: Any, key: str) -> None:
    """Press a viewer key (e.g. PageUp: 10 slices on) with the viewer focused."""
    page.locator("[data-testid=sv-root]").first.focus()
    page.keyboard.press(key)
    page.wait_for_timeout(300)


def drag(page: Any, canvas: Any, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Draw (or move) with the box tool from one fraction of the axial image to another, then
    wait for the page to store the event."""
    box_tool(page)
    bb = canvas.bounding_box()
    page.mouse.move(bb["x"] + bb["width"] * fx0, bb["y"] + bb["height"] * fy0)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] * fx1, bb["y"] + bb["height"] * fy1, steps=10)
    page.mouse.up()
    settle(page, 2.0)


def submit(page: Any) -> None:
    page.get_by_role("button", name=re.compile(r"^Submit (study|anyway)$")).click()
    settle(page, 1.5)
    page.get_by_text("You submitted this study.").wait_for()


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
            "WHERE s.study_uid = ? AND b.deleted_at IS NULL AND b.source = 'drawn' AND b.is_key "
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

    # -- reader1 draws a box in the workstation -------------------------------------------------
    r1 = contexts()
    sign_in(r1, app_url, "reader1")
    open_page(r1, "Annotate")
    choose_study(r1, uid)
    r1.get_by_text("Boxes on this slice (0)").wait_for()
    blue_before = colour_pixels(axial_png(r1), READER_BLUE)
    drag(r1, axial(r1), 0.40, 0.36, 0.52, 0.46)
    r1.get_by_text("Boxes on this slice (1)").wait_for()
    saved = boxes_in_db(app_env, uid)
    assert [b[0] for b in saved] == ["reader1"], saved
    _, k, x, y, w, h = saved[0]
    # the display may mirror the stored columns/rows: the box lies at 40% or 48% of the width
    assert min(abs(x - 112 * 0.40), abs(x - 112 * 0.48)) <= 2.5, saved
    assert min(abs(y - 112 * 0.36), abs(y - 112 * 0.54)) <= 2.5, saved
    assert 12 <= w <= 15 and 10 <= h <= 13  # about 12% by 10% of a 112-pixel slice
    assert colour_pixels(axial_png(r1), READER_BLUE) > blue_before + 40
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
    r1.get_by_text("Boxes on this slice (1)").wait_for()
    assert colour_pixels(axial_png(r1), READER_BLUE) > blue_before + 40
    screenshot(r1, "annotation-03-reader1-after-reload")
    submit(r1)

    # -- reader2 sees none of it, and draws an overlapping box ------------------------------------
    r2 = contexts()
    sign_in(r2, app_url, "reader2")
    open_page(r2, "Annotate")
    choose_study(r2, uid)
    r2.get_by_text("Boxes on this slice (0)").wait_for()
    assert axial_index(r2) == axial_index(r1)  # the same (middle of the spine) slice
    assert colour_pixels(axial_png(r2), READER_BLUE) <= blue_before + 10
    screenshot(r2, "annotation-04-reader2-blinded")
    drag(r2, axial(r2), 0.46, 0.40, 0.58, 0.50)
    r2.get_by_text("Boxes on this slice (1)").wait_for()
    assert sorted(b[0] for b in boxes_in_db(app_env, uid)) == ["reader1", "reader2"]
    assert all(b[1] == k for b in boxes_in_db(app_env, uid))  # same slice: the boxes overlap
    with app_db(app_env) as con:
        (level,) = con.execute(
            "SELECT b.level FROM boxes b JOIN users u ON u.id = b.reader_id "
            "WHERE u.username = 'reader2' AND b.deleted_at IS NULL").fetchone()
    if level is None:  # off the vertebra: the page said so, and submitting asks for a decision
        r2.get_by_text("1 box has no level").wait_for()
    submit(r2)

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
