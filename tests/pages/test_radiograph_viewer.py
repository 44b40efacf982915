"""A radiograph in the viewer (AppTest): one image, not "1 slices"; its modality, view, spacing
and the spacing's source in words; the workstation opens it with the file's window (MONOCHROME1
inverted with it), and a PNG without sidecar says "spacing unknown: measurements in pixels" and
the workstation measures it in px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from db.importer import import_path
from tests.app_helpers import app, demo_workspace, pages_on, signed_in, workstation_view
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx

VIEWER = "pages/viewer.py"


def _captions(at: AppTest) -> list[str]:
    return [str(c.value) for c in at.caption]




def test_a_dx_film_and_a_bare_png_open_in_the_viewer_as_radiographs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = demo_workspace(tmp_path / "var")
    film = small_film()
    dx = write_dx(film, tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    (tmp_path / "png").mkdir()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)).save(
        tmp_path / "png" / "bare.png")
    assert import_path(tmp_path / "png", ws, progress=False).ok
    st.cache_data.clear()
    ds = pydicom.dcmread(dx, stop_before_pixels=True)
    top = (1 << int(ds.BitsStored)) - 1
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "admin"), script=VIEWER, viewer_study_id=1).run()
        assert not at.exception, at.exception
        captions = _captions(at)
        assert not any("1 slices" in c for c in captions), captions
        line = next(c for c in captions if "radiograph" in c)
        assert line.startswith("DX radiograph · view lateral · pixel ")
        assert "(ImagerPixelSpacing ÷ magnification) · window from the file" in line
        # MONOCHROME1: the file's centre is inverted with the pixels, the width kept
        view = workstation_view(at)
        assert view["window"] == [float(ds.WindowWidth), top - float(ds.WindowCenter)]
        assert (view["length_unit"], view["value_unit"]) == ("mm", "")
        # one image, lettered from PatientOrientation P\F (facing the viewer's left), no planes
        assert view["film"] == {"letters": ["H", "F", "A", "P"]}
        controls = {c.key for c in [*at.button_group, *at.segmented_control]}
        assert not controls & {"vw_ws_layout", "vw_ws_plane"}, controls
        assert any(str(c.value).startswith("**Film · one image**") for c in at.caption)
        assert not at.tabs  # no 3-D tab for one image

        bare = app(signed_in(ws, "admin"), script=VIEWER, viewer_study_id=2).run()
        assert not bare.exception, bare.exception
        line = next(c for c in _captions(bare) if "radiograph" in c)
        assert line == ("OT radiograph · view unknown · spacing unknown: measurements in pixels "
                        "· window from the image's values")
        view = workstation_view(bare)
        width, level = view["window"]
        assert 150 < width <= 200 and 75 < level < 125
        assert view["length_unit"] == "px"  # spacing unknown: the length tool measures pixels
        assert view["film"] == {"letters": ["", "", "", ""]}  # no orientation: nothing guessed


def test_a_reader_reads_a_radiograph_in_one_plane_with_its_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import select

    from db import models as m
    from db.annotations import assign
    from db.session import unit_of_work

    ws = demo_workspace(tmp_path / "var")
    dx = write_dx(small_film(), tmp_path / "dx" / "a", MONO1_SEED)
    assert import_path(tmp_path / "dx", ws, progress=False).ok
    with unit_of_work(ws.sessions) as session:
        admin = session.scalars(select(m.User).where(m.User.username == "admin")).one()
        reader = session.scalars(select(m.User).where(m.User.username == "reader1")).one()
        assign(session, admin, 1, [reader.id])
    ds = pydicom.dcmread(dx, stop_before_pixels=True)
    top = (1 << int(ds.BitsStored)) - 1
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "reader1"), script="pages/annotate.py").run()
        assert not at.exception, at.exception
        view = workstation_view(at)
        assert view["layout"] == "single"  # a film has no other plane worth showing
        assert view["window"] == [float(ds.WindowWidth), top - float(ds.WindowCenter)]
        assert (view["length_unit"], view["value_unit"]) == ("mm", "")


def test_the_view_is_set_in_the_viewer_and_shown_over_the_header_s_on_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG without sidecar has no view: an admin sets "lateral"; the line says who set it; a
    viewer (clinician) sees the line and no control; the window presets are the film's own."""
    from sqlalchemy import select

    from db import models as m
    from db.session import unit_of_work

    ws = demo_workspace(tmp_path / "var")
    (tmp_path / "png").mkdir()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)).save(
        tmp_path / "png" / "bare.png")
    assert import_path(tmp_path / "png", ws, progress=False).ok
    st.cache_data.clear()
    with pages_on(ws, monkeypatch):
        at = app(signed_in(ws, "admin"), script=VIEWER, viewer_study_id=1).run()
        assert not at.exception, at.exception
        view = workstation_view(at)
        sample = (np.arange(64 * 64).reshape(64, 64) % 200)[::4, ::4]  # the presets' sample
        low, high = float(sample.min()), float(sample.max())
        assert view["presets"][0] == view["window"]  # auto: the film has no window of its own
        full_range = [round(high - low), round((high + low) / 2)]
        assert view["presets"][1] == full_range
        assert view["presets"][2][1] > view["presets"][1][1]  # bone detail: the brighter half
        full = f"window: full range ({full_range[0]:g}/{full_range[1]:g})"
        assert any(full == k["help"] for k in view["keymap"]), view["keymap"]
        choice = at.selectbox(key="vw_film_view_1")
        assert choice.value == "" and choice.options[1:] == ["lateral", "AP", "PA"]
        at = choice.set_value("lateral").run()
        assert not at.exception, at.exception
        line = next(c for c in _captions(at) if "radiograph" in c)
        assert "· view lateral (set by admin; the header names none) ·" in line, line
        with unit_of_work(ws.sessions, readonly=True) as s:
            entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "film.view")).one()
            assert (entry.actor, entry.after) == ("admin", {"view": "lateral"})

        clinician = app(signed_in(ws, "viewer"), script=VIEWER, viewer_study_id=1).run()
        assert not clinician.exception, clinician.exception
        assert not [s for s in clinician.selectbox if s.key == "vw_film_view_1"]
        line = next(c for c in _captions(clinician) if "radiograph" in c)
        assert "· view lateral (set by admin; the header names none) ·" in line
