"""A PACS that misbehaves for one study, in front of the real Orthanc (a fault-injecting loopback
proxy, tests/spine_core/io/fault_proxy.py; dicomweb-client talks real HTTP to it, nothing mocked).

For each fault (HTTP 401, 404, 500, garbage, a WADO-RS answer cut off halfway, a thousand series,
the study deleted from the PACS halfway through its transfer, no answer within the timeout) the
import names the broken study in one line that says what happened, leaves nothing of it behind (no
database row, no folder under ``pacs/``, nothing in ``pacs/.partial``), and imports the other study.
When the study search itself fails, the import and the listing say so in one line.

The thousand series are a made-up QIDO-RS series list (1000 valid UIDs) from the proxy: the import
refuses such a study before retrieving anything (SPINE_DICOMWEB_MAX_SERIES, default 200), so no
thousand real instances are needed to test it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db import models as m
from db.pacs import import_dicomweb, list_pacs_studies
from db.workspace import open_workspace
from spine_cli.main import main
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.spine_core.io.fault_proxy import FaultProxy, fault_proxy
from tests.spine_core.io.orthanc_server import PASSWORD, USER, Orthanc, orthanc  # noqa: F401

SHAPE = (48, 64, 64)
pytestmark = pytest.mark.xdist_group("orthanc")


@pytest.fixture(scope="module")
def studies(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:  # noqa: F811
    """Two generated studies (their folders of files), not uploaded yet."""
    out = tmp_path_factory.mktemp("faults-phantom")
    write_rsna_dataset(out, 2, 23, shape=SHAPE, workers=1)
    return sorted((out / "train_images").iterdir())


@pytest.fixture()
def pacs(orthanc: Orthanc, studies: list[Path]) -> Iterator[tuple[FaultProxy, str, str]]:  # noqa: F811
    """The two studies on Orthanc (afresh: a test may delete one) behind a fault proxy;
    (proxy, the study it breaks, the good one)."""
    orthanc.clear()
    orthanc.upload(sorted(f for s in studies for f in s.rglob("*.dcm")))
    with fault_proxy(orthanc.base, orthanc.auth) as proxy:
        yield proxy, studies[0].name, studies[1].name


def _settings(data: Path, proxy: FaultProxy, **more: object) -> Settings:
    return Settings(data_dir=data, workers=1, dicomweb_url=proxy.dicomweb, dicomweb_user=USER,
                    dicomweb_password=PASSWORD, **more)  # type: ignore[arg-type]


def _rows(settings: Settings) -> list[str]:
    with open_workspace(settings).sessions() as session:
        return sorted(session.scalars(select(m.Study.study_uid)))


FAULTS = [
    ("series", 401, "refused the credentials (HTTP 401)"),
    ("wado", 401, "refused the credentials (HTTP 401)"),
    ("wado", 404, "not found on the PACS"),
    ("series", 500, "answered HTTP 500"),
    ("wado", 500, "answered HTTP 500"),
    ("series", "garbage", "not valid DICOMweb"),
    ("wado", "garbage", "not valid DICOMweb"),
    ("wado", "cut", "cut off"),
    ("series", "thousand", "lists 1000 series, more than the 200"),
    ("wado", "vanish", "cut off"),
    ("wado", "hang", "did not answer within 2 s"),
]


@pytest.mark.parametrize(("stage", "fault", "says"), FAULTS, ids=[f"{s}-{f}" for s, f, _ in FAULTS])
def test_one_broken_study_is_named_and_left_out(pacs: tuple[FaultProxy, str, str], tmp_path: Path,
                                                 stage: str, fault: object, says: str) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, stage, fault)  # type: ignore[arg-type]
    # a short timeout for the hung study only (the good one's transfer may be slow on a busy machine)
    settings = _settings(tmp_path, proxy, dicomweb_timeout_s=2.0 if fault == "hang" else 60.0)
    report = import_dicomweb(settings, progress=False)
    assert (bad, stage) in proxy.hits
    assert len(report.problems) == 1, report.problems
    line = report.problems[0]
    assert line.startswith((f"study {bad}: ", f"study {bad} series ")) and says in line, line
    assert "\n" not in line and len(line) < 400 and "Traceback" not in line
    assert PASSWORD not in line
    # nothing of the broken study behind; the good one imported
    assert _rows(settings) == [good]
    assert sorted(p.name for p in (tmp_path / "pacs").iterdir()) == [".partial", good]
    assert list((tmp_path / "pacs" / ".partial").iterdir()) == []
    assert report.studies_added == 1


def test_after_a_fault_the_next_run_imports_the_study(pacs: tuple[FaultProxy, str, str],
                                                     tmp_path: Path) -> None:
    """Resumable: the run after a cut-off transfer retrieves that study afresh, skips the other."""
    proxy, bad, good = pacs
    proxy.fault(bad, "wado", "cut")
    settings = _settings(tmp_path, proxy)
    assert len(import_dicomweb(settings, progress=False).problems) == 1
    proxy.rules = []
    again = import_dicomweb(settings, progress=False)
    assert again.ok and again.retrieved == 1 and again.already_retrieved == 1
    assert _rows(settings) == sorted([bad, good])


def test_vanished_study_is_no_longer_listed(pacs: tuple[FaultProxy, str, str], tmp_path: Path) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "wado", "vanish")
    settings = _settings(tmp_path, proxy)
    import_dicomweb(settings, progress=False)
    proxy.rules = []
    assert list_pacs_studies(settings) == []  # the good one imported, the vanished one gone


def test_thousand_series_under_a_raised_limit_reach_retrieval(pacs: tuple[FaultProxy, str, str],
                                                              tmp_path: Path) -> None:
    """SPINE_DICOMWEB_MAX_SERIES is the limit: raised above 1000, the study is not refused for its
    count (its made-up series are then not on Orthanc: the retrieval says so, naming the study)."""
    proxy, bad, _ = pacs
    proxy.fault(bad, "series", "thousand")
    report = import_dicomweb(_settings(tmp_path, proxy, dicomweb_max_series=2000), progress=False)
    assert len(report.problems) == 1 and "more than" not in report.problems[0]
    assert report.problems[0].startswith(f"study {bad}")
    assert list((tmp_path / "pacs" / ".partial").iterdir()) == []


def test_cli_names_the_broken_study_and_imports_the_other(
        pacs: tuple[FaultProxy, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    proxy, bad, good = pacs
    proxy.fault(bad, "wado", 500)
    for key, value in {"SPINE_DATA_DIR": str(tmp_path), "SPINE_WORKERS": "1",
                       "SPINE_DICOMWEB_USER": USER, "SPINE_DICOMWEB_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(key, value)
    assert main(["import", "dicomweb", proxy.dicomweb, "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert "2 studies found" in captured.out and "1 added" in captured.out and "1 failed" in captured.out
    failed = [line for line in captured.err.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed study {bad} ") and "HTTP 500" in failed[0]


@pytest.mark.parametrize(("fault", "says"), [(401, "refused the credentials (HTTP 401)"),
                                             (500, "answered HTTP 500"),
                                             ("garbage", "not valid DICOMweb")])
def test_search_fails_in_one_line_and_nothing_is_written(pacs: tuple[FaultProxy, str, str],
                                                         tmp_path: Path, fault: object, says: str) -> None:
    """The study search itself fails: the import and the case browser's listing say so in one
    line; nothing is retrieved or imported."""
    from spine_core.io.dicomweb import PacsError

    proxy, _, _ = pacs
    proxy.fault("", "search", fault)  # type: ignore[arg-type]
    settings = _settings(tmp_path, proxy)
    for call in (lambda: import_dicomweb(settings, progress=False), lambda: list_pacs_studies(settings)):
        with pytest.raises(PacsError) as caught:
            call()
        line = str(caught.value)
        assert line.startswith("search: ") and says in line and "\n" not in line, line
    assert _rows(settings) == []
    assert not (tmp_path / "pacs").exists() or not any((tmp_path / "pacs").rglob("*.dcm"))
