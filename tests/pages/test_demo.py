"""The Demonstration page through AppTest on a tiny real dataset (RSNA layout, imported, predicted
by a real threshold model): the cases in words, the presenter keys, the viewer read-only, and the
admin's list editor (the only write, and only for admins)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import demo_cases
from db import models as m
from db.predictions import predict_study
from db.session import unit_of_work
from db.workspace import Workspace
from pages.parts.common import SignedInUser, workspace
from spine_core.inference.protocol import ModelInfo
from tests.app_helpers import workstation_view
from tests.backend_helpers import BoneThresholdPredictor
from tests.prediction_helpers import import_dataset, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 90
CARD_LINE = "Trained on SYNTHETIC phantom CT only (no patient data)."
#: The only buttons a viewer sees: they move between cases, change what is shown, none writes.
NAVIGATION = ("Previous case", "Next case", "Presenter mode", "Leave presenter mode",
              "Truth or prediction")


class CardedPredictor(BoneThresholdPredictor):
    def info(self) -> ModelInfo:
        return ModelInfo("bone-threshold", "1.0", {"intended_use": CARD_LINE})


@dataclass
class Scene:
    ws: Workspace
    users: dict[str, SignedInUser]
    study_ids: list[int]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("demo-page")
    dataset = write_tiny_dataset(root / "data", n_studies=3, seed=11)
    imported = import_dataset(dataset, f"sqlite:///{root / 'var' / 'spine.db'}", root / "var")
    ws = imported.ws
    for study_id in imported.study_ids:
        predict_study(ws, CardedPredictor(), study_id, actor="test")
    with unit_of_work(ws.sessions) as s:
        for name, role in (("admin", "admin"), ("viewer", "viewer")):
            s.add(m.User(username=name, display_name=name, role=role, password_hash="!"))
        s.flush()
        users = {u.username: SignedInUser(u.id, u.username, u.display_name, u.role)
                 for u in s.scalars(select(m.User))}
    return Scene(ws, users, imported.study_ids)


@pytest.fixture(autouse=True)
def pages_on_scene(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the pages at the scene's database (the suite clears SPINE_* before each test)."""
    monkeypatch.setenv("SPINE_DB_URL", scene.ws.settings.db_url)
    monkeypatch.setenv("SPINE_DATA_DIR", str(scene.ws.settings.data_dir))
    monkeypatch.setenv("SPINE_WORKERS", "1")
    workspace.clear()
    yield
    workspace.clear()


def page(user: SignedInUser) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "demo.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = user
    return at.run()


def shown_text(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("title", "header", "subheader", "markdown", "caption",
                                       "warning", "info", "success", "error")
             for e in getattr(at, kind)]
    parts += [str(h.proto.body) for h in at.get("html")]
    for frame in at.dataframe:
        parts += [str(v) for v in frame.value.to_numpy().ravel()]
    case = at.selectbox(key="demo_case")
    parts += [case.format_func(o) for o in case.options_values] if hasattr(
        case, "options_values") else list(case.options)
    return "\n".join(parts)


def test_a_viewer_steps_through_cases_in_words_and_cannot_edit(scene: Scene) -> None:
    at = page(scene.users["viewer"])
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not at.info, [e.value for e in at.info]
    text = shown_text(at)
    assert CARD_LINE in text  # the model card's first line
    assert "model: " in text and re.search(r"(likely|unlikely) fracture, \d+ %", text)
    assert "Truth: the dataset's fracture box" in text  # the legend of what is shown
    for code in ("not_fractured", "readers_vs_report", "None", "nan"):
        assert code not in text.split(), code
    assert not re.search(r"\b[\d.]{40,}\b", text), "a bare UID is shown"
    options = list(at.selectbox(key="demo_case").options)
    assert len(options) == 3 and options[0].startswith("1 of 3 · ")
    # read-only: no text fields, no form, the workstation not editable, no editor expander
    assert not at.text_input and not at.text_area
    assert not [b for b in at.button if b.label not in NAVIGATION]
    view = workstation_view(at)
    assert view["editable"] is False and view["layout"] == "three"
    # presenter keys: next and previous case, the shortcut keys on the buttons
    nxt = next(b for b in at.button if b.label == "Next case")
    assert nxt.proto.shortcut and next(b for b in at.button if b.label == "Previous case").disabled
    nxt.click().run()
    assert at.selectbox(key="demo_case").value == 1
    assert at.header[0].value != ""
    next(b for b in at.button if b.label == "Previous case").click().run()
    assert at.selectbox(key="demo_case").value == 0
    at.segmented_control(key="demo_show").set_value("model").run()
    assert not at.exception, at.exception
    assert "Prediction: the model's fracture box" in shown_text(at)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def html_bodies(at: AppTest) -> str:
    return "\n".join(str(h.proto.body) for h in at.get("html"))


def test_presenter_keys_switch_truth_and_prediction_and_fill_the_screen(scene: Scene) -> None:
    at = page(scene.users["viewer"])
    assert not at.exception, at.exception
    keys = html_bodies(at)
    for key, what in (("→", "next case"), ("←", "previous case"), ("F", "presenter mode"),
                      ("Esc", "leave presenter mode"), ("P", "truth or prediction")):
        assert f"<b>{key}</b> {what}" in keys, key
    # P: truth or prediction, each with its legend
    switch = button(at, "Truth or prediction")
    assert switch.proto.shortcut.lower() == "p"
    assert "Truth: the dataset's fracture box" in shown_text(at)
    switch.click().run()
    assert at.segmented_control(key="demo_show").value == "model"
    text = shown_text(at)
    assert "Prediction: the model's fracture box" in text
    assert "Truth: the dataset's fracture box" not in text
    button(at, "Truth or prediction").click().run()
    assert at.segmented_control(key="demo_show").value == "truth"
    assert "Truth: the dataset's fracture box" in shown_text(at)
    # F: presenter mode (no sidebar, no header, large text, the levels as a plain table)
    on = button(at, "Presenter mode")
    assert on.proto.shortcut.lower() == "f"
    assert "display: none" not in html_bodies(at)
    on.click().run()
    assert not at.exception, at.exception
    bodies = html_bodies(at)
    assert 'section[data-testid="stSidebar"]' in bodies and "display: none" in bodies
    assert "const on = true" in bodies  # the browser's full screen is asked for
    assert at.table and not at.dataframe
    assert workstation_view(at)["editable"] is False
    assert not [b for b in at.button if b.label not in NAVIGATION]
    off = button(at, "Leave presenter mode")
    assert off.proto.shortcut.lower() == "escape"
    off.click().run()
    bodies = html_bodies(at)
    assert "display: none" not in bodies and "const on = false" in bodies
    assert at.dataframe and button(at, "Presenter mode")


def test_presenter_mode_hides_the_admins_list_editor(scene: Scene) -> None:
    at = page(scene.users["admin"])
    assert at.text_input(key="demo_add_title")  # the editor, outside presenter mode
    button(at, "Presenter mode").click().run()
    assert not at.exception, at.exception
    assert not at.text_input and not at.text_area and not at.expander
    button(at, "Leave presenter mode").click().run()
    assert at.text_input(key="demo_add_title")


def test_the_admin_builds_the_list_that_the_viewer_then_sees(scene: Scene) -> None:
    at = page(scene.users["admin"])
    assert not at.exception, at.exception
    study = scene.study_ids[-1]
    at.selectbox(key="demo_add_study").set_value(study)
    at.selectbox(key="demo_add_level").set_value("C2")
    at.text_input(key="demo_add_title").input("C2 fracture the report missed")
    at.text_area(key="demo_add_note").input("Look at the dens.")
    next(b for b in at.button if b.label == "Add the case").click().run()
    assert not at.exception, at.exception
    assert any("Adding the case: done." in s.value for s in at.success)
    try:
        viewer = page(scene.users["viewer"])
        options = list(viewer.selectbox(key="demo_case").options)
        assert len(options) == 1 and "C2 fracture the report missed" in options[0]
        assert viewer.header[0].value == "C2 fracture the report missed"
        assert any("Look at the dens." in md.value for md in viewer.markdown)
    finally:
        with unit_of_work(scene.ws.sessions) as s:
            admin = s.get(m.User, scene.users["admin"].id)
            for case in demo_cases.curated_cases(s):
                assert case.id is not None and admin is not None
                demo_cases.remove_case(s, admin, case.id)
