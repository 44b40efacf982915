"""End to end in Chromium, as ``viewer``: the Demonstration page steps through three curated cases
with the presenter keys (→ / ←), each with its title, the legend of what the viewer shows, the
labels in words, and no editing control anywhere (no text field, no enabled button that writes).

The three cases are curated for this test through ``db.demo_cases`` as the admin (the two demo
studies, one of them twice at another level) and removed at the end, so the other browser tests
see the page as they left it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import screenshot, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = None

TITLES = ("C2 fracture the report missed", "An intact cervical spine", "The same study at C5")
#: Buttons a viewer may see on the page: navigation only, none of them writes.
NAVIGATION = {"Previous case", "Next case", "Sign out", "Presenter mode", "Leave presenter mode",
              "Truth or prediction"}
#: The model the presenter test's prediction comes from (removed with it at the end).
MODEL = ("demo-e2e-presenter", "0.0.1")


@pytest.fixture
def curated(app_url: str, app_env: dict[str, str]) -> Iterator[list[int]]:
    from sqlalchemy import select

    from db import demo_cases
    from db import models as m
    from db.session import unit_of_work
    from db.workspace import open_workspace
    from spine_core.config import load_settings

    ws = open_workspace(load_settings(dict(app_env)))
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        studies = list(s.scalars(select(m.Study.id).order_by(m.Study.study_uid)))[:2]
        ids = [demo_cases.add_case(s, admin, studies[0], TITLES[0], "Look at the dens.", "C2"),
               demo_cases.add_case(s, admin, studies[1], TITLES[1], "", None),
               demo_cases.add_case(s, admin, studies[0], TITLES[2], "The lower levels.", "C5")]
    yield ids
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        for case_id in ids:
            demo_cases.remove_case(s, admin, case_id)


@pytest.fixture
def predicted(app_env: dict[str, str], curated: list[int]) -> Iterator[int]:
    """A prediction (one box at C2, no mask) on the first curated study, so that the viewer has
    truth and prediction to switch between; removed at the end with its model version, so the
    other browser tests see the demo studies unpredicted."""
    import numpy as np
    from sqlalchemy import delete, select

    from db import models as m
    from db.predictions import store_prediction
    from db.session import unit_of_work
    from db.workspace import open_workspace
    from spine_core.config import load_settings
    from spine_core.inference.protocol import ModelInfo, PredictedBox, StudyPrediction

    ws = open_workspace(load_settings(dict(app_env)))
    with unit_of_work(ws.sessions, readonly=True) as s:
        study_id = list(s.scalars(select(m.Study.id).order_by(m.Study.study_uid)))[0]
        series = s.scalars(select(m.Series).where(m.Series.study_id == study_id)).first()
        assert series is not None
        uid, shape = series.series_uid, tuple(int(n) for n in series.shape)
        affine = np.asarray(series.affine, dtype=float)
    info = ModelInfo(*MODEL, {"intended_use": "A test model of the presenter test."})
    box = PredictedBox(shape[0] // 2, shape[2] * 0.4, shape[1] * 0.4, shape[2] * 0.2,
                       shape[1] * 0.2, 0.91, "C2")
    result = StudyPrediction(info, None, {"C1": 0.08, "C2": 0.91, "C3": 0.2}, 0.91, [box])
    row = store_prediction(ws, study_id, uid, affine, shape,  # type: ignore[arg-type]
                           result, info, actor="test")
    assert row is not None
    yield study_id
    with unit_of_work(ws.sessions) as s:
        s.execute(delete(m.Prediction).where(m.Prediction.id == row.id))
        s.execute(delete(m.ModelVersion).where(m.ModelVersion.id == row.model_version_id))


def fresh(page: Any, selector: str) -> Any:
    """``selector`` outside the elements Streamlit keeps, marked stale, until a run ends (the last
    case's legend beside the next case's while the next one loads)."""
    return page.locator(f"{selector}:not([data-stale='true'] *)")


def run_over(page: Any) -> None:
    """Wait until no element of the last run is left stale (the run that the key started is
    over; the status widget alone may not have shown yet on a loaded machine)."""
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')",
                           timeout=60_000)


def no_editing_control(page: Any) -> None:
    """No text field, text area or number field, and no enabled button except navigation."""
    assert page.locator("[data-testid=stTextInput], [data-testid=stTextArea], "
                        "[data-testid=stNumberInput], [data-testid=stForm]").count() == 0
    for button in page.get_by_role("button").all():
        if not button.is_visible() or not button.is_enabled():
            continue
        name = (button.inner_text() or button.get_attribute("aria-label") or "").strip()
        name = re.sub(r"\s+", " ", name)
        assert any(nav in name for nav in NAVIGATION) or name in ("", "?") or \
            not re.search(r"(?i)\b(save|submit|add|remove|delete|vote|decide|copy|edit|up|down)\b",
                          name), f"an editing control: {name!r}"


def test_viewer_steps_through_three_cases_with_the_presenter_keys(
        page: Any, app_url: str, curated: list[int]) -> None:
    expect.set_options(timeout=30_000)
    try:
        sign_in(page, app_url, "viewer")
        page.get_by_role("link", name="Demonstration").click()
        settle(page, 1.5)
        expect(page.get_by_role("heading", name="Demonstration")).to_be_visible()
        for n, title in enumerate(TITLES):
            expect(page.get_by_role("heading", name=title)).to_be_visible()
            run_over(page)
            page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
            legend = fresh(page, ".demo-legend-truth")
            expect(legend).to_be_visible()
            expect(legend).to_contain_text("Truth: the dataset's fracture box")
            expect(legend).to_contain_text("Coloured vertebrae")
            expect(page.get_by_role("heading", name=re.compile(r"^Truth: (fractured at|no "
                                                              r"fracture|not known yet)"))
                   ).to_be_visible()
            expect(page.get_by_text("Model: no prediction for this study")).to_be_visible()
            body = page.locator("section.main, [data-testid=stMain]").first.inner_text()
            words = body.split()
            for code in ("not_fractured", "readers_vs_report", "None"):
                at = words.index(code) if code in words else -1
                assert at < 0, (code, " ".join(words[max(0, at - 12):at + 12]))
            assert not re.search(r"\d+(\.\d+){8,}", body), "a bare UID on the page"
            no_editing_control(page)
            screenshot(page, f"demo-case-{n + 1}")
            if n < len(TITLES) - 1:
                page.get_by_role("heading", name="Demonstration").click()  # focus off any widget
                page.keyboard.press("ArrowRight")  # the presenter key: next case
                settle(page, 1.5)
        expect(page.get_by_role("button", name=re.compile("Next case"))).to_be_disabled()
        page.get_by_role("heading", name="Demonstration").click()
        page.keyboard.press("ArrowLeft")  # previous case
        settle(page, 1.5)
        expect(page.get_by_role("heading", name=TITLES[1])).to_be_visible()
        page.get_by_role("button", name=re.compile("Previous case")).click()
        settle(page, 1.5)
        expect(page.get_by_role("heading", name=TITLES[0])).to_be_visible()
        assert page.locator("[data-testid=stException]").count() == 0
        assert page.get_by_text("Traceback").count() == 0
    finally:
        expect.set_options(timeout=None)


def font_px(locator: Any) -> float:
    return float(locator.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))


def press(page: Any, key: str) -> None:
    """Press a presenter key with the focus beside the images (inside them the viewer's keys
    hold), then wait for the run it starts."""
    page.get_by_role("heading", name=TITLES[0]).or_(
        page.get_by_role("heading", name=TITLES[1])).first.click()
    page.keyboard.press(key)
    settle(page, 1.5)
    run_over(page)


def test_presenter_mode_and_truth_or_prediction_by_key(
        page: Any, app_url: str, predicted: int) -> None:
    """F puts the whole demonstration in presenter mode (no sidebar or header, larger text, the
    browser's full screen where it allows it), Esc leaves it; P switches between the truth and the
    prediction, each with its legend; → still steps on in presenter mode; nothing edits."""
    expect.set_options(timeout=30_000)
    try:
        sign_in(page, app_url, "viewer")
        page.get_by_role("link", name="Demonstration").click()
        settle(page, 1.5)
        title = page.get_by_role("heading", name=TITLES[0])
        expect(title).to_be_visible()
        page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
        keys = page.locator(".demo-keys")
        for text in ("→ next case", "← previous case", "F presenter mode", "Esc leave presenter "
                     "mode", "P truth or prediction"):
            expect(keys).to_contain_text(text)
        # P: the prediction with its legend in place of the truth, and back
        expect(fresh(page, ".demo-legend-truth")).to_contain_text("Truth: the dataset's")
        press(page, "p")
        legend = fresh(page, ".demo-legend-model")
        expect(legend).to_contain_text("Prediction: the model's fracture box, with its "
                                       "probability (1)")
        expect(legend).to_contain_text("No coloured vertebrae: the model predicted no vertebra mask")
        expect(fresh(page, ".demo-legend-truth")).to_have_count(0)
        expect(page.get_by_role("heading", name="Model: likely fracture, 91 %")).to_be_visible()
        viewer_root = page.locator("[data-testid=sv-root]")  # the images without a vertebra mask
        expect(viewer_root).to_have_attribute("data-volume", re.compile(r":no-mask$"))
        press(page, "p")
        expect(viewer_root).not_to_have_attribute("data-volume", re.compile(r":no-mask$"))
        expect(fresh(page, ".demo-legend-truth")).to_be_visible()
        expect(fresh(page, ".demo-legend-model")).to_have_count(0)

        # F: presenter mode over the whole page
        sidebar = page.locator("[data-testid=stSidebar]")
        expect(sidebar).to_be_visible()
        title_px, note_px = font_px(title), font_px(page.get_by_text("Look at the dens."))
        legend_px = font_px(fresh(page, ".demo-legend-truth"))
        box = page.locator("[data-testid=sv-root]").bounding_box()
        assert box is not None
        normal_width = box["width"]
        press(page, "f")
        expect(page.get_by_role("button", name=re.compile("Leave presenter mode"))).to_be_visible()
        expect(sidebar).to_be_hidden()
        expect(page.locator("header[data-testid=stHeader]")).to_be_hidden()
        assert font_px(title) >= 1.2 * title_px
        assert font_px(page.get_by_text("Look at the dens.")) >= 1.3 * note_px
        assert font_px(fresh(page, ".demo-legend-truth")) >= 1.3 * legend_px
        assert font_px(page.get_by_role("radio", name="Prediction (the model)").or_(
            page.get_by_role("button", name="Prediction (the model)")).first) >= 20
        viewer = page.locator("[data-testid=sv-root]").bounding_box()
        # the images whole on the screen, wider than beside the sidebar (the title beside them)
        assert viewer is not None and viewer["y"] + viewer["height"] <= 1000, viewer
        assert viewer["width"] >= 1.2 * normal_width, (viewer, normal_width)
        # the key press itself asked the browser for its full screen, of the whole page
        assert page.evaluate("document.fullscreenElement === document.documentElement")
        page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
        page.wait_for_timeout(300)
        screenshot(page, "demo-presenter")
        no_editing_control(page)
        table = fresh(page, "[data-testid=stTable]")  # the levels: the whole width, large text
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1600, box
        assert font_px(table.locator("td").first) >= 20
        page.wait_for_timeout(300)
        screenshot(page, "demo-presenter-levels")
        press(page, "p")  # the switch holds in presenter mode too
        expect(fresh(page, ".demo-legend-model")).to_be_visible()
        expect(sidebar).to_be_hidden()
        page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
        page.wait_for_timeout(300)
        screenshot(page, "demo-presenter-prediction")
        press(page, "ArrowRight")  # next case, still presenting
        expect(page.get_by_role("heading", name=TITLES[1])).to_be_visible()
        expect(sidebar).to_be_hidden()
        # Esc: back to the page as it was (and out of the browser's full screen)
        press(page, "Escape")
        expect(page.get_by_role("button", name=re.compile("^Presenter mode"))).to_be_visible()
        expect(sidebar).to_be_visible()
        assert page.evaluate("document.fullscreenElement") is None, "still full screen"
        assert page.locator("[data-testid=stException]").count() == 0
        assert page.get_by_text("Traceback").count() == 0
    finally:
        expect.set_options(timeout=None)
