"""Sign-in, case browser and viewer page logic through Streamlit's AppTest, on a real workspace:
SQLite, demo users, three synthetic RSNA-layout studies (real DICOM + NIfTI masks, readers' boxes)
imported by the importer, and 60 catalogue-only studies for paging, filters and sorting.

The viewer's client-side workstation is checked through the frame the page hands the browser
(its JSON header: view, boxes, palette) and the address it writes; the server-rendered fallback
(a study above the browser's memory budget: ``FALLBACK``) through the slice component's data (PNG,
overlay items). Clicks and keys are exercised in tests/browser/test_viewer_e2e.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import annotations
from db import models as m
from db.catalogue import get_or_create_study
from db.importer import import_path
from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import open_workspace
from pages.parts.common import SignedInUser, workspace
from pages.parts.viewer_parts import forget_studies
from spine_core.config import Settings
from spine_core.io.nifti import save_nifti
from spine_core.labels import CRANIOCAUDAL_ORDER, LEVEL_NAMES
from spine_core.phantom.rsna_layout import write_rsna_dataset
from spine_core.render import Plane
from spine_core.volume import Volume
from tests.app_helpers import workstation_view

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
SHAPE = (48, 64, 64)
N_BARE = 60
#: session state that makes every study too large for the browser: the server-rendered fallback
FALLBACK = {"vw_browser_limit": 1}


@dataclass
class Scene:
    settings: Settings
    users: dict[str, SignedInUser]
    boxed: int  # a demo study with readers' boxes (reader2, reader3), assigned to reader4 too
    damaged: int  # a demo study the bad-input tests break
    spare: int  # the third demo study
    uids: dict[int, str]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("pages")
    settings = Settings(data_dir=root / "var", workers=1)
    ws = open_workspace(settings)
    with unit_of_work(ws.sessions) as s:
        ensure_demo_users(s)
        s.add(m.User(username="reader4", display_name="Reader 4", role="annotator",
                     password_hash="!"))
    write_rsna_dataset(root / "demo", 3, seed=2022, shape=SHAPE, workers=1)
    report = import_path(root / "demo", settings, actor="test", progress=False)
    assert report.studies_added == 3
    with unit_of_work(ws.sessions) as s:
        users = {u.username: SignedInUser(u.id, u.username, u.display_name, u.role, u.is_chair)
                 for u in s.scalars(select(m.User))}
        demo = list(s.scalars(select(m.Study).order_by(m.Study.id)))
        counts = {st.id: len(s.scalars(select(m.Box).where(m.Box.study_id == st.id)).all())
                  for st in demo}
        boxed = max(counts, key=lambda k: counts[k])
        assert counts[boxed] > 0, "the demo dataset should carry readers' boxes"
        others = [st.id for st in demo if st.id != boxed]
        admin = s.get(m.User, users["admin"].id)
        annotations.assign(s, admin, boxed, [users["reader4"].id])
        for i in range(N_BARE):
            get_or_create_study(s, f"9.9.{i:03d}", "verse" if i % 3 == 0 else "ctspine1k",
                                n_slices=100 + i, has_mask=i % 2 == 0, patient_id=f"P{i:03d}")
        uids = {st.id: st.study_uid for st in demo}
    return Scene(settings, users, boxed, others[0], others[1], uids)


@pytest.fixture
def env(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """Point the pages' workspace at the scene (the autouse fixture cleared SPINE_* first)."""
    monkeypatch.setenv("SPINE_DATA_DIR", str(scene.settings.data_dir))
    monkeypatch.setenv("SPINE_WORKERS", "1")
    workspace.clear()
    forget_studies()
    yield scene
    workspace.clear()
    forget_studies()


def run_page(name: str, user: SignedInUser | None, **state: Any) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)
    if user is not None:
        at.session_state["user"] = user
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success",
                                  "subheader", "title") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def slice_data(at: AppTest) -> dict[str, dict[str, Any]]:
    """What the page sent to each slice view, by plane."""
    out = {}
    for el in at.get("bidi_component"):
        if el.proto.json:
            data = json.loads(el.proto.json)
            out[data["plane"]] = data
    return out


def qp(at: AppTest, name: str) -> str:
    """A query parameter as the page left it (AppTest gives a str or a list)."""
    value = at.query_params[name]
    return value[-1] if isinstance(value, list) else value




def png_pixels(data: dict[str, Any]) -> np.ndarray:
    raw = data["src"].split(",", 1)[1]
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(raw))))


def button(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type
    return next(b for b in at.button if b.label == label)


# --- sign-in and guards ------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["pages/cases.py", "pages/viewer.py"])
def test_signed_out_user_reaches_no_page(env: Scene, page: str) -> None:
    at = run_page(page, None, viewer_study_id=env.boxed)
    assert not at.exception
    assert [w.value for w in at.warning] == ["Please sign in."]
    assert not at.dataframe and not at.slider and not at.get("bidi_component")


def test_app_shows_only_the_sign_in_form_and_refuses_a_wrong_password(env: Scene) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.dataframe and "Cases" not in texts(at)
    at.text_input(key="signin_username").input("admin")
    at.text_input(key="signin_password").input("not-the-password")
    button(at, "Sign in").click().run()
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert "user" not in at.session_state
    at.text_input(key="signin_password").input("admin")
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.session_state["user"].username == "admin"
    assert any(t.value == "Cases" for t in at.title)  # the default page after signing in


# --- case browser ------------------------------------------------------------------------------


def table(at: AppTest) -> Any:
    return at.dataframe[0].value


def test_case_list_pages_searches_filters_and_sorts_in_sql(env: Scene) -> None:
    total = N_BARE + 3
    at = run_page("pages/cases.py", env.users["admin"])
    assert not at.exception, at.exception
    assert f"Studies 1–50 of {total}." in texts(at)
    assert len(table(at)) == 50
    at.number_input(key="cases_page").set_value(2).run()
    assert f"Studies 51–{total} of {total}." in texts(at)
    assert len(table(at)) == total - 50

    uid = env.uids[env.boxed]
    at.text_input(key="cases_search").input(uid[-12:]).run()  # the filter goes back to page 1
    rows = table(at)
    assert list(rows["Study UID"]) == [uid]
    assert rows["Slices"].iloc[0] == SHAPE[0] and rows["Mask"].iloc[0] == "yes"

    at.text_input(key="cases_search").input("").run()
    at.selectbox(key="cases_dataset").set_value("verse").run()
    assert set(table(at)["Dataset"]) == {"verse"} and len(table(at)) == N_BARE // 3
    at.selectbox(key="cases_mask").set_value("no").run()
    assert set(table(at)["Mask"]) == {"no"}
    assert len(table(at)) == sum(1 for i in range(N_BARE) if i % 3 == 0 and i % 2 == 1)

    at.selectbox(key="cases_dataset").set_value("any").run()
    at.selectbox(key="cases_mask").set_value("any").run()
    at.selectbox(key="cases_sort").set_value("n_slices").run()
    at.toggle(key="cases_desc").set_value(False).run()
    slices = list(table(at)["Slices"])
    assert slices == sorted(slices) and slices[0] == SHAPE[0]
    at.toggle(key="cases_desc").set_value(True).run()
    assert list(table(at)["Slices"])[0] == 100 + N_BARE - 1


def test_annotators_see_only_their_own_reading_status(env: Scene) -> None:
    at = run_page("pages/cases.py", env.users["reader4"])
    assert not at.exception, at.exception
    rows = table(at)
    assert list(rows["Study UID"]) == [env.uids[env.boxed]]  # only studies assigned to them
    assert list(rows["Readers"]) == ["you: assigned"]
    at.toggle(key="cases_mine").set_value(False).run()
    readers = " ".join(table(at)["Readers"])
    assert "reader1" not in readers and "reader2" not in readers and "reader3" not in readers

    adj = run_page("pages/cases.py", env.users["adjudicator1"])
    adj.text_input(key="cases_search").input(env.uids[env.boxed]).run()
    row = adj.dataframe[0].value.iloc[0]
    assert "reader2: submitted" in row["Readers"] and "reader4: assigned" in row["Readers"]
    viewer = run_page("pages/cases.py", env.users["viewer"])
    viewer.text_input(key="cases_search").input(env.uids[env.boxed]).run()
    assert viewer.dataframe[0].value.iloc[0]["Readers"] == "3/4 submitted"  # counts, no names
    assert not viewer.button or all(b.label != "Next case for me" for b in viewer.button)


def test_next_case_for_me_opens_the_viewer(env: Scene) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = env.users["reader4"]
    at.run()
    button(at, "Next case for me").click().run()
    assert not at.exception, at.exception
    assert at.session_state["viewer_study_id"] == env.boxed
    assert any(env.uids[env.boxed] in s.value for s in at.subheader)  # the viewer page ran

    done = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    done.session_state["user"] = env.users["reader1"]  # submitted everything
    done.run()
    button(done, "Next case for me").click().run()
    assert any("Nothing left to read" in i.value for i in done.info)


def test_open_in_viewer_from_the_list(env: Scene) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = env.users["admin"]
    at.run()
    at.text_input(key="cases_search").input(env.uids[env.spare][-10:]).run()
    at.selectbox(key="cases_open_choice").set_value(env.spare)
    button(at, "Open in viewer").click().run()
    assert not at.exception, at.exception
    assert any(env.uids[env.spare] in s.value for s in at.subheader)


# --- viewer ------------------------------------------------------------------------------------


def _dicom_hu(scene: Scene, study_id: int, voxel: tuple[int, int, int]) -> float:
    """HU of a voxel read straight from the DICOM file with pydicom (slice = a0 position)."""
    with unit_of_work(open_workspace(scene.settings).sessions, readonly=True) as s:
        series = s.scalars(select(m.Series).where(m.Series.study_id == study_id)).one()
        path = Path(series.source_dir) / series.files[voxel[0]]
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array[voxel[1], voxel[2]]
    return float(raw) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _cursor(at: AppTest) -> str:
    return next(md.value for md in at.markdown if md.value.startswith("**Cursor**"))


def test_viewer_shows_three_planes_steps_and_reads_hu_at_the_cursor(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed,
                  **FALLBACK)
    assert not at.exception, at.exception
    data = slice_data(at)
    assert set(data) == {"axial", "sagittal", "coronal"}
    assert data["axial"]["edges"] == ["A", "P", "R", "L"]  # radiological: patient right on the left
    assert data["sagittal"]["edges"] == ["S", "I", "A", "P"]
    assert data["coronal"]["edges"] == ["S", "I", "R", "L"]
    for d in data.values():
        assert png_pixels(d).shape[:2] == (d["height"], d["width"])
    names = [lab["text"] for lab in data["sagittal"]["labels"]]
    rank = {LEVEL_NAMES[lid]: i for i, lid in enumerate(CRANIOCAUDAL_ORDER)}
    assert len(names) >= 5 and names == sorted(names, key=rank.__getitem__)  # head at the top
    assert not data["axial"]["labels"]  # level names go in the sagittal plane

    axial = at.slider(key="vw_slice_axial").value
    text = _cursor(at)
    voxel = tuple(int(v) for v in text.split("voxel (")[1].rstrip(") ").split(","))
    hu = float(text.split("**Cursor** ")[1].split(" HU")[0])
    assert hu == pytest.approx(_dicom_hu(env, env.boxed, voxel), abs=0.5)
    assert voxel[0] == axial - 1  # a standard axial stack: display slice = stored slice

    button(at, "▲").click().run()  # the keyboard's ↑ is this button's shortcut
    assert at.slider(key="vw_slice_axial").value == axial + 1
    assert slice_data(at)["axial"]["header"].startswith(f"Axial {axial + 1}/{SHAPE[0]}")
    button(at, "−10").click().run()
    assert at.slider(key="vw_slice_axial").value == max(1, axial + 1 - 10)
    at.slider(key="vw_slice_coronal").set_value(5).run()
    assert slice_data(at)["coronal"]["index"] == 4


def test_window_presets_layout_zoom_and_vertebra_toggles(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed,
                  **FALLBACK)
    bone = png_pixels(slice_data(at)["axial"])
    at.selectbox(key="vw_win_preset").set_value("soft tissue").run()
    soft = png_pixels(slice_data(at)["axial"])
    assert bone.shape == soft.shape and not np.array_equal(bone, soft)
    at.selectbox(key="vw_win_preset").set_value("custom").run()
    at.number_input(key="vw_win_width").set_value(400.0).run()
    at.number_input(key="vw_win_level").set_value(40.0).run()
    assert np.array_equal(png_pixels(slice_data(at)["axial"]), soft)  # 400/40 is soft tissue

    zoomed = slice_data(at)["sagittal"]
    at.toggle(key="vw_zoom").set_value(False).run()
    full = slice_data(at)["sagittal"]
    assert full["width"] * full["height"] > zoomed["width"] * zoomed["height"]

    at.radio(key="vw_layout").set_value("Sagittal").run()
    assert list(slice_data(at)) == ["sagittal"]
    pills = at.get("button_group")
    levels = next(p for p in pills if str(p.key).startswith("vw_ovl_levels"))
    assert "C3" in [lab["text"] for lab in slice_data(at)["sagittal"]["labels"]]
    levels.set_value([v for v in levels.value if v != "C3"]).run()
    assert "C3" not in [lab["text"] for lab in slice_data(at)["sagittal"]["labels"]]
    assert "<s>C3</s>" in texts(at)  # struck through in the legend


def _box_slices(scene: Scene, study_id: int) -> dict[str, list[int]]:
    """Reader name -> stored slices of their boxes (readers' work, not the dataset's truth)."""
    with unit_of_work(open_workspace(scene.settings).sessions, readonly=True) as s:
        rows = s.execute(select(m.User.username, m.Box.slice_index).join(
            m.User, m.User.id == m.Box.reader_id).where(
            m.Box.study_id == study_id, m.Box.source != "dataset")).all()
    out: dict[str, list[int]] = {}
    for name, k in rows:
        out.setdefault(name, []).append(int(k))
    return out


def _boxes_on(env: Scene, user: str, slice_number: int) -> list[dict[str, Any]]:
    at = run_page("pages/viewer.py", env.users[user], viewer_study_id=env.boxed, **FALLBACK)
    at.slider(key="vw_slice_axial").set_value(slice_number).run()
    assert not at.exception, at.exception
    return slice_data(at)["axial"]["boxes"]


def _workstation_boxes(env: Scene, user: str) -> list[dict[str, Any]]:
    at = run_page("pages/viewer.py", env.users[user], viewer_study_id=env.boxed)
    assert not at.exception, at.exception
    return workstation_view(at)["boxes"]


def test_boxes_follow_the_blinding_rules(env: Scene) -> None:
    owners = _box_slices(env, env.boxed)
    reader, slices = next(iter(sorted(owners.items())))
    number = slices[0] + 1  # stored slice k is axial display slice k here (standard stack)
    shown = _boxes_on(env, "adjudicator1", number)
    on_slice = {name for name, ks in owners.items() if slices[0] in ks}
    assert {b["label"].split()[0] for b in shown} == on_slice
    for b in shown:
        assert 0 <= b["x0"] < b["x1"] <= 1 and 0 <= b["y0"] < b["y1"] <= 1
    mine = _boxes_on(env, reader, number)
    assert mine and all(b["label"].split()[0] == "you" for b in mine)
    assert _boxes_on(env, "reader4", number) == []  # assigned, but blinded to the others
    assert _boxes_on(env, "viewer", number) == []
    # the client-side viewer gets the same boxes, each of its kind, read-only
    every = _workstation_boxes(env, "adjudicator1")
    assert sorted(b["reader"] for b in every) == sorted(
        name for name, ks in owners.items() for _ in ks)
    assert {b["kind"] for b in every} == {"other reader"} and not any(b["editable"] for b in every)
    assert {b["slice"] for b in every if b["reader"] == reader} == set(slices)
    own = _workstation_boxes(env, reader)
    assert own and {b["kind"] for b in own} == {"key"} and {b["reader"] for b in own} == {"you"}
    assert _workstation_boxes(env, "reader4") == []
    assert _workstation_boxes(env, "viewer") == []


def test_3d_view_has_a_named_mesh_per_vertebra_and_boxes(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed)
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Slices", "3-D vertebrae"]  # beside the slices
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = spec["data"]
    meshes = [t["name"] for t in traces
              if t["type"] == "mesh3d" and not t["name"].startswith("box")]
    with unit_of_work(open_workspace(env.settings).sessions, readonly=True) as s:
        mask = s.scalars(select(m.Mask).join(m.Series).where(m.Series.study_id == env.boxed)).one()
        levels = list(mask.levels)
    assert meshes == levels
    owners = _box_slices(env, env.boxed)
    boxes = [t for t in traces if t["name"].startswith("boxes: ")]
    assert len(boxes) == sum(len(v) for v in owners.values())
    assert sorted(t["name"] for t in boxes if t.get("showlegend", True)) == sorted(
        f"boxes: {name}" for name in owners)  # one legend entry per reader


# --- demonstration ------------------------------------------------------------------------------


def test_demonstration_is_for_admins_adjudicators_and_viewers(env: Scene) -> None:
    at = run_page("pages/demo.py", env.users["reader1"])
    assert any("for these roles: Committee member, Administrator, Viewer. You are signed in as "
               "Reader." in e.value for e in at.error)
    assert not at.get("bidi_component")


def test_demonstration_without_a_list_or_a_prediction_says_how_cases_appear(env: Scene) -> None:
    at = run_page("pages/demo.py", env.users["viewer"], viewer_study_id=env.spare)
    assert not at.exception, at.exception
    assert any("No case to show yet" in i.value for i in at.info)
    assert not at.get("bidi_component") and not at.text_input  # nothing to show, nothing to edit


def _add_prediction(scene: Scene, study_id: int, folder: Path) -> dict[str, Any]:
    """A stored model run: C2 segmented, C2 likely fractured, one box on C2's middle slice."""
    from db.studies import open_image, open_mask

    ws = open_workspace(scene.settings)
    with unit_of_work(ws.sessions) as s:
        series = s.scalars(select(m.Series).where(m.Series.study_id == study_id)).one()
        image = open_image(ws, series)
        mask = open_mask(ws, series, image)
        assert mask is not None
        c2 = np.asarray(mask.array) == 2
        k = int(np.flatnonzero(c2.any(axis=(1, 2))).mean())
        rows, cols = np.flatnonzero(c2[k].any(axis=1)), np.flatnonzero(c2[k].any(axis=0))
        box = {"slice_index": k, "x": float(cols[0]), "y": float(rows[0]),
               "width": float(cols[-1] - cols[0] + 1), "height": float(rows[-1] - rows[0] + 1),
               "score": 0.88, "level": "C2"}
        path = folder / "predicted.nii.gz"
        save_nifti(image.with_array(np.where(c2, 2, 0).astype(np.uint8)), path)
        version = m.ModelVersion(name="demo-net", version="1.0")
        s.add(version)
        s.flush()
        s.add(m.Prediction(study_id=study_id, model_version_id=version.id,
                           patient_probability=0.93, level_probabilities={"C2": 0.91, "C5": 0.12},
                           boxes=[box], mask_path=str(path)))
    return box


def test_demonstration_shows_the_prediction_beside_the_truth(
        env: Scene, tmp_path: Path) -> None:
    box = _add_prediction(env, env.boxed, tmp_path)
    at = run_page("pages/demo.py", env.users["adjudicator1"], viewer_study_id=env.boxed)
    assert not at.exception, at.exception
    assert not at.warning
    assert [o.split(" · ")[0] for o in at.selectbox(key="demo_case").options] == ["1 of 1"]
    assert any("demo-net 1.0" in c.value for c in at.caption)
    assert any(md.value == "### Model: likely fracture, 93 %" for md in at.markdown)
    rows = at.dataframe[0].value.set_index("Level")
    assert rows.loc["C2", "Model"] == "model: likely fracture, 91 %"
    assert rows.loc["C5", "Model"] == "model: unlikely fracture, 12 %"
    assert rows.loc["C3", "Model"] == "not predicted"
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["text"] for t in bars["data"]][0] == ["model: likely fracture, 91 %",
                                                    "model: unlikely fracture, 12 %"]
    assert any(shape.get("x0") == 0.5 for shape in bars["layout"]["shapes"])  # the threshold
    view = workstation_view(at)
    assert view["editable"] is False and not [b for b in view["boxes"] if b["kind"] == "model"]

    at.segmented_control(key="demo_show").set_value("model").run()
    assert not at.exception, at.exception
    view = workstation_view(at)
    model = [b for b in view["boxes"] if b["kind"] == "model"]
    assert len(model) == 1 and model[0]["slice"] == box["slice_index"]
    assert any("the model's fracture box" in md.value for md in at.markdown)


# --- bad input ---------------------------------------------------------------------------------


def _series_files(scene: Scene, study_id: int) -> tuple[list[Path], Path]:
    with unit_of_work(open_workspace(scene.settings).sessions, readonly=True) as s:
        series = s.scalars(select(m.Series).where(m.Series.study_id == study_id)).one()
        mask = s.scalars(select(m.Mask).where(m.Mask.series_id == series.id)).one()
        return [Path(series.source_dir) / f for f in series.files], Path(mask.path)


def test_a_mask_that_no_longer_fits_offers_opening_without_it(env: Scene) -> None:
    files, mask_path = _series_files(env, env.damaged)
    far = np.eye(4)
    far[:3, 3] = 10_000.0  # ten metres away: overlaps nothing
    save_nifti(Volume(np.ones((8, 8, 8), np.uint8), far), mask_path)
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.damaged, **FALLBACK)
    assert not at.exception, at.exception
    assert any("mask" in e.value and "overlap" in e.value for e in at.error)
    assert not at.get("bidi_component")
    button(at, "Open without mask").click().run()
    assert not at.exception, at.exception
    assert not at.error
    assert "opened without mask" in texts(at)
    assert set(slice_data(at)) == {"axial", "sagittal", "coronal"}
    assert all(not d["labels"] for d in slice_data(at).values())


def test_deleted_source_files_give_a_message_and_a_way_back(env: Scene) -> None:
    files, _ = _series_files(env, env.spare)
    files[len(files) // 2].unlink()
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.spare)
    assert not at.exception, at.exception
    message = " ".join(e.value for e in at.error)
    assert "missing" in message and "re-import" in message
    assert any("re-import" in i.value for i in at.info)
    assert not at.get("bidi_component") and not at.slider
    assert button(at, "Back to the case list")


def test_a_damaged_cache_file_is_rebuilt_from_the_sources(env: Scene) -> None:
    first = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed,
                  **FALLBACK)
    before = slice_data(first)["axial"]["src"]
    with unit_of_work(open_workspace(env.settings).sessions, readonly=True) as s:
        uid = s.scalars(select(m.Series.series_uid).where(m.Series.study_id == env.boxed)).one()
    cache = env.settings.data_dir / "cache"
    entries = sorted(p for p in cache.rglob("*.npy") if p.parent.name.startswith(uid))
    assert len(entries) == 2  # the image and its mask, memory-mapped by the open viewer
    sizes = {p: p.stat().st_size for p in entries}
    for npy in entries:  # cut them short under the open memory maps, as a crash or full disk would
        with npy.open("r+b") as fh:
            fh.truncate(sizes[npy] // 2)
    again = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed,
                  **FALLBACK)
    assert not again.exception, again.exception
    assert not again.error
    assert slice_data(again)["axial"]["src"] == before
    assert {p: p.stat().st_size for p in entries} == sizes  # rebuilt from the DICOM files


def test_unknown_and_imageless_studies_are_explained(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=999_999)
    assert any("does not exist" in w.value for w in at.warning)
    with unit_of_work(open_workspace(env.settings).sessions, readonly=True) as s:
        bare = s.scalars(select(m.Study.id).where(m.Study.study_uid == "9.9.000")).one()
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=bare)
    assert not at.exception
    assert any("no image series" in w.value for w in at.warning)
    nothing = run_page("pages/viewer.py", env.users["viewer"])
    assert any("case list" in i.value for i in nothing.info)


def test_planes_cover_the_volume_in_display_order(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed,
                  **FALLBACK)
    at.toggle(key="vw_zoom").set_value(False).run()
    counts = {p: at.slider(key=f"vw_slice_{p}").max for p in ("axial", "sagittal", "coronal")}
    assert counts == {"axial": SHAPE[0], "sagittal": SHAPE[2], "coronal": SHAPE[1]}
    assert Plane.AXIAL.value in slice_data(at)


# --- the client-side workstation: address, slice number, fallback ------------------------------


def test_the_workstation_gets_the_study_its_palette_and_writes_the_address(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed)
    assert not at.exception, at.exception
    assert not slice_data(at)  # no server-rendered slice: the browser draws them
    view = workstation_view(at)
    assert view["layout"] == "single" and view["plane"] == "axial" and not view["editable"]
    assert {lab["name"] for lab in view["labels"]} >= {"C1", "C7"}
    uid = env.uids[env.boxed]
    number = int(qp(at, "slice"))
    assert qp(at, "study") == uid and qp(at, "plane") == "axial"
    assert view["cursor"][0] == number - 1  # the address counts from 1, as the viewer shows
    caption = next(c.value for c in at.caption if c.value.startswith("**Axial "))
    assert caption.startswith(f"**Axial {number}/{SHAPE[0]} · z = ")
    assert "instance number" in caption
    # the layout switch: three linked planes
    at.button_group(key="vw_ws_layout").set_value("Three planes").run()
    assert workstation_view(at)["layout"] == "three"


def test_a_deep_link_opens_its_study_plane_and_slice(env: Scene) -> None:
    at = AppTest.from_file(str(ROOT / "pages/viewer.py"), default_timeout=TIMEOUT)
    at.session_state["user"] = env.users["viewer"]
    at.query_params["study"] = env.uids[env.boxed]  # nothing chosen in the case list
    at.query_params["plane"] = "sagittal"
    at.query_params["slice"] = "7"
    at.run()
    assert not at.exception, at.exception
    assert any(env.uids[env.boxed] in s.value for s in at.subheader)
    assert at.session_state["viewer_study_id"] == env.boxed
    view = workstation_view(at)
    assert view["plane"] == "sagittal" and view["cursor"][2] == 6  # sagittal runs along L
    assert qp(at, "slice") == "7" and qp(at, "plane") == "sagittal"
    # the address changes (Back/Forward rerun the page with the old one): the page follows it
    at.query_params["slice"] = "12"
    at.run()
    assert workstation_view(at)["cursor"][2] == 11
    # a slice beyond the volume is clamped, junk is ignored
    at.query_params["slice"] = "9999"
    at.run()
    assert workstation_view(at)["cursor"][2] == SHAPE[2] - 1


def test_a_study_too_large_for_the_browser_falls_back_to_server_slices(env: Scene) -> None:
    at = run_page("pages/viewer.py", env.users["admin"], viewer_study_id=env.boxed, **FALLBACK)
    assert not at.exception, at.exception
    assert any("server-rendered slices" in i.value for i in at.info)
    assert set(slice_data(at)) == {"axial", "sagittal", "coronal"}
    assert not any(el.proto.bytes for el in at.get("bidi_component"))
    assert [t.label for t in at.tabs] == ["Slices", "3-D vertebrae"]
