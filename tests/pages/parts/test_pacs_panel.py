"""The case browser's PACS panel in AppTest, against the real Orthanc (no mock): not configured
(one line on how to), the studies not imported yet listed (narrowed by patient and date), a wrong
password and a PACS that is down each one clear line with no traceback, and nothing of it for users
who may not import.

An import job whose worker died is shown failed with the reason, and its Retry imports the study
in the background (the row read again until it ends, then the study's result line).

Selecting rows and importing them is a browser thing (AppTest cannot select dataframe rows):
tests/browser/test_pacs_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import job_queue, job_rows
from db import models as m
from db.session import unit_of_work
from spine_core.job_liveness import worker_id
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.app_helpers import app, demo_workspace, pages_on, signed_in
from tests.spine_core.io.orthanc_server import Orthanc, free_port, orthanc  # noqa: F401

pytestmark = pytest.mark.xdist_group("orthanc")
CASES = "pages/cases.py"


@pytest.fixture(scope="module")
def study_uid(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    out = tmp_path_factory.mktemp("panel-phantom")
    write_rsna_dataset(out, 1, 41, shape=(48, 64, 64), workers=1)
    orthanc.upload(sorted((out / "train_images").rglob("*.dcm")))
    (uid,) = [p.name for p in (out / "train_images").iterdir()]
    return uid


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No SPINE_DICOMWEB_* from the caller's environment; the test sets its own."""
    for key in ("SPINE_DICOMWEB_URL", "SPINE_DICOMWEB_USER", "SPINE_DICOMWEB_PASSWORD",
                "SPINE_DICOMWEB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch


def _cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, username: str = "admin") -> AppTest:
    ws = demo_workspace(tmp_path / "var")
    with pages_on(ws, monkeypatch):
        return app(signed_in(ws, username), script=CASES).run()


def _lines(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in at.get(kind)]


def _list(at: AppTest) -> AppTest:
    return at.button(key="pacs_list").click().run()


def test_not_configured_says_how_in_one_line(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    at = _cases(tmp_path, env)
    assert not at.exception
    hint = [c for c in _lines(at, "caption") if "SPINE_DICOMWEB_URL" in c]
    assert len(hint) == 1 and "\n" not in hint[0] and hint[0].startswith("No PACS is configured")
    assert [b for b in at.button if b.key == "pacs_list"] == []


def test_lists_the_studies_not_imported(orthanc: Orthanc, study_uid: str, tmp_path: Path,  # noqa: F811
                                        env: pytest.MonkeyPatch) -> None:
    for key, value in orthanc.settings_env().items():
        env.setenv(key, value)
    ws = demo_workspace(tmp_path / "var")
    with pages_on(ws, env):
        at = _list(app(signed_in(ws, "admin"), script=CASES).run())
        assert not at.exception and not at.error
        (table,) = [d.value for d in at.dataframe if "Modalities" in d.value.columns]
        assert list(table["Study UID"]) == [study_uid]
        assert list(table["Modalities"]) == ["CT"] and list(table["Instances"]) == [48]
        assert list(table["Series"]) == [1] and list(table["Study date"])[0].count("-") == 2
        assert at.button(key="pacs_import").disabled  # nothing selected yet
        at.text_input(key="pacs_patient").input("nobody-has-this-id")
        at = _list(at.run())
        assert not [d for d in at.dataframe if "Modalities" in d.value.columns]
        assert any("matching the patient and date" in i for i in _lines(at, "info"))
        at.text_input(key="pacs_patient").input("")
        at.date_input(key="pacs_since").set_value(dt.date.today())  # the study is of 2022
        at = _list(at.run())
        assert any("matching the patient and date" in i for i in _lines(at, "info"))
        at.date_input(key="pacs_since").set_value(dt.date(1990, 1, 1))  # decades back: the widget allows it
        at = _list(at.run())
        assert at.date_input(key="pacs_since").value == dt.date(1990, 1, 1)
        (table,) = [d.value for d in at.dataframe if "Modalities" in d.value.columns]
        assert list(table["Study UID"]) == [study_uid]


@pytest.mark.parametrize("case", ["wrong password", "down"])
def test_pacs_refusing_or_down_is_one_line(orthanc: Orthanc, tmp_path: Path,  # noqa: F811
                                           env: pytest.MonkeyPatch, case: str) -> None:
    for key, value in orthanc.settings_env().items():
        env.setenv(key, value)
    if case == "wrong password":
        env.setenv("SPINE_DICOMWEB_PASSWORD", "not-the-password")
        says = "refused the credentials (HTTP 401)"
    else:
        env.setenv("SPINE_DICOMWEB_URL", f"http://127.0.0.1:{free_port()}/dicom-web")
        says = "cannot reach the PACS"
    ws = demo_workspace(tmp_path / "var")
    with pages_on(ws, env):
        at = _list(app(signed_in(ws, "admin"), script=CASES).run())
    assert not at.exception
    errors = _lines(at, "error")
    assert len(errors) == 1 and says in errors[0] and "\n" not in errors[0], errors
    assert "not-the-password" not in errors[0] and "Traceback" not in errors[0]
    assert not [d for d in at.dataframe if "Modalities" in d.value.columns]
    assert any("No study matches" in i for i in _lines(at, "info"))  # the rest of the page is there


@pytest.mark.parametrize("username", ["reader1", "adjudicator1", "viewer"])
def test_no_panel_without_the_import_permission(orthanc: Orthanc, tmp_path: Path,  # noqa: F811
                                                env: pytest.MonkeyPatch, username: str) -> None:
    for key, value in orthanc.settings_env().items():
        env.setenv(key, value)
    at = _cases(tmp_path, env, username)
    assert not at.exception
    assert [e for e in at.expander if "PACS" in e.label] == []
    assert [b for b in at.button if b.key in ("pacs_list", "pacs_import")] == []


def test_an_import_whose_worker_died_is_shown_failed_and_retried(
        orthanc: Orthanc, study_uid: str, tmp_path: Path, env: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The panel shows the import job as its row has it: failed with the reason when its worker
    died, with a Retry that imports the study in the background; then the study's result line."""
    for key, value in orthanc.settings_env().items():
        env.setenv(key, value)
    ws = demo_workspace(tmp_path / "var")
    job_id = job_queue.enqueue(ws.sessions, kind="pacs", lock_key=job_rows.pacs_key(),
                               owner="alice", study_ids=[study_uid])
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = worker_id().split(":")[0]
    with unit_of_work(ws.sessions) as session:  # a worker on this machine took it, then died
        row = session.get(m.PredictionJobRow, job_id)
        assert row is not None
        row.status, row.worker = "running", f"{host}:{gone.pid}:dead"
    with pages_on(ws, env):
        at = app(signed_in(ws, "admin"), script=CASES).run()
        assert not at.exception
        (error,) = [e for e in _lines(at, "error") if "PACS import" in e]
        assert error == (f"The PACS import asked by alice failed: the worker process {gone.pid} "
                         f"on {host} is gone")
        at = at.button(key="pacs_retry").click().run()
        assert not at.exception and not at.error
        retried = job_rows.get_latest(ws.sessions, job_rows.pacs_key())
        assert retried is not None and retried.retry_of == job_id and retried.owner == "admin"
        deadline = time.monotonic() + 120
        while job_rows.get(ws.sessions, retried.id).status == "running":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the retried import did not end"
            time.sleep(0.2)
        at = at.run()
        assert not at.exception and not at.error
        assert f"imported study {study_uid} (48 instances)" in _lines(at, "success")
    with ws.sessions() as session:
        assert list(session.scalars(select(m.Study.study_uid).where(
            m.Study.study_uid == study_uid))) == [study_uid]
