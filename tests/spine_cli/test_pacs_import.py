"""`spine import dicomweb` against a real Orthanc (Debian's package; skipped only if it cannot be
installed): a generated study is uploaded, imported, re-imported (nothing twice), and the failures
a site meets (wrong password, PACS down, an unknown study) give one clear line and leave nothing
behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db import models as m
from db.workspace import open_workspace
from spine_cli.main import main
from spine_core.config import load_settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.spine_core.io.orthanc_server import Orthanc, free_port, orthanc  # noqa: F401

SHAPE = (48, 64, 64)
# One Orthanc per module: keep its tests on one xdist worker, in file order.
pytestmark = pytest.mark.xdist_group("orthanc")


@pytest.fixture(scope="module")
def uploaded(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[str]:  # noqa: F811
    """Two synthetic studies on the PACS; their StudyInstanceUIDs."""
    out = tmp_path_factory.mktemp("phantom")
    write_rsna_dataset(out, 2, 11, shape=SHAPE, workers=1)
    orthanc.upload(sorted((out / "train_images").rglob("*.dcm")))
    return sorted(p.name for p in (out / "train_images").iterdir())


def _env(monkeypatch: pytest.MonkeyPatch, server: Orthanc, data: Path, **changes: str) -> None:
    for key, value in {**server.settings_env(), "SPINE_DATA_DIR": str(data), "SPINE_WORKERS": "1",
                       **changes}.items():
        monkeypatch.setenv(key, value)


def _studies(data: Path) -> list[str]:
    ws = open_workspace(load_settings(environ={"SPINE_DATA_DIR": str(data)}))
    with ws.sessions() as session:
        return sorted(session.scalars(select(m.Study.study_uid)))


def test_import_dicomweb_then_again(orthanc: Orthanc, uploaded: list[str], tmp_path: Path,  # noqa: F811
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from db.pacs import list_pacs_studies

    _env(monkeypatch, orthanc, tmp_path)
    assert [r.study_uid for r in sorted(list_pacs_studies(load_settings()), key=lambda r: r.study_uid)] == uploaded
    assert main(["import", "dicomweb", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 studies found, 2 retrieved" in out and "2 added" in out
    assert _studies(tmp_path) == uploaded
    assert list_pacs_studies(load_settings()) == []  # the case browser's "on the PACS, not imported"
    for uid in uploaded:
        assert len(list((tmp_path / "pacs" / uid).rglob("*.dcm"))) == SHAPE[0]
    assert main(["import", "dicomweb", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 already retrieved, 0 added, 2 already imported" in out


def test_import_one_study_by_uid_and_filters(orthanc: Orthanc, uploaded: list[str],  # noqa: F811
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, orthanc, tmp_path)
    url = orthanc.dicomweb
    assert main(["import", "dicomweb", url, "--study", uploaded[1], "--modality", "CT",
                 "--since", "1990-01-01", "--no-progress"]) == 0
    assert "1 studies found" in capsys.readouterr().out
    assert _studies(tmp_path) == [uploaded[1]]
    assert main(["import", "dicomweb", "--patient", "nobody-has-this-id", "--no-progress"]) == 0
    assert "0 studies found" in capsys.readouterr().out


def test_wrong_password_one_line(orthanc: Orthanc, uploaded: list[str], tmp_path: Path,  # noqa: F811
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, orthanc, tmp_path, SPINE_DICOMWEB_PASSWORD="wrong")
    assert main(["import", "dicomweb", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "refused the credentials (HTTP 401)" in err and "SPINE_DICOMWEB_PASSWORD" in err
    assert "wrong" not in err


def test_pacs_down_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPINE_DICOMWEB_URL", f"http://127.0.0.1:{free_port()}/dicom-web")
    assert main(["import", "dicomweb", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach the PACS" in err


def test_unknown_study_and_bad_uid(orthanc: Orthanc, uploaded: list[str], tmp_path: Path,  # noqa: F811
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, orthanc, tmp_path)
    assert main(["import", "dicomweb", "--study", "1.2.3.4.5.6.7", "--no-progress"]) == 3
    assert "study 1.2.3.4.5.6.7: not found on the PACS" in capsys.readouterr().err
    assert main(["import", "dicomweb", "--study", "../../etc", "--no-progress"]) == 2
    assert "is not a DICOM UID" in capsys.readouterr().err
    assert not (tmp_path / "pacs").exists() or not any((tmp_path / "pacs").iterdir())
    # an unknown study beside a real one: named, and the real one is imported
    assert main(["import", "dicomweb", "--study", "1.2.3.4.5.6.7", "--study", uploaded[0],
                 "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "study 1.2.3.4.5.6.7: not found on the PACS" in err and uploaded[0] not in err
    ws = open_workspace(load_settings())
    with ws.sessions() as session:
        assert session.scalars(select(m.Study.study_uid)).all() == [uploaded[0]]


def test_study_deleted_after_search_is_named_and_others_continue(
        orthanc: Orthanc, uploaded: list[str], tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A study that disappears between the search and its retrieval: named, nothing of it left,
    the other study imported."""
    import requests

    from db import pacs
    from spine_core.io import dicomweb as dw

    _env(monkeypatch, orthanc, tmp_path)
    settings = load_settings()
    gone = uploaded[0]
    real_retrieve = dw.retrieve_study

    def delete_then_retrieve(client, config, study_uid, root, **kw):  # type: ignore[no-untyped-def]
        if study_uid == gone:  # the PACS loses it now (a real deletion through Orthanc's REST API)
            ids = requests.post(f"{orthanc.base}/tools/lookup", data=gone, auth=orthanc.auth,
                                timeout=30).json()
            for hit in ids:
                requests.delete(f"{orthanc.base}/studies/{hit['ID']}", auth=orthanc.auth,
                                timeout=30).raise_for_status()
        return real_retrieve(client, config, study_uid, root, **kw)

    monkeypatch.setattr(dw, "retrieve_study", delete_then_retrieve)
    report = pacs.import_dicomweb(settings, progress=False)
    assert report.studies_added == 1
    assert len(report.problems) == 1 and report.problems[0].startswith(f"study {gone}: not found")
    assert _studies(tmp_path) == [uploaded[1]]
    assert not (tmp_path / "pacs" / gone).exists()
    assert not any((tmp_path / "pacs" / ".partial").iterdir())
