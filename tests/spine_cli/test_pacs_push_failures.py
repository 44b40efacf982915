"""`spine push` when the PACS fails, against the real Orthanc (and the fault-injecting loopback proxy
in front of it; nothing mocked): a wrong password and a PACS that is down are one line each with
nothing stored; a PACS that fails halfway through the objects says, in the same one line, which were
sent already (pushing again would store those twice)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from db.session import unit_of_work
from db.users import ensure_demo_users
from db.workspace import open_workspace
from spine_cli.main import main
from spine_core.config import load_settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.spine_core.io.fault_proxy import fault_proxy
from tests.spine_core.io.orthanc_server import Orthanc, free_port, orthanc  # noqa: F401

pytestmark = pytest.mark.xdist_group("orthanc")
SHAPE = (48, 64, 64)


@pytest.fixture()
def site(orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
         capsys: pytest.CaptureFixture[str]) -> str:
    """A generated study (mask, readers' work) imported from its folder, the PACS emptied and
    configured; its StudyInstanceUID."""
    folder = tmp_path / "dataset"
    write_rsna_dataset(folder, 1, 7, shape=SHAPE, workers=1)
    data = tmp_path / "site"
    for key, value in {**orthanc.settings_env(), "SPINE_DATA_DIR": str(data), "SPINE_WORKERS": "1"}.items():
        monkeypatch.setenv(key, value)
    ws = open_workspace(load_settings())
    with unit_of_work(ws.sessions) as session:
        ensure_demo_users(session, actor="test")
    assert main(["import", str(folder), "--no-progress"]) == 0
    orthanc.clear()
    capsys.readouterr()
    return next((folder / "train_images").iterdir()).name


def _stored(orthanc: Orthanc) -> int:  # noqa: F811
    return len(orthanc.get("/instances").json())


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_wrong_password_stores_nothing(orthanc: Orthanc, site: str,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPINE_DICOMWEB_PASSWORD", "not-the-password")
    assert main(["push", site]) == 2
    line = _one_line(capsys)
    assert "refused the credentials (HTTP 401)" in line and "not-the-password" not in line
    assert "already sent" not in line
    assert _stored(orthanc) == 0


def test_pacs_down(orthanc: Orthanc, site: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert main(["push", site, "--to", f"http://127.0.0.1:{free_port()}/dicom-web"]) == 2
    assert "cannot reach the PACS" in _one_line(capsys)
    assert _stored(orthanc) == 0


def test_failure_halfway_names_what_was_sent(orthanc: Orthanc, site: str,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with fault_proxy(orthanc.base, orthanc.auth) as proxy:
        proxy.fault("", "stow", 500, after=2)
        assert main(["push", site, "--to", proxy.dicomweb]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"error: store SR reader reader2 of study {site}: ") and "HTTP 500" in line
    assert line.endswith("already sent before this failure: SEG (final), SR reader reader1"), line
    assert _stored(orthanc) == 2
    modalities = sorted(requests.get(f"{orthanc.base}/instances/{i}/simplified-tags", auth=orthanc.auth,
                                     timeout=30).json()["Modality"]
                        for i in orthanc.get("/instances").json())
    assert modalities == ["SEG", "SR"]
