"""A radiograph's prediction in the viewer and on the Models page (AppTest, a real imported DX
film predicted by the shipped radiograph ensemble through ``spine serve`` on loopback HTTP).

The viewer says what the model found in words ("N vertebrae found, M labelled C3–S1"), lists
the predicted vertebrae with their labels instead of fracture probabilities, and draws the
predicted boxes with their labels and the predicted mask on the film. The Models page measures
the films a version predicted against the readers' final truth: vertebrae found (box IoU ≥ 0.5)
and labelled as the readers did."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import annotations as ann
from db import box_events as be
from db import film_reading as fr
from db import film_submit as fs
from db import models as m
from db.film_predictions import predicted_boxes
from db.importer import import_path
from db.predictions import predict_study
from db.session import unit_of_work
from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.film_labels import moved_level, shown_level
from spine_core.inference.client import NO_RETRY, HttpPredictor
from spine_core.inference.protocol import PredictedBox
from spine_core.inference.select import load_local_predictor
from spine_core.inference.server import create_app
from tests.app_helpers import app, demo_workspace, pages_on, signed_in, texts
from tests.backend_helpers import TOKEN, running_server
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

TIMEOUT = 120


@dataclass
class Film:
    ws: Workspace
    boxes: list[PredictedBox]  # as stored, in the model's order
    backend: str


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Film]:
    root = tmp_path_factory.mktemp("film")
    ws = demo_workspace(root / "var")
    write_dx(small_film(), root / "dx" / "a", MONO1_SEED)
    assert import_path(root / "dx", ws, progress=False).ok
    local = load_local_predictor(Settings(device="cpu"))
    with running_server(create_app(lambda device: local, token=TOKEN, device="cpu")) as url, \
            HttpPredictor(url, TOKEN, retry=NO_RETRY, timeout_s=TIMEOUT) as remote:
        row = predict_study(ws, remote, 1, actor="admin")
    assert row is not None and row.patient_probability is None  # no fracture score: "not predicted"
    assert row.mask_path
    yield Film(ws, predicted_boxes(row.boxes), row.backend)


def _user(session: Any, name: str) -> m.User:
    return session.scalars(select(m.User).where(m.User.username == name)).one()


def _header(at: AppTest) -> dict[str, Any]:
    from spine_viewer.transport import unpack_frame

    frames = [el.proto.bytes for el in at.get("bidi_component") if el.proto.bytes]
    assert len(frames) == 1, "one workstation on the page"
    return unpack_frame(frames[0])[0]


def _films(at: AppTest) -> Any:
    """The Models page's table of films (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if "Readers' labels" in d.value.columns)


def test_the_viewer_shows_the_predicted_vertebrae_and_their_labels(
        film: Film, monkeypatch: pytest.MonkeyPatch) -> None:
    labelled = [b for b in film.boxes if b.level]
    assert len(labelled) >= 4, film.boxes
    top_to_bottom = sorted(labelled, key=lambda b: (b.y, b.x))
    span = f"{shown_level(top_to_bottom[0].level or '')}–{shown_level(top_to_bottom[-1].level or '')}"
    st.cache_data.clear()
    with pages_on(film.ws, monkeypatch):
        at = app(signed_in(film.ws, "admin"), script="pages/viewer.py",
                 viewer_study_id=1).run(timeout=TIMEOUT)
        assert not at.exception, at.exception
        summary = next(t for t in texts(at, "markdown") if t.startswith("**Model prediction**"))
        assert f"{len(film.boxes)} vertebrae found, {len(labelled)} labelled {span}" in summary
        assert "fracture probability" not in summary  # the film model scores no fracture
        expander = next(e for e in at.expander if e.label == "Predicted vertebrae, timings")
        table = expander.dataframe[0].value
        assert list(table["Vertebra"]) == [shown_level(b.level) if b.level else "—"
                                           for b in sorted(film.boxes, key=lambda b: (b.y, b.x))]
        assert any("no fracture probability" in c for c in texts(expander, "caption"))
        assert any(film.backend in c for c in texts(expander, "caption"))  # ran on the backend

        header = _header(at)
        drawn = [b for b in header["view"]["boxes"] if b["kind"] == "model"]
        assert sorted((b["level"], round(b["x0"]), round(b["y0"])) for b in drawn) == sorted(
            (b.level or "", round(b.x), round(b.y)) for b in film.boxes)
        # no dataset mask on this film: the predicted mask is the overlay
        assert header["volume"]["mask"] and "prediction" in header["volume"]["id"]


def test_the_models_page_measures_the_film_against_the_readers_final_truth(
        film: Film, monkeypatch: pytest.MonkeyPatch) -> None:
    # two readers draw four of the predicted vertebrae; they label three as the model did and
    # the fourth one level lower than the model did, then submit
    four = sorted((b for b in film.boxes if b.level), key=lambda b: (b.y, b.x))[:4]
    other = moved_level(four[3].level or "", 1)
    assert other is not None and other != four[3].level
    labels = [b.level or "" for b in four[:3]] + [other]
    st.cache_data.clear()
    with pages_on(film.ws, monkeypatch):
        at = app(signed_in(film.ws, "admin"), script="pages/models.py").run(timeout=TIMEOUT)
        assert not at.exception, at.exception
        assert any("Radiographs: vertebrae found and labelled" in t for t in texts(at, "subheader"))
        assert any("No predicted film has a final truth yet" in t for t in texts(at, "info"))
        films = _films(at)
        assert list(films["Note"]) == ["no reader has submitted it yet"]
        assert list(films["Found"]) == ["—"]

        with unit_of_work(film.ws.sessions) as s:
            ann.assign(s, _user(s, "admin"), 1, [_user(s, "reader1").id, _user(s, "reader2").id])
            for name in ("reader1", "reader2"):
                me = _user(s, name)
                for b in four:
                    be.create_box(s, me, 1, ann.BoxInput(0, b.x, b.y, b.width, b.height))
        for name in ("reader1", "reader2"):
            with unit_of_work(film.ws.sessions) as s:
                me = _user(s, name)
                boxes = sorted(fr.film_boxes(s, me, 1), key=lambda b: (b.y, b.x))
                for box, label in zip(boxes, labels, strict=True):
                    fr.save_film_label(s, me, box.id, box.version, label, None, False)
            with unit_of_work(film.ws.sessions) as s:
                fs.submit_film(s, _user(s, name), 1, confirm=True)

        at = app(signed_in(film.ws, "admin"), script="pages/models.py").run(timeout=TIMEOUT)
        assert not at.exception, at.exception
        metrics = {str(mt.label): str(mt.value) for mt in at.metric}
        assert metrics["Films predicted"] == "1"
        assert metrics["Vertebrae found"] == "1.000"
        assert metrics["Labelling accuracy"] == "0.750"
        assert metrics["Mean box IoU"] == "1.000"
        films = _films(at)
        row = films.iloc[0].to_dict()
        assert (row["Found"], row["Labelled right"], row["Note"]) == ("4/4", "3/4", "")
        assert row["Readers' labels"] == f"{shown_level(labels[0])}–{shown_level(labels[-1])}"
