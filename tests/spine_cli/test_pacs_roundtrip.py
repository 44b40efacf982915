"""SEG and SR out, through a real Orthanc, and back in (Debian's Orthanc; skipped only if it cannot
be installed).

Site A imports a generated study from its folder (mask, three readers' boxes and calls), exports
SEG and SR (each read back by highdicom and pydicom), and pushes them (STOW-RS). Site B imports the
CT from the PACS with `spine import dicomweb`, fetches the SEG and SRs through Orthanc's REST API
and imports them: the same mask voxel for voxel, the same boxes and calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from db import models as m
from db.dicom_export import final_labels_with_provenance, reader_works
from db.session import unit_of_work
from db.studies import open_image, open_mask
from db.users import ensure_demo_users
from db.workspace import Workspace, open_workspace
from spine_cli.main import main
from spine_core.config import load_settings
from spine_core.labels import level_name
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.spine_core.io.orthanc_server import Orthanc, orthanc  # noqa: F401

pytestmark = pytest.mark.xdist_group("orthanc")
SHAPE = (48, 64, 64)


def _ws(data: Path) -> Workspace:
    ws = open_workspace(load_settings(environ={"SPINE_DATA_DIR": str(data), "SPINE_WORKERS": "1"}))
    with unit_of_work(ws.sessions) as session:
        ensure_demo_users(session, actor="test")
    return ws


def _env(monkeypatch: pytest.MonkeyPatch, server: Orthanc, data: Path) -> None:
    for key, value in {**server.settings_env(), "SPINE_DATA_DIR": str(data), "SPINE_WORKERS": "1"}.items():
        monkeypatch.setenv(key, value)


def _mask_and_work(ws: Workspace, uid: str) -> tuple[np.ndarray, list[object]]:
    with ws.sessions() as session:
        study = session.scalars(select(m.Study).where(m.Study.study_uid == uid)).one()
        series = study.series[0]
        mask = open_mask(ws, series, open_image(ws, series))
        assert mask is not None
        return np.asarray(mask.array).copy(), reader_works(session, study.id)


def test_seg_and_sr_through_orthanc(orthanc: Orthanc, tmp_path: Path,  # noqa: F811
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import highdicom as hd

    from spine_core.io.dicom_sr import read_sr

    folder = tmp_path / "dataset"
    write_rsna_dataset(folder, 1, 5, shape=SHAPE, workers=1)
    uid = next((folder / "train_images").iterdir()).name
    site_a, site_b = tmp_path / "a", tmp_path / "b"
    ws_a = _ws(site_a)
    _env(monkeypatch, orthanc, site_a)
    assert main(["import", str(folder), "--no-progress"]) == 0
    mask_a, works_a = _mask_and_work(ws_a, uid)
    assert any(w.boxes for w in works_a)  # type: ignore[attr-defined]

    # export: every object read back by highdicom and pydicom
    out = tmp_path / "out"
    assert main(["export", "seg", uid, str(out)]) == 0
    assert main(["export", "sr", uid, str(out)]) == 0
    capsys.readouterr()
    seg_path = out / f"{uid}_seg.dcm"
    seg = hd.seg.segread(seg_path)
    ct = pydicom.dcmread(next((folder / "train_images" / uid).iterdir()))
    assert seg.StudyInstanceUID == uid and seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert seg.SOPInstanceUID.startswith(load_settings().dicom_uid_root)
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [level_name(int(v)) for v in np.unique(mask_a) if v]
    c2 = next(d for d in seg.SegmentSequence if d.SegmentLabel == "C2")
    assert c2.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39976000"
    srs = sorted(out.glob(f"{uid}_sr_*.dcm"))
    assert [p.name.split("_sr_")[1] for p in srs] == ["final.dcm", "reader_reader1.dcm", "reader_reader2.dcm",
                                                      "reader_reader3.dcm"]
    for path in [seg_path, *srs]:
        assert pydicom.dcmread(path).StudyInstanceUID == uid
    for path in srs:
        hd.sr.srread(path)
    _dciodvfy([seg_path, *srs])

    # push by STOW-RS; read back through Orthanc's REST API
    orthanc.upload(sorted((folder / "train_images" / uid).iterdir()))
    assert main(["push", uid]) == 0
    assert capsys.readouterr().out.count("sent ") == 5
    hits = [h for h in _lookup(orthanc, uid) if h["Type"] == "Study"]
    series = orthanc.get(f"/studies/{hits[0]['ID']}/series").json()
    by_modality: dict[str, list[str]] = {}
    for s in series:
        by_modality.setdefault(s["MainDicomTags"]["Modality"], []).extend(s["Instances"])
    assert len(by_modality["SEG"]) == 1 and len(by_modality["SR"]) == 4 and len(by_modality["CT"]) == SHAPE[0]
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    files = []
    for n, instance in enumerate(by_modality["SEG"] + by_modality["SR"]):
        path = fetched / f"{n}.dcm"
        path.write_bytes(orthanc.get(f"/instances/{instance}/file").content)
        files.append(path)
    pushed_seg = pydicom.dcmread(files[0])
    assert pushed_seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and pushed_seg.StudyInstanceUID == uid

    # site B: a SEG whose series is not imported yet
    _env(monkeypatch, orthanc, site_b)
    ws_b = _ws(site_b)
    assert main(["import", str(files[0])]) == 2
    assert "source series not found" in capsys.readouterr().err

    # site B: CT from the PACS (the SEG and SR series are left there), then the SEG and SRs
    assert main(["import", "dicomweb", "--study", uid, "--no-progress"]) == 0
    assert "1 added" in capsys.readouterr().out
    for path in files:
        assert main(["import", str(path)]) == 0
    mask_b, works_b = _mask_and_work(ws_b, uid)
    assert np.array_equal(mask_a, mask_b)
    assert works_a == works_b
    # again: nothing twice
    capsys.readouterr()
    for path in files:
        assert main(["import", str(path)]) == 0
    assert capsys.readouterr().out.count(": 0 added") == 5
    assert reader_works_equal(ws_b, uid, works_a)
    with ws_a.sessions() as session:
        study = session.scalars(select(m.Study).where(m.Study.study_uid == uid)).one()
        finals = final_labels_with_provenance(session, study.id)
    final_sr = read_sr(out / f"{uid}_sr_final.dcm")
    assert final_sr.final == finals and all("source=" in f.provenance for f in finals)


def _dciodvfy(paths: list[Path]) -> None:
    """The standard's own checker (dicom3tools, installed by scripts/ensure-orthanc.sh): no errors
    (warnings, such as our private coding scheme 99SPINE, are allowed)."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        return
    for path in paths:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors[:5]}"


def reader_works_equal(ws: Workspace, uid: str, expected: list[object]) -> bool:
    return _mask_and_work(ws, uid)[1] == expected


def _lookup(server: Orthanc, uid: str) -> list[dict[str, str]]:
    import requests

    answer = requests.post(f"{server.base}/tools/lookup", data=uid, auth=server.auth, timeout=30)
    answer.raise_for_status()
    return list(answer.json())


def test_pydicom_liver_seg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """pydicom-data's liver.dcm: its CT is not here, so a clear 'source series not found'."""
    import warnings

    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file("liver.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data (liver.dcm) is not installed")
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path))
    assert main(["import", str(path)]) == 2
    assert "source series not found" in capsys.readouterr().err
