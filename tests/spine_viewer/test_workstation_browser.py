"""The client-side viewer in Debian's Chromium, on tests/spine_viewer/viewer_app.py (a synthetic
60×128×128 volume, spacing 2.0 × 0.5 × 0.5 mm, voxel values from ``synthetic_value``).

Covers: the first slice, wheel and key stepping (no press lost, no rerun, no websocket frame),
window/level drag, zoom/pan/reset, HU and position read-out, the length tool, three linked planes,
boxes (draw/move/delete: exactly one event and one rerun each, clipping, zero-size refusal), the
key map, focus, and layouts that fit from 1024×700 to 1920×1080.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import screenshot, settle
from tests.spine_viewer.viewer_app import SPACING, synthetic_value

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = None

SHAPE = (60, 128, 128)


@pytest.fixture(scope="module")
def app(viewer_app: Any) -> Any:
    return viewer_app(SPINE_VIEWER_SHAPE="x".join(map(str, SHAPE)))


@pytest.fixture
def open_viewer(browser: Any, app: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def go(query: str = "", width: int = 1600, height: int = 1000) -> Any:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{app.url}/?{query}")
        page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
        settle(page, 1.0)
        return page

    yield go
    for ctx in contexts:
        ctx.close()


def index(page: Any, plane: str = "axial") -> int:
    return int(page.locator(f"[data-testid=sv-vp-{plane}] .sv-info").get_attribute("data-index"))


def wait_index(page: Any, value: int, plane: str = "axial") -> None:
    expect(page.locator(f"[data-testid=sv-vp-{plane}] .sv-info")).to_have_attribute(
        "data-index", str(value), timeout=5000)


def image_box(page: Any, plane: str = "axial") -> dict[str, float]:
    return page.locator(f"[data-testid=sv-vp-{plane}] canvas.sv-img").bounding_box()


def pixel_on_screen(page: Any, col: float, row: float, plane: str = "axial") -> tuple[float, float]:
    """Screen point of image pixel centre (col, row) of a plane."""
    w, h = {"axial": (SHAPE[2], SHAPE[1]), "coronal": (SHAPE[2], SHAPE[0]),
            "sagittal": (SHAPE[1], SHAPE[0])}[plane]
    b = image_box(page, plane)
    return b["x"] + (col + 0.5) / w * b["width"], b["y"] + (row + 0.5) / h * b["height"]


def runs(page: Any) -> int:
    text = page.locator("[data-testid=runs]").inner_text()
    return int(re.search(r"runs (\d+)", text).group(1))  # type: ignore[union-attr]


def events(page: Any) -> list[dict[str, Any]]:
    text = page.locator("[data-testid=stCode]").inner_text().strip()
    return [] if text == "no events" else [json.loads(line) for line in text.splitlines()]


def focus(page: Any) -> None:
    page.locator("[data-testid=sv-root]").focus()


# ---- loading and stepping -----------------------------------------------------------------------


def test_first_slice_appears(open_viewer: Any) -> None:
    page = open_viewer()
    assert index(page) == SHAPE[0] // 2
    assert page.locator("[data-testid=sv-vp-axial] .sv-info").inner_text() == "Axial 31 / 60"
    # the painted pixels are the windowed slice, not the "pending" colour
    centre = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(5, 5, 1, 1).data)")
    hu = int(synthetic_value(SHAPE[0] // 2, 5, 5))
    grey = round(min(255, max(0, (hu - (400 - 900)) * 255 / 1800)))
    assert centre[:3] == [grey, grey, grey] and centre[3] == 255
    assert float(page.locator("[data-testid=sv-root]").get_attribute("data-first-paint")) > 0
    screenshot(page, "viewer-single")


def test_wheel_steps_one_slice_per_notch(open_viewer: Any) -> None:
    page = open_viewer()
    start = index(page)
    x, y = pixel_on_screen(page, 64, 64)
    page.mouse.move(x, y)
    for _ in range(3):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(60)
    wait_index(page, start - 3)
    page.mouse.wheel(0, -100)
    wait_index(page, start - 2)


def test_twenty_presses_at_50_ms_all_land_without_rerun_or_frame(browser: Any, app: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    sent: list[Any] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(app.url)
    page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
    settle(page, 1.5)
    focus(page)
    page.wait_for_timeout(600)  # the focus click commits nothing, but let any debounce pass
    start, runs0, frames0 = index(page), app.runs(), len(sent)
    for _ in range(20):
        page.keyboard.press("ArrowUp")
        page.wait_for_timeout(50)
    wait_index(page, start + 20)
    assert len(sent) == frames0, "the browser sent websocket frames while stepping"
    assert app.runs() == runs0, "stepping reran the script"
    # held key: repeated keydowns (autorepeat) land one slice each
    for _ in range(15):
        page.keyboard.down("ArrowDown")
        page.wait_for_timeout(30)
    page.keyboard.up("ArrowDown")
    wait_index(page, start + 5)
    assert len(sent) == frames0 and app.runs() == runs0
    # once the reader stops, one debounced slice commit goes to Python (one rerun)
    page.wait_for_timeout(1200)
    settle(page, 0.5)
    assert len(sent) == frames0 + 1
    assert app.runs() == runs0 + 1
    assert page.locator("[data-testid=committed]").inner_text() == f"axial {start + 5}"
    ctx.close()


def test_page_keys_home_end(open_viewer: Any) -> None:
    page = open_viewer()
    focus(page)
    start = index(page)
    page.keyboard.press("PageUp")
    wait_index(page, start + 10)
    page.keyboard.press("PageDown")
    page.keyboard.press("PageDown")
    wait_index(page, start - 10)
    page.keyboard.press("End")
    wait_index(page, SHAPE[0] - 1)
    page.keyboard.press("Home")
    wait_index(page, 0)


def test_ctrl_drag_scrolls_slices(open_viewer: Any) -> None:
    page = open_viewer()
    start = index(page)
    x, y = pixel_on_screen(page, 64, 64)
    page.keyboard.down("Control")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y - 40, steps=8)
    page.mouse.up()
    page.keyboard.up("Control")
    wait_index(page, start + 10)
    # the middle button does the same without a modifier
    page.mouse.move(x, y)
    page.mouse.down(button="middle")
    page.mouse.move(x, y + 20, steps=4)
    page.mouse.up(button="middle")
    wait_index(page, start + 5)


def test_full_screen_on_f(open_viewer: Any) -> None:
    page = open_viewer()
    focus(page)
    page.keyboard.press("f")
    page.wait_for_function("() => !!document.fullscreenElement")
    root = page.locator("[data-testid=sv-root]").bounding_box()
    assert root["height"] == pytest.approx(1000, abs=2) and root["width"] == pytest.approx(1600, abs=2)
    page.keyboard.press("f")
    page.wait_for_function("() => !document.fullscreenElement")


# ---- window, zoom, pan, read-outs -------------------------------------------------------------


def _window(page: Any) -> tuple[int, int]:
    page.wait_for_timeout(50)  # the status bar is written with the next frame
    w = page.locator("[data-testid=sv-window]")
    return int(w.get_attribute("data-width")), int(w.get_attribute("data-level"))


def expect_window(page: Any, width: int, level: int) -> None:
    w = page.locator("[data-testid=sv-window]")
    expect(w).to_have_attribute("data-width", str(width))
    expect(w).to_have_attribute("data-level", str(level))


def test_right_drag_changes_the_window_and_presets(open_viewer: Any) -> None:
    page = open_viewer()
    assert _window(page) == (1800, 400)
    x, y = pixel_on_screen(page, 64, 64)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 60, y + 40, steps=6)
    page.mouse.up(button="right")
    width, level = _window(page)
    assert width > 1800 and level != 400
    focus(page)
    page.keyboard.press("2")
    expect_window(page, 400, 40)
    page.keyboard.press("3")
    expect_window(page, 80, 40)
    page.keyboard.press("1")
    expect_window(page, 1800, 400)
    page.keyboard.press("2")
    expect_window(page, 400, 40)
    page.keyboard.press("r")
    expect_window(page, 1800, 400)


def test_a_radiograph_s_own_presets_on_keys_1_2_3_and_in_the_key_map(open_viewer: Any) -> None:
    """Detector values are not HU: a page passes the film's own windows; the keys and the help
    follow them."""
    page = open_viewer("units=px&presets=3000:1500:the file's window;4000:2000:full range;"
                       "900:2600:bone detail")
    focus(page)
    page.keyboard.press("3")
    expect_window(page, 900, 2600)
    page.keyboard.press("2")
    expect_window(page, 4000, 2000)
    page.keyboard.press("1")
    expect_window(page, 3000, 1500)
    page.keyboard.press("?")
    help_text = page.locator("[data-testid=sv-help]").inner_text()
    assert "window: bone detail (900/2600)" in help_text
    assert "window: full range (4000/2000)" in help_text
    assert "1800/400" not in help_text


def test_a_film_is_one_image_with_the_letters_of_its_edges(open_viewer: Any) -> None:
    """A radiograph (``film``): titled "Film" without a slice count, its edges lettered from
    PatientOrientation (not axial's A/P/R/L), and the plane and layout keys change nothing."""
    page = open_viewer("units=px&film=H,F,A,P")
    axial = page.locator("[data-testid=sv-vp-axial]")
    expect(axial.locator(".sv-info")).to_have_text("Film")
    letters = [axial.locator(f".sv-letter.sv-{side}").inner_text()
               for side in ("top", "bottom", "left", "right")]
    assert letters == ["H", "F", "A", "P"]
    focus(page)
    for key in ("s", "c", "t"):
        page.keyboard.press(key)
        page.wait_for_timeout(100)
        assert axial.is_visible()
        assert not page.locator("[data-testid=sv-vp-sagittal]").is_visible()
        assert not page.locator("[data-testid=sv-vp-coronal]").is_visible()
    expect(page.get_by_text("a radiograph is one image: no other plane to show")).to_be_visible()


def test_zoom_pan_reset(open_viewer: Any) -> None:
    page = open_viewer()
    runs0 = runs(page)
    fit = image_box(page)
    focus(page)
    page.keyboard.press("+")
    page.wait_for_timeout(100)
    zoomed = image_box(page)
    assert zoomed["width"] == pytest.approx(fit["width"] * 1.25, rel=0.01)
    x, y = pixel_on_screen(page, 64, 64)
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y + 30, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    panned = image_box(page)
    assert panned["x"] == pytest.approx(zoomed["x"] + 50, abs=1)
    assert panned["y"] == pytest.approx(zoomed["y"] + 30, abs=1)
    # space + drag pans too
    page.keyboard.down(" ")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 20, y, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    assert image_box(page)["x"] == pytest.approx(panned["x"] - 20, abs=1)
    # ctrl+wheel zooms at the pointer: the pixel under it stays
    px, py = pixel_on_screen(page, 40, 40)
    page.mouse.move(px, py)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    page.wait_for_timeout(100)
    assert pixel_on_screen(page, 40, 40) == pytest.approx((px, py), abs=1.5)
    page.keyboard.press("R")
    page.wait_for_timeout(100)
    assert image_box(page) == pytest.approx(fit, abs=0.5)
    assert runs(page) == runs0, "'r' must not reach Streamlit's rerun shortcut"


def test_hu_and_position_under_the_pointer(open_viewer: Any) -> None:
    page = open_viewer()
    k = index(page)
    col, row = 40, 50
    page.mouse.move(*pixel_on_screen(page, col, row))
    hu = page.locator("[data-testid=sv-hu]")
    expect(page.locator("[data-testid=sv-pos]")).to_have_attribute("data-voxel", f"{k},{row},{col}")
    assert int(hu.get_attribute("data-hu")) == int(synthetic_value(k, row, col))
    lps = (col * SPACING[2], row * SPACING[1], k * SPACING[0])
    assert page.locator("[data-testid=sv-pos]").inner_text() == (
        f"L {lps[0]:.1f} P {lps[1]:.1f} S {lps[2]:.1f} mm")


def test_length_measurement(open_viewer: Any) -> None:
    page = open_viewer()
    focus(page)
    page.keyboard.press("m")
    a = pixel_on_screen(page, 20, 30)
    b = pixel_on_screen(page, 80, 110)
    page.mouse.click(*a)
    page.mouse.click(*b)
    expected = ((60 * SPACING[2]) ** 2 + (80 * SPACING[1]) ** 2) ** 0.5
    expect(page.locator("[data-testid=sv-measure]")).to_have_attribute("data-mm", re.compile(r"\d"))
    mm = float(page.locator("[data-testid=sv-measure]").get_attribute("data-mm"))
    assert mm == pytest.approx(expected, abs=0.3)
    assert page.locator("[data-testid=sv-measure]").inner_text() == f"length {mm:.1f} mm"


def test_an_image_without_spacing_measures_and_reads_out_in_pixels(open_viewer: Any) -> None:
    """A radiograph whose spacing is unknown (the page passes length_unit "px", no value unit)."""
    page = open_viewer("units=px")
    focus(page)
    page.mouse.move(*pixel_on_screen(page, 40, 50))
    expect(page.locator("[data-testid=sv-pos]")).to_have_text(re.compile(r" px$"))
    assert not page.locator("[data-testid=sv-hu]").inner_text().endswith("HU")
    page.keyboard.press("m")
    page.mouse.click(*pixel_on_screen(page, 20, 30))
    page.mouse.click(*pixel_on_screen(page, 80, 110))
    expect(page.locator("[data-testid=sv-measure]")).to_have_attribute("data-mm", re.compile(r"\d"))
    length = float(page.locator("[data-testid=sv-measure]").get_attribute("data-mm"))
    assert page.locator("[data-testid=sv-measure]").inner_text() == f"length {length:.1f} px"


# ---- three planes -----------------------------------------------------------------------------


def test_three_planes_link_their_crosshairs(open_viewer: Any) -> None:
    page = open_viewer("layout=three")
    for plane in ("axial", "sagittal", "coronal"):
        assert page.locator(f"[data-testid=sv-vp-{plane}]").is_visible()
    page.mouse.click(*pixel_on_screen(page, 30, 40, "axial"))
    wait_index(page, 30, "sagittal")
    wait_index(page, 40, "coronal")
    # sagittal image: x = row, y = K-1-slice
    page.mouse.click(*pixel_on_screen(page, 70, SHAPE[0] - 1 - 12, "sagittal"))
    wait_index(page, 12, "axial")
    wait_index(page, 70, "coronal")
    assert index(page, "sagittal") == 30
    # the wheel over a plane steps that plane
    page.mouse.move(*pixel_on_screen(page, 64, 30, "coronal"))
    page.mouse.wheel(0, -100)
    wait_index(page, 71, "coronal")
    screenshot(page, "viewer-three-planes")


@pytest.mark.parametrize("size", [(1024, 700), (1920, 1080), (2560, 1440)])
@pytest.mark.parametrize("layout", ["single", "three"])
def test_layouts_fit_without_clipping(open_viewer: Any, size: tuple[int, int], layout: str) -> None:
    page = open_viewer(f"layout={layout}", *size)
    root = page.locator("[data-testid=sv-root]").bounding_box()
    assert root["x"] >= 0 and root["y"] >= 0
    assert root["x"] + root["width"] <= size[0] + 0.5
    assert root["y"] + root["height"] <= size[1] + 0.5
    planes = ["axial", "sagittal", "coronal"] if layout == "three" else ["axial"]
    for plane in planes:
        vp = page.locator(f"[data-testid=sv-vp-{plane}]").bounding_box()
        img = image_box(page, plane)
        assert img["x"] >= vp["x"] - 0.5 and img["y"] >= vp["y"] - 0.5
        assert img["x"] + img["width"] <= vp["x"] + vp["width"] + 0.5
        assert img["y"] + img["height"] <= vp["y"] + vp["height"] + 0.5
        # fits: touches two opposite sides of its viewport
        assert (img["width"] >= vp["width"] - 1) or (img["height"] >= vp["height"] - 1)
        if layout == "three":
            assert vp["width"] >= root["width"] / 3 - 2
    # aspect follows the spacing (sagittal: 128 rows × 0.5 mm wide, 60 slices × 2 mm high)
    if layout == "three":
        sag = image_box(page, "sagittal")
        assert sag["height"] / sag["width"] == pytest.approx((60 * 2.0) / (128 * 0.5), rel=0.02)
    screenshot(page, f"viewer-{layout}-{size[0]}x{size[1]}")


# ---- boxes --------------------------------------------------------------------------------------


def _drag(page: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=6)
    page.mouse.up()


def _wait_events(page: Any, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        settle(page, 0.3)
        got = events(page)
        if len(got) >= n:
            return got
    return events(page)


def test_box_draw_move_delete_one_event_each(open_viewer: Any, app: Any) -> None:
    page = open_viewer("editable=1&boxes=1")
    k = index(page)
    focus(page)
    page.keyboard.press("b")
    runs0 = app.runs()
    _drag(page, pixel_on_screen(page, 60, 70), pixel_on_screen(page, 90, 95))
    got = _wait_events(page, 1)
    assert [e["type"] for e in got] == ["created"]
    assert app.runs() == runs0 + 1, "one box change, one rerun"
    ev = got[0]
    assert ev["slice"] == k and ev["base_version"] is None
    assert (ev["x0"], ev["y0"]) == pytest.approx((60.5, 70.5), abs=0.6)
    assert (ev["x1"], ev["y1"]) == pytest.approx((90.5, 95.5), abs=0.6)
    # the page stored it as box-1 (version 1); move it by its body
    runs1 = app.runs()
    _drag(page, pixel_on_screen(page, 75, 80), pixel_on_screen(page, 85, 90))
    got = _wait_events(page, 2)
    assert [e["type"] for e in got] == ["created", "changed"]
    assert got[1]["id"] == "box-1" and got[1]["base_version"] == 1
    assert got[1]["x0"] == pytest.approx(ev["x0"] + 10, abs=0.6)
    assert app.runs() == runs1 + 1
    # drag its bottom-right handle outside the image: clipped to the image
    _drag(page, pixel_on_screen(page, got[1]["x1"] - 0.5, got[1]["y1"] - 0.5),
          pixel_on_screen(page, 200, 200))
    got = _wait_events(page, 3)
    assert got[2]["type"] == "changed" and got[2]["base_version"] == 2
    assert (got[2]["x1"], got[2]["y1"]) == (SHAPE[2], SHAPE[1])
    # select it and delete it with the Delete key
    page.mouse.click(*pixel_on_screen(page, 100, 110))
    page.keyboard.press("Delete")
    got = _wait_events(page, 4)
    assert got[3]["type"] == "deleted" and got[3]["id"] == "box-1" and got[3]["base_version"] == 3
    # a click without a drag is a zero-size box: refused, with a note, and nothing sent
    runs2 = app.runs()
    page.mouse.click(*pixel_on_screen(page, 30, 100))
    note = page.locator("[data-testid=sv-note]")
    assert note.is_visible() and "refused" in note.inner_text()
    page.wait_for_timeout(800)
    assert app.runs() == runs2 and len(events(page)) == 4
    screenshot(page, "viewer-boxes")


def test_interpolated_and_other_reader_boxes_are_read_only(open_viewer: Any) -> None:
    page = open_viewer("editable=1&boxes=1")
    focus(page)
    page.keyboard.press("b")
    # the other reader's box on this slice: dragging its body draws a new box instead of moving it
    _drag(page, pixel_on_screen(page, 30, 30), pixel_on_screen(page, 40, 40))
    got = _wait_events(page, 1)
    assert [e["type"] for e in got] == ["created"]


def test_boxes_not_editable_without_permission(open_viewer: Any) -> None:
    page = open_viewer("boxes=1")
    focus(page)
    page.keyboard.press("b")
    assert "read-only" in page.locator("[data-testid=sv-note]").inner_text()
    _drag(page, pixel_on_screen(page, 60, 70), pixel_on_screen(page, 90, 95))
    page.wait_for_timeout(800)
    assert events(page) == []


# ---- help, labels, focus ------------------------------------------------------------------------


def test_key_map_and_focus(open_viewer: Any) -> None:
    page = open_viewer()
    page.mouse.click(*pixel_on_screen(page, 64, 64))
    assert page.evaluate(
        "() => document.querySelector('[data-testid=stBidiComponentIsolated]').shadowRoot"
        ".activeElement?.dataset.testid") == "sv-root"
    page.keyboard.press("?")
    help_box = page.locator("[data-testid=sv-help]")
    assert help_box.is_visible()
    assert "next slice" in help_box.inner_text() and "PgUp" in help_box.inner_text()
    page.keyboard.press("Escape")
    assert not help_box.is_visible()


def test_label_overlay_names_and_toggles(open_viewer: Any) -> None:
    page = open_viewer()
    # slice 30 lies in the band of level 4 (bands of 8 slices, C7 at the bottom)
    assert page.locator("[data-testid=sv-vp-axial] .sv-levels").inner_text() == "C4"
    panel = page.locator("[data-testid=sv-labels-panel]")
    panel.locator("summary").click()
    assert panel.locator("input[data-id]").count() == 7
    centre = "c => Array.from(c.getContext('2d').getImageData(64, 64, 1, 1).data)"
    canvas = page.locator("[data-testid=sv-vp-axial] canvas.sv-img")
    tinted = canvas.evaluate(centre)
    panel.locator("input[data-id='4']").uncheck()
    page.wait_for_timeout(150)
    plain = canvas.evaluate(centre)
    assert plain[0] == plain[1] == plain[2] and tinted != plain
    # the level stays named (where am I?) while its colour is off; the overlay switch hides all
    assert page.locator("[data-testid=sv-vp-axial] .sv-levels").inner_text() == "C4"
    focus(page)
    page.keyboard.press("l")
    page.wait_for_timeout(100)
    assert page.locator("[data-testid=sv-vp-axial] .sv-levels").inner_text() == ""


def test_sagittal_and_coronal_name_each_level_beside_it(open_viewer: Any) -> None:
    page = open_viewer("layout=three")
    for plane in ("sagittal", "coronal"):
        vp = page.locator(f"[data-testid=sv-vp-{plane}]")
        marks = page.locator("[data-testid=sv-root]").evaluate(
            f"r => r.svWorkstation.vps.{plane}.marks.map(m => [m.name, m.y])")
        # head to feet: C1 at the top of the image, C7 at the bottom, one name per level
        assert [name for name, _ in sorted(marks, key=lambda m: m[1])] == [
            "C1", "C2", "C3", "C4", "C5", "C6", "C7"], marks
        # written beside the levels, not as one line in the corner (where the letters are)
        assert vp.locator(".sv-levels").inner_text() == ""
    assert page.locator("[data-testid=sv-vp-axial] .sv-levels").inner_text() == "C4"


# ---- streaming, fragments, refusal --------------------------------------------------------------


def test_streaming_inside_a_fragment_reruns_only_the_fragment(browser: Any, app: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{app.url}/?fragment=1&chunk_mb=0.1")  # 3 slices per chunk: 20 chunk reruns
    page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
    settle(page, 1.0)
    chunks = page.locator("[data-testid=sv-root]").evaluate("e => e.svTimeline.length")
    assert chunks >= 20
    assert runs(page) == 1, "the chunk reruns must not rerun the whole page"
    ctx.close()


def test_volume_above_the_browser_limit_is_refused_with_a_message(browser: Any, app: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{app.url}/?limit=100000")
    alert = page.locator("[data-testid=stAlert]")
    alert.wait_for(timeout=30_000)
    assert "server-rendered" in alert.inner_text()
    assert page.locator("[data-testid=sv-root]").count() == 0
    ctx.close()
