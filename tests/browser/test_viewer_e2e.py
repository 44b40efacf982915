"""The app in a real Chromium: sign-in, the case browser, the three-plane viewer (keyboard and
slider stepping, linked cursor by click, window presets, vertebra toggles, one large plane), the
3-D view, the demonstration page and signing out; wrong passwords and signed-out visitors.

Runs against the app started by tests/browser/conftest.py (its own SQLite and two demo studies).
Screenshots of the main screens land in test-artifacts/screenshots/ for the README.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import screenshot, sign_in, submit_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = None

HEADER = re.compile(r"^(Axial|Sagittal|Coronal) (\d+)/(\d+) · [xyz] = -?\d+\.\d mm$")


def _header(page: Any, plane: str) -> tuple[int, int]:
    """(slice number, slice count) shown above a plane."""
    text = page.locator(f".sv[data-plane={plane}] .sv-head").inner_text()
    match = HEADER.match(text)
    assert match, f"unexpected header {text!r}"
    return int(match.group(2)), int(match.group(3))


def _src(page: Any, plane: str) -> str:
    return str(page.locator(f".sv[data-plane={plane}] .sv-img").get_attribute("src"))


def _wait_header(page: Any, plane: str, number: int) -> None:
    expect(page.locator(f".sv[data-plane={plane}] .sv-head")).to_have_text(
        re.compile(rf"^\w+ {number}/"))


def _cursor(page: Any) -> str:
    return str(page.get_by_text(re.compile(r"^Cursor ")).inner_text())


def _open_first_case(page: Any) -> None:
    """Select the first row of the case table (its row checkbox) -> the viewer opens."""
    canvas = page.locator("[data-testid=stDataFrame] canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 + 17)
    for plane in ("axial", "sagittal", "coronal"):
        page.locator(f".sv[data-plane={plane}] .sv-img").wait_for()


def test_wrong_password_is_refused(page: Any, app_url: str) -> None:
    submit_sign_in(page, app_url, "admin", "wrong-password")
    expect(page.get_by_text("Wrong user name or password.")).to_be_visible()
    assert page.get_by_role("button", name="Sign out").count() == 0
    screenshot(page, "signin-refused")


@pytest.mark.parametrize("path", ["", "/cases", "/viewer", "/demo"])
def test_signed_out_visitors_reach_no_page(page: Any, app_url: str, path: str) -> None:
    page.goto(app_url + path)
    expect(page.get_by_label("User name", exact=True)).to_be_visible()
    assert page.locator("[data-testid=stDataFrame]").count() == 0
    assert page.locator(".sv-img").count() == 0
    assert page.get_by_role("button", name="Sign out").count() == 0


def _demo_study_uids(app_env: dict[str, str]) -> list[str]:
    """The demo studies the bootstrap generated (other browser tests import more studies)."""
    train_csv = Path(app_env["SPINE_DATA_DIR"]) / "demo" / "train.csv"
    return [line.split(",")[0] for line in train_csv.read_text().splitlines()[1:]]


def test_viewer_journey(page: Any, app_url: str, app_env: dict[str, str]) -> None:
    sign_in(page, app_url, "admin")
    expect(page.get_by_role("heading", name="Cases")).to_be_visible()
    page.locator("[data-testid=stDataFrame] canvas").first.wait_for()
    expect(page.get_by_text(re.compile(r"^Studies 1–\d+ of \d+\."))).to_be_visible()
    screenshot(page, "cases")
    # search by UID narrows the list to one demo study, opened below
    uid = _demo_study_uids(app_env)[-1]
    page.get_by_role("textbox", name="Search").fill(uid)
    page.get_by_role("textbox", name="Search").press("Enter")
    expect(page.get_by_text(re.compile(r"^Studies 1–1 of 1\."))).to_be_visible()

    _open_first_case(page)
    expect(page.get_by_text(re.compile(r"^Study \d"))).to_be_visible()
    page.wait_for_timeout(300)  # let the three images paint
    screenshot(page, "viewer-three-planes")

    # keyboard: ↑ steps the active (axial) plane; nothing else on the page reruns
    axial, n_axial = _header(page, "axial")
    title_before = page.get_by_text(re.compile(r"^Study \d")).inner_text()
    page.keyboard.press("ArrowUp")
    _wait_header(page, "axial", axial + 1)
    page.keyboard.press("PageDown")
    _wait_header(page, "axial", max(1, axial + 1 - 10))
    assert page.get_by_text(re.compile(r"^Study \d")).inner_text() == title_before

    # the slider, by keyboard on its thumb
    thumb = page.locator("[data-testid=stSlider]").filter(
        has=page.get_by_role("slider", name="Coronal slice")).get_by_role("slider")
    coronal, _ = _header(page, "coronal")
    thumb.focus()
    page.keyboard.press("ArrowRight")
    _wait_header(page, "coronal", coronal + 1)

    # a click in the sagittal plane moves the axial and coronal planes to that point
    expect(page.get_by_text(re.compile(r"^Cursor "))).to_have_text(
        re.compile(rf"voxel \(\d+, {coronal}, "))  # the slider's rerun is complete
    before = {p: _header(page, p)[0] for p in ("axial", "sagittal", "coronal")}
    cursor_before = _cursor(page)
    sag = page.locator(".sv[data-plane=sagittal] .sv-img").bounding_box()
    page.mouse.click(sag["x"] + sag["width"] * 0.3, sag["y"] + sag["height"] * 0.2)
    # the cursor line is drawn after the three planes: once it changed, all three did
    expect(page.get_by_text(re.compile(r"^Cursor "))).not_to_have_text(cursor_before)
    after = {p: _header(page, p)[0] for p in ("axial", "sagittal", "coronal")}
    assert after["sagittal"] == before["sagittal"]
    assert after["axial"] > before["axial"]  # the upper part of a sagittal image is superior
    assert after["coronal"] < before["coronal"]  # left of the image is anterior
    assert re.search(r"-?\d+ HU", _cursor(page))
    page.keyboard.press("ArrowUp")  # the clicked plane is now the one the keys step
    _wait_header(page, "sagittal", after["sagittal"] + 1)

    # window preset
    bone = _src(page, "axial")
    page.get_by_label("Window").click()  # the selectbox
    page.get_by_role("option", name="Soft tissue").click()
    expect(page.locator(".sv[data-plane=axial] .sv-img")).not_to_have_attribute("src", bone)
    screenshot(page, "viewer-soft-tissue")

    # hide a vertebra: its name leaves the sagittal plane and the legend strikes it out
    labels = page.locator(".sv[data-plane=sagittal] .sv-label")
    assert "C3" in labels.all_inner_texts()
    page.get_by_role("button", name="C3", exact=True).click()
    expect(page.locator("s", has_text="C3")).to_be_visible()
    expect(labels.filter(has_text=re.compile(r"^C3$"))).to_have_count(0)
    page.get_by_role("button", name="C3", exact=True).click()
    expect(labels.filter(has_text=re.compile(r"^C3$"))).to_have_count(1)

    # one large plane
    page.get_by_text("Sagittal", exact=True).click()
    expect(page.locator(".sv")).to_have_count(1)
    page.wait_for_timeout(300)
    screenshot(page, "viewer-sagittal-large")

    # the 3-D view
    page.get_by_role("radio", name="3D").click()
    plot = page.locator(".js-plotly-plot")
    plot.wait_for()
    expect(plot.locator(".legendtext", has_text=re.compile(r"^C2$"))).to_have_count(1)
    page.wait_for_timeout(1500)  # WebGL draws the meshes
    screenshot(page, "viewer-3d")

    # sign out: back to the sign-in form, and no page is reachable any more
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("User name", exact=True)).to_be_visible()
    page.goto(app_url + "/viewer")
    expect(page.get_by_label("User name", exact=True)).to_be_visible()
    assert page.locator(".sv-img").count() == 0


def test_demonstration_page(page: Any, app_url: str) -> None:
    sign_in(page, app_url, "viewer")
    page.get_by_role("link", name="Demonstration").click()
    expect(page.get_by_role("heading", name="Demonstration")).to_be_visible()
    expect(page.locator(".sv-img")).to_have_count(2)
    expect(page.get_by_text(re.compile("No prediction yet for this study"))).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "demo")
