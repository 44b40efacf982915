"""End to end in Chromium: a model prediction from the viewer to the reader's work and the admin's
pages.

reader1 opens a study in the viewer and asks for its prediction: the progress shows, then the
result (summary, per-level probabilities, timings), and in the client-side viewer the model's boxes
on the slice of a box (their own toggle) and the predicted mask as the overlay. reader1 copies that
box into their own work on the annotation page; the database holds it as reader1's, with source
"prediction", and reader2 does not see it (blinding). The admin finds the model version and its
charts on the Models page, and prediction and truth side by side on the Demonstration page. No page
shows a traceback.

The study is imported for this test alone: the demo studies are too small for the shipped weights
to flag a level (no box to copy) and their readers have submitted (nothing to copy into), and other
browser tests expect them unpredicted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spine_core.colours import EXPLANATION_COLOUR, MODEL_COLOUR
from tests.browser.conftest import (
    ROOT,
    app_db,
    open_page,
    screenshot,
    set_expander,
    settle,
    sign_in,
    tick_grid_row,
)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
PlaywrightTimeout: Any
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = PlaywrightTimeout = None

#: Dataset seed whose one study is positive (a C6 fracture) and which the shipped demo weights flag
#: at this size (C6 at 0.97, boxes on 13 slices); its UID sorts after the demo studies' first, so
#: the Demonstration page still opens on an unpredicted study for test_viewer_e2e.
SEED = 4124
SHAPE = (96, 160, 160)
MODEL = "spinereview-demo 0.1.0"


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    """Give the page's assertions 20 s instead of 5 s (reruns are slower while other tests load
    the two cores); restored after the test."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def flagged_study(app_url: str, app_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """A synthetic RSNA study with a fracture, no readers' work, assigned to reader1 and reader2,
    imported into the running app's database; returns its UID."""
    from sqlalchemy import select

    from db import annotations as ann
    from db import models as m
    from db.session import unit_of_work
    from db.workspace import open_workspace
    from spine_core.config import load_settings
    from spine_core.phantom.rsna_layout import write_rsna_dataset

    root = tmp_path_factory.mktemp("e2e-prediction") / "data"
    manifest = write_rsna_dataset(root, n_studies=1, seed=SEED, shape=SHAPE, workers=1,
                                  n_readers=0)
    (study,) = manifest.studies
    assert study.fractured, f"seed {SEED} no longer gives a fractured study"
    demo_csv = Path(app_env["SPINE_DATA_DIR"]) / "demo" / "train.csv"
    demo_uids = [line.split(",")[0] for line in demo_csv.read_text().splitlines()[1:]]
    assert study.study_uid > min(demo_uids), "the Demonstration page would open on this study"
    subprocess.run([sys.executable, "-m", "spine_cli.main", "import", str(root), "--no-progress"],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    ws = open_workspace(load_settings(dict(app_env)))
    with unit_of_work(ws.sessions) as session:
        admin = session.scalars(select(m.User).where(m.User.username == "admin")).one()
        readers = session.scalars(select(m.User.id).where(
            m.User.username.in_(["reader1", "reader2"]))).all()
        study_id = session.scalars(select(m.Study.id).where(
            m.Study.study_uid == study.study_uid)).one()
        ann.assign(session, admin, study_id, readers)
    return study.study_uid


# --- page helpers ----------------------------------------------------------------------------


def no_traceback(page: Any) -> None:
    """No Python traceback, exception block or unexpected-failure message anywhere on the page."""
    assert page.locator("[data-testid=stException]").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    assert page.get_by_text("failed unexpectedly").count() == 0
    assert page.locator("[data-testid=stAlertContentError]").count() == 0


def open_study_in_viewer(page: Any, uid: str) -> None:
    """Search the case list for ``uid`` and select its row (its checkbox): the viewer opens."""
    page.get_by_role("textbox", name="Search").fill(uid)
    page.get_by_role("textbox", name="Search").press("Enter")
    expect(page.get_by_text(re.compile(r"^Studies 1–1 of 1\."))).to_be_visible()
    table = page.locator("[data-testid=stDataFrame]").first
    tick_grid_row(page, table, 0, page.locator("[data-testid=sv-root]"))
    wait_viewer(page)
    expect(page.get_by_text(f"Study {uid}")).to_be_visible()


def wait_viewer(page: Any) -> None:
    """The client-side viewer holds the whole volume and the page's run is over."""
    settle(page, 1.0)
    expect(page.locator("[data-testid=sv-root]")).to_have_count(1)
    page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)


def axial_index(page: Any) -> int:
    """The axial slice (0-based display index) the client-side viewer shows."""
    return int(page.locator("[data-testid=sv-vp-axial] .sv-info").get_attribute("data-index"))


def go_to_axial(page: Any, number: int) -> None:
    """Step the axial plane to slice ``number`` (1-based, as the viewer shows it) with PgUp/PgDn
    and the arrow keys in the viewer, waiting for each step, then for the address to follow."""
    info = page.locator("[data-testid=sv-vp-axial] .sv-info")
    page.locator("[data-testid=sv-root]").focus()
    while (current := axial_index(page) + 1) != number:
        diff = number - current
        if abs(diff) >= 10:
            key, step = ("PageUp", 10) if diff > 0 else ("PageDown", -10)
        else:
            key, step = ("ArrowUp", 1) if diff > 0 else ("ArrowDown", -1)
        page.keyboard.press(key)
        expect(info).to_have_attribute("data-index", str(current + step - 1))
    page.wait_for_function(
        "n => new URLSearchParams(location.search).get('slice') === String(n)", arg=number)
    settle(page)


def box_colour_pixels(page: Any, colour: tuple[int, int, int], box: dict[str, Any]) -> int:
    """Pixels of ``colour`` the viewer's overlay canvas draws around a stored box's outline (a
    standard axial stack: stored x, y are the axial image's columns and rows)."""
    vp = page.locator("[data-testid=sv-vp-axial]").bounding_box()
    img = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").bounding_box()
    width, height = (int(v) for v in page.locator("[data-testid=sv-vp-axial] canvas.sv-img")
                     .evaluate("c => [c.width, c.height]"))
    sx, sy = img["width"] / width, img["height"] / height
    x0 = img["x"] - vp["x"] + box["x"] * sx - 6
    y0 = img["y"] - vp["y"] + box["y"] * sy - 6
    w, h = box["width"] * sx + 12, box["height"] * sy + 12
    return int(page.locator("[data-testid=sv-vp-axial] canvas.sv-ov").evaluate(
        """(c, a) => {
          const dpr = c.width / c.getBoundingClientRect().width;
          const d = c.getContext('2d').getImageData(Math.max(0, a.x * dpr), Math.max(0, a.y * dpr),
                                                    Math.max(1, a.w * dpr), Math.max(1, a.h * dpr)).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3] > 200 && Math.abs(d[i] - a.r) < 40 && Math.abs(d[i + 1] - a.g) < 40
                && Math.abs(d[i + 2] - a.b) < 40) n++;
          }
          return n;
        }""", {"x": x0, "y": y0, "w": w, "h": h, "r": colour[0], "g": colour[1], "b": colour[2]}))


def flip(page: Any, name: str) -> None:
    """Click a st.toggle by its label and wait for the rerun."""
    switch = page.get_by_role("switch", name=name)
    before = switch.is_checked()
    page.locator("[data-testid=stCheckbox]").filter(has=switch).locator("label").click()
    settle(page, 1.0)
    expect(switch).to_be_checked(checked=not before)


def watch_progress(page: Any) -> None:
    """Remember (in the page) whether a progress bar saying "Predicting this study" ever showed:
    a fast prediction may end between two screenshots."""
    page.evaluate("""() => {
      window.__progress = [];
      new MutationObserver(() => {
        for (const el of document.querySelectorAll('[data-testid=stProgress]')) {
          const t = el.innerText;
          if (t.includes('Predicting this study') && !window.__progress.includes(t))
            window.__progress.push(t);
        }
      }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")


def open_annotation_at(page: Any, app_url: str, uid: str, display_index: int) -> None:
    """Reload the annotation page on ``uid`` at display slice ``display_index`` (0-based; the URL
    carries the number the viewer shows, ``display_index + 1``), staying signed in with the
    browser's session cookie."""
    page.goto(f"{app_url}/annotate?study={uid}&slice={display_index + 1}")
    page.get_by_role("button", name="Sign out").wait_for()
    settle(page, 1.5)
    page.get_by_text(uid).first.wait_for()
    wait_viewer(page)
    assert axial_index(page) == display_index


# --- database helpers ------------------------------------------------------------------------


def prediction_row(app_env: dict[str, str], uid: str) -> dict[str, Any]:
    with app_db(app_env) as con:
        rows = con.execute(
            "SELECT mv.name, mv.version, p.patient_probability, p.level_probabilities, p.boxes, "
            "p.timings, p.backend, p.created_by, p.mask_path FROM predictions p "
            "JOIN model_versions mv ON mv.id = p.model_version_id "
            "JOIN studies s ON s.id = p.study_id WHERE s.study_uid = ?", (uid,)).fetchall()
    assert len(rows) == 1, rows
    name, version, patient, levels, boxes, timings, backend, by, mask = rows[0]
    return {"model": f"{name} {version}", "patient": patient, "levels": json.loads(levels),
            "boxes": json.loads(boxes), "timings": json.loads(timings), "backend": backend,
            "created_by": by, "mask_path": mask}


def axial_display_index(app_env: dict[str, str], uid: str, slice_index: int) -> int:
    """The display slice (0-based) of stored slice ``slice_index``, from the series geometry the
    import recorded."""
    from spine_core.annotation_geometry import display_index_of
    from spine_core.render import DisplayGeometry

    with app_db(app_env) as con:
        shape, affine = con.execute(
            "SELECT se.shape, se.affine FROM series se JOIN studies s ON s.id = se.study_id "
            "WHERE s.study_uid = ?", (uid,)).fetchone()
    geometry = DisplayGeometry.from_affine(json.loads(shape), np.asarray(json.loads(affine)))
    return display_index_of(geometry, slice_index)


def reader_boxes(app_env: dict[str, str], uid: str) -> list[tuple[Any, ...]]:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT u.username, b.source, b.slice_index, b.x, b.y, b.width, b.height, b.level "
            "FROM boxes b JOIN users u ON u.id = b.reader_id JOIN studies s ON s.id = b.study_id "
            "WHERE s.study_uid = ? AND b.deleted_at IS NULL AND b.source != 'dataset' "
            "ORDER BY b.id", (uid,)).fetchall()


# --- the journey -----------------------------------------------------------------------------


def test_prediction_from_viewer_to_reader_work_and_admin_pages(
    app_url: str, app_env: dict[str, str], flagged_study: str, contexts: Any,
) -> None:
    uid = flagged_study

    # -- 1. reader1 asks for the prediction in the viewer ------------------------------------------
    r1 = contexts()
    sign_in(r1, app_url, "reader1")
    open_study_in_viewer(r1, uid)
    expect(r1.get_by_text("Model prediction · none yet for this study")).to_be_visible()
    assert r1.get_by_role("switch", name="Predicted mask").count() == 0
    watch_progress(r1)
    r1.get_by_role("button", name="Predict this study").click()
    try:  # screenshot the progress when the page shows it long enough
        r1.locator("[data-testid=stProgress]").wait_for(timeout=5_000)
        screenshot(r1, "prediction-01-progress")
    except PlaywrightTimeout:  # a fast prediction: the observer still says whether it showed
        pass
    expect(r1.get_by_text("The prediction was stored and is drawn on the slices.")).to_be_visible(
        timeout=120_000)
    settle(r1)
    progress = r1.evaluate("() => window.__progress")
    assert progress and any("asked by you" in t for t in progress), progress

    row = prediction_row(app_env, uid)
    assert row["model"] == MODEL
    assert row["created_by"] == "reader1"
    assert row["backend"].startswith("local")
    assert row["timings"]["total"] > 0 and row["timings"]["segmentation"] > 0
    assert Path(row["mask_path"]).is_file()
    assert row["boxes"], (f"the model flagged no level of seed {SEED} (levels: {row['levels']}): "
                          "choose a seed whose study the shipped weights flag")
    detections = [b for b in row["boxes"] if not b.get("explanation")]
    explanations = [b for b in row["boxes"] if b.get("explanation") is True]
    assert detections and explanations, row["boxes"]  # the detector's boxes and Grad-CAM's
    n_boxes = len(detections)
    summary = r1.get_by_text(re.compile(rf"^Model prediction · {re.escape(MODEL)} · .* by you · "
                                        rf"patient fracture probability {row['patient']:.2f} · "
                                        rf"{n_boxes} boxes$"))
    expect(summary).to_be_visible()

    # per-level probabilities and timings (the grid's cells are in the DOM, for screen readers)
    details = set_expander(r1, "Probabilities per level, timings", expanded=True)
    expect(details.get_by_text(re.compile(r"^Timings: .*total \d+\.\d\d s"))).to_be_visible()
    expect(details.get_by_text(re.compile(r"^Ran on: local"))).to_be_visible()
    expect(details.locator("[data-testid=stMetricValue]")).to_have_text(f"{row['patient']:.2f}")
    flagged = max(row["levels"], key=row["levels"].get)
    for level in ("C1", flagged):
        details.get_by_text(level, exact=True).first.wait_for(state="attached")
    details.get_by_text(f"{row['levels'][flagged]:.2f}", exact=True).first.wait_for(
        state="attached")
    screenshot(r1, "prediction-02-result")
    no_traceback(r1)
    set_expander(r1, "Probabilities per level, timings", expanded=False)  # the slices show

    # -- the predicted box's slice: the box, its label and the mask outline -------------------------
    boxes = sorted(detections, key=lambda b: b["slice_index"])
    target = boxes[len(boxes) // 2]
    display = axial_display_index(app_env, uid, target["slice_index"])
    go_to_axial(r1, display + 1)
    assert axial_index(r1) == display
    expect(r1.get_by_text(re.compile(rf"^Axial {display + 1}/\d+ · "))).to_be_visible()
    # the model's box, in the model's colour, on its slice (the overlay canvas draws it)
    assert box_colour_pixels(r1, MODEL_COLOUR, target) > 20
    r1.wait_for_timeout(300)  # let the images paint
    screenshot(r1, "prediction-03-viewer-box-and-mask")
    flip(r1, "Predicted boxes")  # off: no model box
    r1.wait_for_timeout(300)
    assert box_colour_pixels(r1, MODEL_COLOUR, target) == 0
    flip(r1, "Predicted boxes")
    r1.wait_for_timeout(300)
    assert box_colour_pixels(r1, MODEL_COLOUR, target) > 20
    # the classifier's Grad-CAM, on request, in its own colour
    why = sorted(explanations, key=lambda b: b["slice_index"])[len(explanations) // 2]
    go_to_axial(r1, axial_display_index(app_env, uid, why["slice_index"]) + 1)
    r1.wait_for_timeout(300)
    assert box_colour_pixels(r1, EXPLANATION_COLOUR, why) == 0  # off by default
    flip(r1, "Grad-CAM")
    r1.wait_for_timeout(300)
    assert box_colour_pixels(r1, EXPLANATION_COLOUR, why) > 20
    screenshot(r1, "prediction-03b-viewer-grad-cam")
    flip(r1, "Grad-CAM")
    go_to_axial(r1, display + 1)
    # the model's mask instead of the dataset's in the viewer's level colours
    r1.get_by_role("combobox", name="Overlay").click()  # the selectbox
    r1.get_by_role("option", name="Model's mask").click()
    wait_viewer(r1)
    assert ":prediction" in str(r1.locator("[data-testid=sv-root]").get_attribute("data-volume"))
    assert axial_index(r1) == display  # the same slice
    no_traceback(r1)

    # -- 2. reader1 copies the box into their own work ------------------------------------------------
    assert reader_boxes(app_env, uid) == []
    open_annotation_at(r1, app_url, uid, display)
    expect(r1.get_by_text(f"Model's boxes on this slice (1) · {MODEL}")).to_be_visible()
    expect(r1.get_by_text(re.compile(r"^Boxes on this slice \(0\) · axial \d+$"))).to_be_visible()
    expect(r1.get_by_text(re.compile(
        rf"^{target['level']} · score {target['score']:.2f} · "))).to_be_visible()
    r1.get_by_role("button", name="Copy", exact=True).click()
    settle(r1, 1.5)
    expect(r1.get_by_text(re.compile(r"^Boxes on this slice \(1\) · axial \d+$"))).to_be_visible()
    expect(r1.get_by_role("button", name="Copied", exact=True)).to_be_disabled()
    saved = reader_boxes(app_env, uid)
    assert len(saved) == 1, saved
    who, source, slice_index, x, y, w, h, level = saved[0]
    assert (who, source, slice_index, level) == (
        "reader1", "prediction", target["slice_index"], target["level"])
    assert np.allclose([x, y, w, h], [target[k] for k in ("x", "y", "width", "height")],
                       atol=0.5)
    screenshot(r1, "prediction-04-reader1-copied")
    no_traceback(r1)

    # reader2 does not see reader1's copy (the model's own box is there for them to copy)
    r2 = contexts()
    sign_in(r2, app_url, "reader2")
    open_annotation_at(r2, app_url, uid, display)
    expect(r2.get_by_text(f"Model's boxes on this slice (1) · {MODEL}")).to_be_visible()
    expect(r2.get_by_text(re.compile(r"^Boxes on this slice \(0\) · axial \d+$"))).to_be_visible()
    expect(r2.get_by_role("button", name="Copy", exact=True)).to_be_enabled()
    assert r2.get_by_role("button", name="Copied", exact=True).count() == 0
    no_traceback(r2)

    # -- 3. the admin: Models page and Demonstration page --------------------------------------------
    admin = contexts()
    sign_in(admin, app_url, "admin")
    open_page(admin, "Models", pause=2.0)
    expect(admin.get_by_role("heading", name="Models")).to_be_visible()
    expect(admin.get_by_role("combobox", name="Model version")).to_have_value(
        re.compile(rf"^{re.escape(MODEL)} · \d+ studies predicted"))
    plots = admin.locator(".js-plotly-plot")
    plots.first.wait_for()
    expect(plots.filter(has_text="Mean Dice per level")).to_have_count(1)
    expect(plots.filter(has_text="Mean Dice per level").locator(".bars .point").first
           ).to_be_attached()
    plots.filter(has_text="Mean Dice per level").scroll_into_view_if_needed()
    admin.wait_for_timeout(500)
    screenshot(admin, "prediction-05-models")
    no_traceback(admin)

    open_page(admin, "Demonstration")
    expect(admin.get_by_role("heading", name="Demonstration")).to_be_visible()
    # no curated list: the predicted studies are the cases; this one is the only one predicted
    expect(admin.get_by_role("combobox", name="Case")).to_have_value(
        re.compile(rf"^1 of 1 · .* · …{re.escape(uid[-8:])}$"))
    admin.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=60_000)
    expect(admin.get_by_text(re.compile(r"^Model card: .*SYNTHETIC"))).to_be_visible()
    expect(admin.locator(".demo-legend-truth")).to_be_visible()
    admin.get_by_role("radio", name="Prediction (the model)").or_(
        admin.get_by_role("button", name="Prediction (the model)")).first.click()
    settle(admin, 1.5)
    expect(admin.locator(".demo-legend-model")).to_contain_text("the model's fracture box")
    expect(admin.get_by_role("heading", name=re.compile(
        rf"^Model: likely fracture, {100 * row['patient']:.0f} %$"))).to_be_visible()
    admin.wait_for_timeout(300)
    screenshot(admin, "prediction-06-demo")
    no_traceback(admin)

