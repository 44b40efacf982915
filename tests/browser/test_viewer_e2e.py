"""The app in a real Chromium: sign-in, the case browser, the three-plane viewer (keyboard and
slider stepping, linked cursor by click, window presets, vertebra toggles, one large plane), the
3-D view, the demonstration page and signing out; wrong passwords and signed-out visitors.

Runs against the app started by tests/browser/conftest.py (its own SQLite and two demo studies).
Screenshots of the main screens land in test-artifacts/screenshots/ for the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.conftest import screenshot, settle, sign_in, submit_sign_in, tick_grid_row

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = None

WS_ROOT = "[data-testid=sv-root]"


def _index(page: Any, plane: str = "axial") -> int:
    """The slice index (0-based) the client-side viewer shows in a plane."""
    return int(page.locator(f"[data-testid=sv-vp-{plane}] .sv-info").get_attribute("data-index"))


def _wait_index(page: Any, value: int, plane: str = "axial") -> None:
    expect(page.locator(f"[data-testid=sv-vp-{plane}] .sv-info")).to_have_attribute(
        "data-index", str(value), timeout=10_000)


def _params(page: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def _wait_url_slice(page: Any, number: int) -> None:
    page.wait_for_function(
        "n => new URLSearchParams(location.search).get('slice') === String(n)", arg=number,
        timeout=10_000)


def _wait_viewer(page: Any) -> None:
    page.locator(f"{WS_ROOT}[data-complete='1']").wait_for(timeout=60_000)
    settle(page, 0.8)


def _after_history(page: Any) -> None:
    """After Back/Forward: the page's run is over (a viewer remounted for a slice the browser
    had committed lately replaces the old one at its end) and the viewer holds its volume."""
    settle(page, 1.0)
    expect(page.locator(WS_ROOT)).to_have_count(1)
    _wait_viewer(page)


def _step_to(page: Any, plane_index: int) -> None:
    """Step the axial plane with the arrow keys to ``plane_index`` and let it settle (commit)."""
    page.locator(WS_ROOT).focus()
    while (current := _index(page)) != plane_index:
        page.keyboard.press("ArrowUp" if plane_index > current else "ArrowDown")
        _wait_index(page, current + (1 if plane_index > current else -1))
    _wait_url_slice(page, plane_index + 1)
    settle(page, 0.5)


def _segment(page: Any, name: str) -> Any:
    """An option of a segmented control (layout, plane)."""
    return page.locator("[data-testid=stButtonGroup]").get_by_text(name, exact=True)


def _open_first_case(page: Any) -> None:
    """Select the first row of the case table (its row checkbox) -> the viewer opens."""
    table = page.locator("[data-testid=stDataFrame]").first
    table.locator("canvas").first.wait_for()
    tick_grid_row(page, table, 0, page.locator(WS_ROOT))
    _wait_viewer(page)


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
    assert page.locator(".sv-img").count() == 0 and page.locator(WS_ROOT).count() == 0
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
    expect(page.get_by_text(f"Study {uid}")).to_be_visible()
    # the study and its slice are in the address; the viewer, the caption and the address agree
    params = _params(page)
    assert params["study"] == uid and params["plane"] == "axial" and "s" not in params
    number = int(params["slice"])
    assert _index(page) == number - 1
    n = int(re.search(r"/ ?(\d+)", page.locator("[data-testid=sv-vp-axial] .sv-info").inner_text()
                      ).group(1))  # type: ignore[union-attr]
    expect(page.get_by_text(re.compile(rf"^Axial {number}/{n} · z = .* · instance number \d+")
                            )).to_be_visible()
    screenshot(page, "viewer-one-plane")

    # keyboard: ↑ steps one slice in the browser; once settled, the address and caption follow
    _step_to(page, number)  # one slice up
    expect(page.get_by_text(re.compile(rf"^Axial {number + 1}/{n} · "))).to_be_visible()

    # vertebra colours: the viewer's level panel hides one level's colour
    panel = page.locator("[data-testid=sv-labels-panel]")
    panel.locator("summary").click()
    assert panel.locator("input[data-id]").count() >= 5
    panel.locator("input[data-id]").first.uncheck()
    expect(panel.locator("input[data-id]").first).not_to_be_checked()
    panel.locator("input[data-id]").first.check()
    panel.locator("summary").click()

    # three linked planes
    _segment(page, "Three planes").click()
    for plane in ("axial", "sagittal", "coronal"):
        expect(page.locator(f"[data-testid=sv-vp-{plane}]")).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "viewer-three-planes")
    _segment(page, "One plane").click()
    expect(page.locator("[data-testid=sv-vp-sagittal]")).to_be_hidden()

    # the 3-D view, in the tab beside the slices
    page.get_by_role("tab", name="3-D vertebrae").click()
    plot = page.locator(".js-plotly-plot")
    plot.wait_for()
    expect(plot.locator(".legendtext", has_text=re.compile(r"^C2$"))).to_have_count(1)
    page.wait_for_timeout(1500)  # WebGL draws the meshes
    screenshot(page, "viewer-3d")
    page.get_by_role("tab", name="Slices").click()
    expect(page.locator(WS_ROOT)).to_be_visible()

    # sign out: back to the sign-in form, and no page is reachable any more
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("User name", exact=True)).to_be_visible()
    page.goto(app_url + "/viewer")
    expect(page.get_by_label("User name", exact=True)).to_be_visible()
    assert page.locator(WS_ROOT).count() == 0


def _viewer_url(page: Any, app_url: str, uid: str, number: int, plane: str = "axial") -> str:
    """A deep link; the browser's session cookie keeps the reader signed in."""
    return f"{app_url}/viewer?study={uid}&plane={plane}&slice={number}"


def test_deep_link_reload_back_and_forward(page: Any, app_url: str, app_env: dict[str, str]
                                           ) -> None:
    sign_in(page, app_url, "viewer")
    uid = _demo_study_uids(app_env)[0]
    page.goto(_viewer_url(page, app_url, uid, 20))
    _wait_viewer(page)
    expect(page.get_by_text(f"Study {uid}")).to_be_visible()
    assert _index(page) == 19
    expect(page.get_by_text(re.compile(r"^Axial 20/\d+ · "))).to_be_visible()
    # reload: the same study and slice
    page.reload()
    _wait_viewer(page)
    assert _index(page) == 19 and _params(page)["slice"] == "20"
    # two settled places, then Back and Forward between them
    _step_to(page, 24)
    _step_to(page, 29)
    # Back and Forward move the viewer that holds the volume: nothing is streamed again
    page.locator(WS_ROOT).evaluate("r => { r.dataset.kept = 'yes'; }")
    chunks = page.locator(WS_ROOT).evaluate("r => r.svTimeline.length")
    page.go_back()
    _wait_url_slice(page, 25)
    _after_history(page)
    _wait_index(page, 24)
    expect(page.get_by_text(re.compile(r"^Axial 25/\d+ · "))).to_be_visible()
    page.go_forward()
    _wait_url_slice(page, 30)
    _after_history(page)
    _wait_index(page, 29)
    assert page.locator(WS_ROOT).get_attribute("data-kept") == "yes"
    assert page.locator(WS_ROOT).evaluate("r => r.svTimeline.length") == chunks
    # a deep link to a sagittal slice opens that plane
    page.goto(_viewer_url(page, app_url, uid, 33, "sagittal"))
    _wait_viewer(page)
    assert _index(page, "sagittal") == 32


def test_the_volume_arrives_over_the_route_with_no_rerun(page: Any, app_url: str,
                                                         app_env: dict[str, str]) -> None:
    """Opening a study fetches the chunks from /spine-volume/ (the session's grant), sends the
    page no trigger for them, and a reload reads them from the browser's cache."""
    chunk_urls: list[str] = []
    page.on("request", lambda r: chunk_urls.append(r.url) if "/spine-volume/" in r.url else None)
    sign_in(page, app_url, "viewer")
    uid = _demo_study_uids(app_env)[0]
    page.goto(_viewer_url(page, app_url, uid, 20))
    _wait_viewer(page)
    root = page.locator(WS_ROOT)
    assert root.get_attribute("data-transport") == "fetch"
    plan = root.evaluate("r => r.svWorkstation.vol.plan.length")
    assert root.evaluate("r => r.svTimeline.length") == plan
    # the slice on screen comes with the page's frame, every other chunk over the route
    assert len(chunk_urls) == plan - 1 and all(re.search(r"/spine-volume/[0-9a-f]{40}/\d+-\d+$", u)
                                           for u in chunk_urls)
    assert root.evaluate("r => r.svWorkstation.channel.sent") == 0  # no trigger, no rerun
    first = set(chunk_urls)
    # a reload asks for the same URLs and the browser's cache answers them
    page.reload()
    _wait_viewer(page)
    assert set(chunk_urls) == first
    cached = page.evaluate(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/spine-volume/'))"
        ".map(e => e.transferSize)")
    assert cached and all(size == 0 for size in cached), cached
    assert page.locator(WS_ROOT).evaluate("r => r.svWorkstation.channel.sent") == 0


def _fail_once(status: int, failed: list[str]) -> Callable[[Any], None]:
    """A Playwright route handler: the first chunk request answered ``status``, the rest served."""

    def handle(route: Any) -> None:
        if not failed:
            failed.append(route.request.url)
            route.fulfill(status=status, body="refused for the test")
        else:
            route.continue_()

    return handle


def test_a_failed_chunk_is_fetched_again_and_a_refusal_falls_back_to_reruns(
        browser: Any, app_url: str, app_env: dict[str, str]) -> None:
    """A 503 (a replica going away) is retried; a 403 makes the viewer take the rest through
    the page's reruns, with one line of text and the whole volume in the end."""
    uid = _demo_study_uids(app_env)[0]
    for status, transport in ((503, "fetch"), (403, "rerun")):
        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
        page = ctx.new_page()
        failed: list[str] = []
        page.route(re.compile(r".*/spine-volume/.*"), _fail_once(status, failed))
        sign_in(page, app_url, "viewer")
        page.goto(_viewer_url(page, app_url, uid, 12))
        _wait_viewer(page)
        root = page.locator(WS_ROOT)
        assert failed and root.get_attribute("data-transport") == transport
        fetched = root.evaluate("r => r.svWorkstation.streamer.fetched")
        if transport == "fetch":
            assert failed[0] in fetched  # asked again, and this time it came
            assert root.evaluate("r => r.svWorkstation.channel.sent") == 0
        else:
            assert root.evaluate("r => r.svWorkstation.channel.sent") > 0
            note = root.locator(".sv-note").text_content() or ""
            assert re.search(r"volume route refused \(403 .*\); streaming through the page", note)
            assert "\n" not in note
        ctx.close()


def test_a_grant_unknown_to_the_server_is_fetched_again_once_the_page_brings_it(
        browser: Any, app_url: str, app_env: dict[str, str]) -> None:
    """A 404 (a replica that has not run this reader's page yet does not know the grant) is tried
    a few times, then the viewer asks the page; the page's answer brings the same chunk URL, and
    the viewer fetches from it again (it used to stay on reruns for good)."""
    uid = _demo_study_uids(app_env)[0]
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    failed: list[str] = []

    def unknown_at_first(route: Any) -> None:
        if len(failed) < 15:  # enough for one chunk to use up its tries (3 fetched at once)
            failed.append(route.request.url)
            route.fulfill(status=404, body="this volume link is unknown or expired; reload the page")
        else:
            route.continue_()

    page.route(re.compile(r".*/spine-volume/.*"), unknown_at_first)
    sign_in(page, app_url, "viewer")
    page.goto(_viewer_url(page, app_url, uid, 12))
    _wait_viewer(page)
    root = page.locator(WS_ROOT)
    note = root.locator(".sv-note").text_content() or ""
    assert len(failed) >= 5, failed  # GRANT_TRIES of one chunk at least
    assert root.evaluate("r => r.svWorkstation.channel.sent") > 0  # it did ask the page
    assert re.search(r"volume route refused \(404 .*\); streaming through the page", note), note
    assert root.get_attribute("data-transport") == "fetch"
    assert root.evaluate("r => r.svWorkstation.streamer.fetched.length") > 0
    ctx.close()


def test_wheel_and_keys_step_without_a_rerun(browser: Any, app_url: str,
                                             app_env: dict[str, str]) -> None:
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    sent: list[Any] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    sign_in(page, app_url, "viewer")
    uid = _demo_study_uids(app_env)[0]
    page.goto(_viewer_url(page, app_url, uid, 40))
    _wait_viewer(page)
    page.locator(WS_ROOT).focus()
    page.wait_for_timeout(800)
    start = _index(page)  # the deep link's slice 40 (index 39) is asserted in the history test
    frames0 = len(sent)
    img = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").bounding_box()
    page.mouse.move(img["x"] + img["width"] / 2, img["y"] + img["height"] / 2)
    page.mouse.wheel(0, 100)
    _wait_index(page, start - 1)  # one notch: one slice (towards the feet)
    page.mouse.wheel(0, -100)
    _wait_index(page, start)
    for _ in range(8):
        page.keyboard.press("ArrowUp")
        page.wait_for_timeout(40)
    _wait_index(page, start + 8)
    assert len(sent) == frames0, "stepping sent websocket frames (a Streamlit rerun)"
    _wait_url_slice(page, start + 9)  # once settled: one commit for the address
    ctx.close()


@pytest.mark.parametrize("size", [(1024, 700), (1440, 900), (1920, 1080)])
def test_the_large_plane_fits_the_window(browser: Any, app_url: str, app_env: dict[str, str],
                                         size: tuple[int, int]) -> None:
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    sign_in(page, app_url, "viewer")
    uid = _demo_study_uids(app_env)[0]
    page.goto(_viewer_url(page, app_url, uid, 30))
    _wait_viewer(page)
    root = page.locator(WS_ROOT).bounding_box()  # the viewer with its status bar
    assert root["y"] + root["height"] <= size[1] + 0.5, "the viewer runs below the window"
    vp = page.locator("[data-testid=sv-vp-axial]").bounding_box()
    img = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").bounding_box()
    assert vp["x"] >= 0 and vp["y"] >= 0
    assert vp["x"] + vp["width"] <= size[0] + 0.5 and vp["y"] + vp["height"] <= size[1] + 0.5
    assert img["x"] >= vp["x"] - 0.5 and img["y"] >= vp["y"] - 0.5
    assert img["x"] + img["width"] <= vp["x"] + vp["width"] + 0.5
    assert img["y"] + img["height"] <= vp["y"] + vp["height"] + 0.5
    assert min(img["width"], img["height"]) >= 200, "the large plane is too small to read"
    screenshot(page, f"viewer-page-{size[0]}x{size[1]}")
    ctx.close()


def test_demonstration_page(page: Any, app_url: str) -> None:
    sign_in(page, app_url, "viewer")
    page.get_by_role("link", name="Demonstration").click()
    expect(page.get_by_role("heading", name="Demonstration")).to_be_visible()
    # no curated list and no prediction on the demo studies (test_prediction_e2e may have added
    # one): either the page says how cases appear, or it shows the predicted study as a case
    expect(page.get_by_text(re.compile(r"^No case to show yet")).or_(
        page.get_by_role("heading", name=re.compile(r"^Model: ")))).to_be_visible()
    assert page.get_by_role("textbox").count() == 0  # read-only for the viewer
    page.wait_for_timeout(300)
    screenshot(page, "demo")
