"""End to end in Chromium: one study imported from the PACS through the case browser.

A real Orthanc (tests/spine_core/io/orthanc_server.py) holds a generated study; the app runs on its
own empty database with SPINE_DICOMWEB_* pointing at that Orthanc. The admin opens Cases, lists the
PACS's studies not imported yet, selects the study and imports it: the import is a background job
(db.pacs_jobs, in a thread of the app) whose progress the panel reads from its row; when it ends a
line says "imported", the study is in the case list and in the database, and the PACS panel lists
nothing new. reader1 (not an admin) sees no PACS panel. Then two more studies, one of which the PACS
cuts off halfway (a fault-injecting proxy in front of Orthanc, tests/spine_core/io/fault_proxy.py):
both are imported in one job (its progress shown while it runs), one line names the failed study
and why, the other is imported, and the failed one is still listed as not imported. No page shows a traceback.

The app is started here, not by tests/browser/conftest.py's ``app_url``: that one has no PACS, and
the other browser tests expect its catalogue unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spine_core.phantom.rsna_layout import write_rsna_dataset
from tests.backend_helpers import free_port
from tests.browser.conftest import (
    ROOT,
    _wait_http,
    open_page,
    screenshot,
    settle,
    sign_in,
    tick_grid_row,
)
from tests.spine_core.io.fault_proxy import FaultProxy, fault_proxy
from tests.spine_core.io.orthanc_server import Orthanc, orthanc  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser tests need Playwright
    expect = None

SHAPE = (48, 64, 64)


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    """20 s for the page's assertions (reruns are slow while other tests load the cores)."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=None)


def _upload(orthanc: Orthanc, folder: Path, n: int, seed: int) -> list[str]:  # noqa: F811
    """``n`` generated studies uploaded to the PACS; their StudyInstanceUIDs."""
    write_rsna_dataset(folder, n, seed, shape=SHAPE, workers=1)
    orthanc.upload(sorted((folder / "train_images").rglob("*.dcm")))
    return sorted(p.name for p in (folder / "train_images").iterdir())


@pytest.fixture(scope="module")
def study_on_pacs(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """A generated study uploaded to the PACS; its StudyInstanceUID."""
    (uid,) = _upload(orthanc, tmp_path_factory.mktemp("pacs-phantom"), 1, 31)
    return uid


@pytest.fixture(scope="module")
def proxy(orthanc: Orthanc) -> Iterator[FaultProxy]:  # noqa: F811
    """The app's PACS: Orthanc behind a proxy that breaks a study when told to."""
    with fault_proxy(orthanc.base, orthanc.auth) as running:
        yield running


@pytest.fixture(scope="module")
def pacs_app(orthanc: Orthanc, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> Iterator[tuple[str, Path]]:
    """The app with the PACS configured and no study imported; (its URL, its data folder)."""
    data = tmp_path_factory.mktemp("pacs-app")
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({"SPINE_DATA_DIR": str(data), "SPINE_DEMO_STUDIES": "0", "SPINE_WORKERS": "1",
                **orthanc.settings_env(), "SPINE_DICOMWEB_URL": proxy.dicomweb})
    subprocess.run([sys.executable, "-m", "spine_cli.main", "bootstrap", "--no-progress"], env=env,
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    port = free_port()
    log = data / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "server.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/_stcore/health", 120, proc, log)
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _imported(data: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(f"file:{data / 'spine.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT study_uid FROM studies ORDER BY study_uid")]


def test_admin_imports_a_study_from_the_pacs(pacs_app: tuple[str, Path], study_on_pacs: str,
                                              contexts: Any) -> None:
    url, data = pacs_app
    page = contexts()
    sign_in(page, url, "admin")
    open_page(page, "Cases")
    expect(page.get_by_text("No study matches these filters.")).to_be_visible()
    panel = page.get_by_text("Import from the PACS")
    panel.click()
    page.get_by_role("button", name="List studies on the PACS").click()
    settle(page)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_contain_text(study_on_pacs[-12:])
    expect(table).to_contain_text("CT")
    screenshot(page, "pacs-panel-listed")
    # select the study's row: its checkbox, left of the first column (as test_viewer_e2e does)
    importing = page.get_by_role("button", name="Import 1 selected")
    tick_grid_row(page, table, 0, importing)
    expect(importing).to_be_enabled()
    importing.click()
    expect(page.get_by_text(f"imported study {study_on_pacs} ({SHAPE[0]} instances)")).to_be_visible(
        timeout=120_000)
    settle(page)
    expect(page.get_by_text("Every study on the PACS is imported.")).to_be_visible()
    cases = page.get_by_test_id("stDataFrame").last
    expect(cases).to_contain_text(study_on_pacs[-12:])
    expect(page.get_by_text("Studies 1–1 of 1.")).to_be_visible()
    screenshot(page, "pacs-panel-imported")
    assert _imported(data) == [study_on_pacs]
    assert len(list((data / "pacs" / study_on_pacs).rglob("*.dcm"))) == SHAPE[0]
    assert page.get_by_text("Traceback").count() == 0

    reader = contexts()
    sign_in(reader, url, "reader1")
    open_page(reader, "Cases")
    expect(reader.get_by_role("heading", name="Cases")).to_be_visible()
    assert reader.get_by_text("Import from the PACS").count() == 0


def test_a_study_cut_off_is_named_and_the_other_imported(
        pacs_app: tuple[str, Path], study_on_pacs: str, orthanc: Orthanc,  # noqa: F811
        proxy: FaultProxy, tmp_path: Path, contexts: Any) -> None:
    url, data = pacs_app
    broken, good = _upload(orthanc, tmp_path, 2, 37)
    proxy.fault(broken, "wado", "cut")
    page = contexts()
    sign_in(page, url, "admin")
    open_page(page, "Cases")
    page.get_by_text("Import from the PACS").click()
    page.get_by_role("button", name="List studies on the PACS").click()
    settle(page)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_contain_text(broken[-12:])
    expect(table).to_contain_text(good[-12:])
    for row in range(2):  # both rows' checkboxes
        tick_grid_row(page, table, row, page.get_by_role("button", name=f"Import {row + 1} selected"))
    page.get_by_role("button", name="Import 2 selected").click()
    expect(page.get_by_text("Importing from the PACS, asked by admin")).to_be_visible()
    failed = page.get_by_text(f"failed study {broken} series")
    expect(failed).to_be_visible(timeout=120_000)
    expect(failed).to_contain_text("was cut off before its end")
    expect(page.get_by_text(f"imported study {good} ({SHAPE[0]} instances)")).to_be_visible()
    settle(page)
    screenshot(page, "pacs-panel-one-failed")
    assert (broken, "wado") in proxy.hits
    assert _imported(data) == sorted([study_on_pacs, good])
    assert not (data / "pacs" / broken).exists()
    assert list((data / "pacs" / ".partial").iterdir()) == []
    listed = page.get_by_test_id("stDataFrame").first  # still on the PACS, not imported
    expect(listed).to_contain_text(broken[-12:])
    expect(listed).not_to_contain_text(good[-12:])
    expect(page.get_by_text("Studies 1–2 of 2.")).to_be_visible()
    assert page.get_by_text("Traceback").count() == 0
