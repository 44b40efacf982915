"""Model predictions beside the human work, through Streamlit's AppTest on a real workspace: a tiny
imported phantom dataset (real DICOM + NIfTI) in SQLite, the demo users, and the real threshold
model of ``tests.backend_helpers`` behind our HTTP backend on loopback (or run in-process).

Viewer: asking for a prediction shows the predictor's progress, stores the prediction and draws it
(outlined mask, boxes with scores, probabilities); an unreachable or too slow backend gives a
clear message and a retry, and stores nothing. Annotation page: a reader copies predicted boxes
into their own work (``source="prediction"``), which only they (and adjudicators) see.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import annotations as ann
from db import models as m
from db.prediction_runs import RUNS
from db.predictions import predict_study
from db.session import unit_of_work
from db.users import ensure_demo_users
from pages.parts.common import SignedInUser, workspace
from pages.parts.viewer_parts import forget_studies, load_study
from spine_core.annotation_geometry import display_index_of
from spine_core.colours import EXPLANATION_COLOUR, MODEL_COLOUR
from spine_core.inference.protocol import StudyPrediction
from spine_core.inference.server import create_app
from spine_core.progress import Progress
from spine_core.volume import Volume
from tests.app_helpers import fast_scrypt, workstation_view
from tests.backend_helpers import (
    TOKEN,
    BoneThresholdPredictor,
    GatedPredictor,
    free_port,
    running_server,
    wait_for,
)
from tests.prediction_helpers import Imported, import_dataset, prediction_files, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny studies; with seed 11 the threshold model draws boxes on the first one."""
    return write_tiny_dataset(tmp_path_factory.mktemp("rsna") / "ds", n_studies=2, seed=11)


@dataclass
class Scene:
    imported: Imported
    users: dict[str, SignedInUser]
    monkeypatch: pytest.MonkeyPatch

    @property
    def study(self) -> int:
        return self.imported.study_ids[0]

    @property
    def database(self) -> str:
        return self.imported.ws.settings.database_url

    def use_backend(self, url: str, timeout_s: float | None = None) -> None:
        self.monkeypatch.setenv("SPINE_BACKEND_URL", url)
        self.monkeypatch.setenv("SPINE_BACKEND_TOKEN", TOKEN)
        if timeout_s is not None:
            self.monkeypatch.setenv("SPINE_BACKEND_TIMEOUT_S", str(timeout_s))
        workspace.clear()

    def predictions(self) -> list[m.Prediction]:
        with unit_of_work(self.imported.ws.sessions, readonly=True) as s:
            return list(s.scalars(select(m.Prediction)))

    def wait_for_run(self) -> None:
        run = RUNS.current(self.database, self.study)
        assert run is not None and run.wait(60), "the prediction run did not end"


@pytest.fixture
def scene(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    url = f"sqlite:///{tmp_path / 'spine.db'}"
    imported = import_dataset(dataset, url, tmp_path / "var")
    with fast_scrypt(), unit_of_work(imported.ws.sessions) as s:
        ensure_demo_users(s)
        users = {u.username: SignedInUser(u.id, u.username, u.display_name, u.role, u.is_chair)
                 for u in s.scalars(select(m.User))}
    monkeypatch.setenv("SPINE_DB_URL", url)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SPINE_WORKERS", "1")
    workspace.clear()
    forget_studies()
    yield Scene(imported, users, monkeypatch)
    run = RUNS.current(imported.ws.settings.database_url, imported.study_ids[0])
    if run is not None:
        run.wait(60)
    workspace.clear()
    forget_studies()


def page(script: str, user: SignedInUser, **state: Any) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / script), default_timeout=TIMEOUT)
    at.session_state["user"] = user
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def button(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[0]


def texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "error", "warning", "info", "success")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


def views(at: AppTest) -> dict[str, dict[str, Any]]:
    """What the viewer sent to each slice view, by plane."""
    return {d["plane"]: d for d in (json.loads(el.proto.json) for el in at.get("bidi_component"))
            if "plane" in d}


def pixels(data_uri: str) -> np.ndarray:
    raw = base64.b64decode(data_uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def model_pixels(rgb: np.ndarray) -> int:
    """Pixels painted exactly in the model's colour (opacity 1)."""
    return int(np.all(rgb == np.asarray(MODEL_COLOUR, dtype=np.uint8), axis=-1).sum())


def axial_number(study_id: int, stored_slice: int) -> int:
    """The viewer's axial slider value (1-based display slice) showing a stored slice."""
    return display_index_of(load_study(study_id).geometry, stored_slice) + 1


# --- the viewer --------------------------------------------------------------------------------


def test_predict_from_the_viewer_shows_progress_stores_and_draws_the_prediction(
        scene: Scene) -> None:
    gate = threading.Event()
    predictor = GatedPredictor(gate)
    app = create_app(lambda device: predictor, token=TOKEN, device="cpu")
    with running_server(app) as url:
        scene.use_backend(url)
        # the server-rendered fallback (a study too large for the browser) draws the predicted
        # mask and boxes into its PNGs; the client-side viewer's boxes are checked at the end
        reader = page("viewer.py", scene.users["reader1"], viewer_study_id=scene.study,
                      vw_browser_limit=1)
        assert not reader.exception, reader.exception
        assert "none yet for this study" in texts(reader)
        assert not [t for t in reader.toggle if t.key == "vw_pred_mask"]  # nothing to draw yet
        viewer = page("viewer.py", scene.users["viewer"], viewer_study_id=scene.study)
        assert not [b for b in viewer.button if b.key == "vw_pred_predict"]  # viewers only look

        # an annotator may ask: predictions are not reader work
        button(reader, "Predict this study").click().run()
        wait_for(lambda: predictor.started == 1, "the backend to start the job")
        reader.run()
        assert not reader.exception, reader.exception
        (bar,) = reader.get("progress")
        assert "sending" in bar.proto.text and "asked by you" in bar.proto.text
        assert bar.proto.value == 10  # the HTTP predictor's callback: 0.1 once the study is sent
        assert button(reader, "Predict this study").disabled
        viewer.run()
        assert "asked by reader1" in viewer.get("progress")[0].proto.text  # everyone sees it
        other_reader = page("viewer.py", scene.users["reader2"], viewer_study_id=scene.study,
                              vw_browser_limit=1)
        assert "asked by another user" in other_reader.get("progress")[0].proto.text  # blinded
        assert scene.predictions() == []  # nothing stored while it runs
        assert len(views(reader)) == 3  # the slices stay usable meanwhile

        gate.set()
        scene.wait_for_run()
        reader.run()
    assert not reader.exception, reader.exception
    (row,) = scene.predictions()
    assert row.created_by == "reader1" and row.backend == url
    assert any("The prediction was stored" in s.value for s in reader.success)
    summary = texts(reader)
    assert "bone-threshold 1.0" in summary and f"**{row.patient_probability:.2f}**" in summary
    table = next(d.value for d in reader.dataframe if "Fracture probability" in d.value.columns)
    assert dict(zip(table["Level"], table["Fracture probability"], strict=True)) == \
        pytest.approx(row.level_probabilities)
    assert list(table["Level"]) == sorted(row.level_probabilities, key=lambda n: int(n[1:]))
    assert [mt.value for mt in reader.metric] == [f"{row.patient_probability:.2f}"]
    assert "threshold" in summary and "load" in summary  # the timings

    # the boxes, in the model's colour with their score, on their slice
    box = row.boxes[0]
    reader.slider(key="vw_slice_axial").set_value(axial_number(scene.study, box["slice_index"]))
    reader.slider(key="vw_pred_opacity").set_value(1.0)  # pure pink, to count its pixels
    reader.run()
    axial = views(reader)["axial"]
    labels = [b["label"] for b in axial["boxes"]]
    assert f"model {box['level']} {box['score']:.2f}" in labels
    assert all(b["colour"] == "#ff40a0" for b in axial["boxes"])
    # the predicted mask drawn as a pink outline over the image; its own toggle takes it away
    assert model_pixels(pixels(axial["src"])) > 0
    reader.toggle(key="vw_pred_mask").set_value(False).run()
    assert model_pixels(pixels(views(reader)["axial"]["src"])) == 0
    reader.toggle(key="vw_pred_boxes").set_value(False).run()
    assert views(reader)["axial"]["boxes"] == []
    assert not reader.exception, reader.exception
    # the client-side viewer: the model's boxes, read-only, in the model's colour
    client = page("viewer.py", scene.users["reader1"], viewer_study_id=scene.study)
    assert not client.exception, client.exception
    assert viewer_boxes(client, "model") == corners(row.boxes)
    model = [b for b in workstation_view(client)["boxes"] if b["kind"] == "model"]
    assert all(b["colour"] == "#ff40a0" and not b["editable"] for b in model)
    assert {b["level"] for b in model} == {b["level"] for b in row.boxes}


def test_an_unreachable_backend_is_explained_stores_nothing_and_a_retry_works(
        scene: Scene) -> None:
    scene.use_backend(f"http://127.0.0.1:{free_port()}")
    at = page("viewer.py", scene.users["adjudicator1"], viewer_study_id=scene.study)
    button(at, "Predict this study").click().run()
    scene.wait_for_run()
    at.run()
    assert not at.exception, at.exception
    (error,) = at.error
    assert error.value.startswith("The model backend cannot be reached.")
    assert "unreachable" in error.value and "SPINE_BACKEND_URL" in error.value
    assert "Nothing was stored" in error.value
    assert scene.predictions() == [] and prediction_files(scene.imported.ws.settings.data_dir) == []
    assert len(workstation_view(at)["cursor"]) == 3  # the viewer keeps working
    button(at, "Check the backend").click().run()
    assert any("unreachable" in w.value for w in at.warning)

    # the backend comes up: the same page retries and succeeds
    app = create_app(lambda device: BoneThresholdPredictor(device), token=TOKEN, device="cpu")
    with running_server(app) as url:
        scene.use_backend(url)
        button(at, "Try again").click().run()
        scene.wait_for_run()
        at.run()
    assert not at.exception, at.exception
    assert not at.error
    assert [p.created_by for p in scene.predictions()] == ["adjudicator1"]
    assert "bone-threshold 1.0" in texts(at)


def test_a_backend_too_slow_for_the_timeout_is_explained_and_stores_nothing(
        scene: Scene) -> None:
    gate = threading.Event()
    app = create_app(lambda device: GatedPredictor(gate), token=TOKEN, device="cpu")
    with running_server(app) as url:
        scene.use_backend(url, timeout_s=1.0)
        at = page("viewer.py", scene.users["admin"], viewer_study_id=scene.study)
        button(at, "Predict this study").click().run()
        scene.wait_for_run()
        at.run()
        gate.set()  # the backend finishes later: the app has given up and keeps nothing
    assert not at.exception, at.exception
    (error,) = at.error
    assert error.value.startswith("The model backend did not answer in time.")
    assert "Nothing was stored" in error.value
    assert button(at, "Try again")
    assert scene.predictions() == []


# --- the reader's screen -----------------------------------------------------------------------


def _boxes(scene: Scene, username: str) -> list[m.Box]:
    with unit_of_work(scene.imported.ws.sessions, readonly=True) as s:
        me = s.scalars(select(m.User).where(m.User.username == username)).one()
        return ann.visible_boxes(s, me, scene.study)




def viewer_boxes(at: AppTest, kind: str) -> list[tuple[int, float, float, float, float]]:
    """The workstation's boxes of one kind ("model", "key", "interpolated") as
    (stored slice, x0, y0, x1, y1), sorted."""
    return sorted((b["slice"], b["x0"], b["y0"], b["x1"], b["y1"])
                  for b in workstation_view(at)["boxes"] if b["kind"] == kind)


def corners(boxes: list[dict[str, Any]]) -> list[tuple[int, float, float, float, float]]:
    return sorted((b["slice_index"], b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"])
                  for b in boxes)


def annotate(scene: Scene, username: str, display_slice: int) -> AppTest:
    """The Annotate page of ``username`` opened on display slice ``display_slice`` (the viewer's
    "Axial n" is that index + 1), the way the page keeps it: ``annotate_goto_<study>``."""
    at = page("annotate.py", scene.users[username],
              **{f"annotate_goto_{scene.study}": display_slice})
    assert not at.exception, at.exception
    return at


def test_a_reader_copies_predicted_boxes_into_their_own_blinded_work(scene: Scene) -> None:
    ws = scene.imported.ws
    row = predict_study(ws, BoneThresholdPredictor(), scene.study, actor="admin")  # in-process
    assert row is not None
    slices = [b["slice_index"] for b in row.boxes]
    k = max(set(slices), key=slices.count)  # the slice with the most predicted boxes
    on_k = [b for b in row.boxes if b["slice_index"] == k]
    assert len(on_k) >= 2, row.boxes
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        ann.assign(s, admin, scene.study, [scene.users["reader1"].id, scene.users["reader2"].id])
    shown = display_index_of(load_study(scene.study).geometry, k)

    at = annotate(scene, "reader1", shown)
    assert workstation_view(at)["cursor"][0] == shown  # the viewer opens on that slice
    assert f"**Boxes on this slice** (0) · axial {shown + 1}" in texts(at)
    assert f"Model's boxes on this slice** ({len(on_k)})" in texts(at)
    # the model's boxes go to the viewer (read-only, in the model's colour) beside the reader's
    assert viewer_boxes(at, "model") == corners(row.boxes)
    model = [b for b in workstation_view(at)["boxes"] if b["kind"] == "model"]
    assert all(b["colour"] == "#ff40a0" and not b["editable"] for b in model)
    assert viewer_boxes(at, "key") == []
    copy_buttons = [b for b in at.button if b.label == "Copy"]
    assert len(copy_buttons) == len(on_k)

    copy_buttons[0].click().run()
    assert not at.exception, at.exception
    (mine,) = _boxes(scene, "reader1")
    first = on_k[0]
    assert mine.source == "prediction" and mine.slice_index == k
    assert (mine.x, mine.y, mine.width, mine.height) == (
        first["x"], first["y"], first["width"], first["height"])
    assert mine.level == first["level"] and not mine.level_from_mask  # the model's level
    assert [b.label for b in at.button if b.label in ("Copy", "Copied")][0] == "Copied"
    assert viewer_boxes(at, "key") == corners([first])  # the copy is drawn as the reader's box

    button(at, "Copy predicted boxes on this slice").click().run()  # the others, not twice
    assert not at.exception, at.exception
    mine = _boxes(scene, "reader1")
    assert sorted((b.x, b.y) for b in mine) == sorted((b["x"], b["y"]) for b in on_k)
    assert {b.source for b in mine} == {"prediction"}
    assert {b.level for b in mine} == {b["level"] for b in on_k}
    assert button(at, "Copy predicted boxes on this slice").disabled
    assert [b.label for b in at.button if b.label in ("Copy", "Copied")] == ["Copied"] * len(on_k)
    assert f"**Boxes on this slice** ({len(on_k)})" in texts(at)
    assert viewer_boxes(at, "key") == corners(on_k)
    with unit_of_work(ws.sessions, readonly=True) as s:  # a box marks its level fractured
        calls = {c.level: c.call for c in s.scalars(select(m.LevelLabel).where(
            m.LevelLabel.reader_id == scene.users["reader1"].id))}
    assert calls == {b["level"]: "fractured" for b in on_k}

    # blinded: the other reader sees none of it (and can copy for themselves), adjudicators see it
    assert _boxes(scene, "reader2") == []
    other = annotate(scene, "reader2", shown)
    assert "**Boxes on this slice** (0)" in texts(other)
    assert [b.label for b in other.button if b.label in ("Copy", "Copied")] == ["Copy"] * len(on_k)
    assert viewer_boxes(other, "key") == [] and viewer_boxes(other, "interpolated") == []
    assert viewer_boxes(other, "model") == corners(row.boxes)
    assert len(_boxes(scene, "adjudicator1")) == len(on_k)

    # the reader can hide the model's boxes from the image (their own boxes stay as saved)
    at.toggle(key="annotate_pred_show").set_value(False).run()
    assert not at.exception, at.exception
    assert viewer_boxes(at, "model") == []
    assert viewer_boxes(at, "key") == corners(on_k)
    assert len(_boxes(scene, "reader1")) == len(on_k)
    at.toggle(key="annotate_pred_show").set_value(True).run()
    assert viewer_boxes(at, "model") == corners(row.boxes)


def test_a_slice_without_model_boxes_offers_the_nearest_one(scene: Scene) -> None:
    ws = scene.imported.ws
    row = predict_study(ws, BoneThresholdPredictor(), scene.study, actor="admin")
    assert row is not None
    boxed = sorted({b["slice_index"] for b in row.boxes})
    geo = load_study(scene.study).geometry
    n_slices = geo.slice_count(geo.acquisition_plane)
    empty = next(k for k in range(n_slices) if k not in boxed)  # a stored slice without boxes
    nearest = min(boxed, key=lambda k: (abs(k - empty), k))
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        ann.assign(s, admin, scene.study, [scene.users["reader1"].id])
    at = annotate(scene, "reader1", display_index_of(geo, empty))
    assert "Model's boxes on this slice** (0)" in texts(at)
    assert "The model drew no box on this slice" in texts(at)
    shown = display_index_of(geo, nearest) + 1  # the viewer's "Axial n" (feet to head)
    go = button(at, f"Go to slice {shown}, the nearest with model boxes")
    go.click().run()
    assert not at.exception, at.exception
    assert at.session_state[f"annotate_goto_{scene.study}"] == shown - 1
    assert workstation_view(at)["cursor"][0] == shown - 1  # the viewer moves there
    on_nearest = [b for b in row.boxes if b["slice_index"] == nearest]
    assert f"Model's boxes on this slice** ({len(on_nearest)})" in texts(at)
    assert f"**Boxes on this slice** (0) · axial {shown}" in texts(at)
    assert len([b for b in at.button if b.label == "Copy"]) == len(on_nearest)


def test_a_study_too_big_for_the_browser_is_read_in_server_slices(scene: Scene) -> None:
    from pages.parts.viewer_workstation import LIMIT_KEY

    ws = scene.imported.ws
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        ann.assign(s, admin, scene.study, [scene.users["reader1"].id])
    at = page("annotate.py", scene.users["reader1"], **{LIMIT_KEY: 1024})
    assert not at.exception, at.exception
    assert "rendered on the server instead" in texts(at) and "boxes cannot be drawn" in texts(at)
    assert not [el for el in at.get("bidi_component") if el.proto.bytes]  # no workstation frame
    assert set(views(at)) == {"axial", "sagittal", "coronal"}  # the server-rendered planes
    before = views(at)["axial"]["index"]
    button(at, "▲").click().run()
    assert not at.exception, at.exception
    assert views(at)["axial"]["index"] == before + 1


def test_a_key_box_moves_to_another_fracture_and_both_reinterpolate(scene: Scene) -> None:
    from db import box_events as be
    from db.annotations import BoxInput

    ws = scene.imported.ws
    with unit_of_work(ws.sessions) as s:
        admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
        ann.assign(s, admin, scene.study, [scene.users["reader1"].id])
        me = s.get(m.User, scene.users["reader1"].id)
        for k in (2, 6):
            be.create_box(s, me, scene.study, BoxInput(k, 10.0, 10.0, 8.0, 8.0, fracture="F1"))
    geo = load_study(scene.study).geometry
    at = annotate(scene, "reader1", display_index_of(geo, 6))
    box = next(b for b in _boxes(scene, "reader1") if b.slice_index == 6 and b.is_key)
    picker = next(sb for sb in at.selectbox if sb.key == f"annotate_box_fracture_{box.id}_{box.version}")
    assert picker.value == "F1"
    picker.set_value("—").run()
    assert not at.exception, at.exception
    live = _boxes(scene, "reader1")
    moved = next(b for b in live if b.id == box.id)
    assert moved.fracture is None and moved.is_key
    assert not [b for b in live if not b.is_key]  # F1 has one key box left: nothing between


class ExplainingPredictor(BoneThresholdPredictor):
    """The threshold model with, beside each box, a wider "Grad-CAM" box of the same level marked
    as an explanation (what the shipped model gives when it has a box detector)."""

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        out = super().predict(volume, progress)
        why = [replace(b, x=b.x - 2, y=b.y - 2, width=b.width + 4, height=b.height + 4,
                       explanation=True) for b in out.boxes]
        return replace(out, boxes=[*out.boxes, *why])


def test_grad_cam_explanation_boxes_are_kept_apart_and_shown_on_request(scene: Scene) -> None:
    app = create_app(lambda device: ExplainingPredictor(device), token=TOKEN, device="cpu")
    with running_server(app) as url:  # the flag crosses the backend's wire format
        scene.use_backend(url)
        at = page("viewer.py", scene.users["adjudicator1"], viewer_study_id=scene.study)
        button(at, "Predict this study").click().run()
        scene.wait_for_run()
        at.run()
    assert not at.exception, at.exception
    (row,) = scene.predictions()
    detections = [b for b in row.boxes if not b.get("explanation")]
    explanations = [b for b in row.boxes if b.get("explanation") is True]
    assert detections and len(explanations) == len(detections)
    client = page("viewer.py", scene.users["reader1"], viewer_study_id=scene.study)
    assert not client.exception, client.exception
    # by default the viewer draws the detections only, in the model's colour
    assert viewer_boxes(client, "model") == corners(detections)
    assert all(b["colour"] == "#ff40a0" for b in workstation_view(client)["boxes"] if b["kind"] == "model")
    # the Grad-CAM toggle adds the explanation boxes in their own colour and label
    client.toggle(key="vw_gradcam").set_value(True).run()
    assert not client.exception, client.exception
    assert viewer_boxes(client, "model") == sorted(corners(detections) + corners(explanations))
    why = [b for b in workstation_view(client)["boxes"] if b["label"].startswith("Grad-CAM ")]
    assert len(why) == len(explanations)
    assert all(b["colour"] == "#{:02x}{:02x}{:02x}".format(*EXPLANATION_COLOUR) for b in why)
