"""Two app servers on one database, in Chromium: a reader signed in on one replica is signed in on
another (the cookie's token is a database row), and a server killed and started again still signs
its readers in (a restart forgets nobody). Cookies belong to the host, not the port, so one
browser context carries its cookie from one loopback server to the other."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.backend_helpers import free_port
from tests.browser.conftest import ROOT, _wait_http, import_synthetic_studies, open_page, sign_in
from tests.browser.test_annotation_e2e import axial_index, choose_study, step

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@contextmanager
def replica(env: dict[str, str], log: Path,
            port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One more ``streamlit run server.py`` on the same data folder (and so the same database);
    ``port``: where (default a free one; the port of a killed replica plays its restart)."""
    port = port or free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "server.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/_stcore/health", 120, proc, log)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _signed_in_as(page: Any, label: str) -> None:
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_text(label)).to_be_visible()


def test_a_reader_stays_signed_in_across_replicas_and_a_killed_server(
    app_url: str, app_env: dict[str, str], contexts: Any, tmp_path: Path,
) -> None:
    reader = contexts()
    with replica(app_env, tmp_path / "b.log") as (other_url, _):
        sign_in(reader, other_url, "reader1")  # signed in on replica B
        reader.goto(f"{app_url}/annotate")  # replica A never saw this reader
        _signed_in_as(reader, "Reader 1 · Reader")

    second = contexts()
    with replica(app_env, tmp_path / "c.log") as (url_c, proc_c):
        sign_in(second, url_c, "reader2")
        open_page(second, "Annotate")
        proc_c.send_signal(signal.SIGKILL)  # the server dies without a word
        proc_c.wait(30)
    with replica(app_env, tmp_path / "d.log") as (url_d, _):  # a fresh process, same database
        second.goto(f"{url_d}/annotate")
        _signed_in_as(second, "Reader 2 · Reader")


@pytest.fixture(scope="module")
def restart_study(app_url: str, app_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """One synthetic study of this module's own, assigned to reader1 and reader2."""
    from tests.browser.test_annotate_workstation_e2e import ASSIGN

    folder = tmp_path_factory.mktemp("e2e-restart") / "data"
    uid = import_synthetic_studies(app_env, folder, 1, seed=4813, shape=(48, 96, 96))[0]
    subprocess.run([sys.executable, "-c", ASSIGN, uid], env=app_env, cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return uid


def test_a_reader_whose_server_died_is_back_at_work_without_a_reload(
    app_env: dict[str, str], restart_study: str, contexts: Any, tmp_path: Path,
) -> None:
    """The browser reconnects to a fresh process on the same address (what a replica's death
    behind nginx, or a restart, looks like), and Streamlit runs nothing there by itself. The
    viewer's next message is a rerun of its fragment, which a session that never ran the page does
    not know; Streamlit dropped it, so the page stopped following the viewer (and a viewer still
    streaming stayed at "loading n %"). server.py's run_whole_page_for_unknown_fragments runs the
    whole page instead: the side panel follows the slice again, with no reload."""
    env = {**app_env, "SPINE_VOLUME_SECRET": "one-secret-for-both-processes"}
    port = free_port()
    reader = contexts()
    sockets: list[Any] = []
    frames: dict[int, int] = {}  # socket index -> frames the server sent on it

    def opened(ws: Any) -> None:
        n = len(sockets)
        sockets.append(ws)
        frames[n] = 0
        ws.on("framereceived", lambda _payload: frames.__setitem__(n, frames[n] + 1))

    reader.on("websocket", opened)
    with replica(env, tmp_path / "first.log", port) as (url, proc):
        sign_in(reader, url, "reader1")
        open_page(reader, "Annotate")
        choose_study(reader, restart_study)
        shown = axial_index(reader) + 1  # the page counts slices from 1, the viewer from 0
        expect(reader.get_by_text(f"· axial {shown}", exact=False).first).to_be_visible()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    opened = len(sockets)
    with replica(env, tmp_path / "second.log", port):
        deadline = time.monotonic() + 60
        while len(sockets) == opened and time.monotonic() < deadline:  # Streamlit's reconnect
            reader.wait_for_timeout(250)
        assert len(sockets) > opened, "the browser never reconnected"
        # untouched, the page runs on the new process by itself (the sidebar's timer fragment
        # makes Streamlit's front end ask for a run when it reconnects): the server sends it
        deadline = time.monotonic() + 20
        while frames[len(sockets) - 1] == 0 and time.monotonic() < deadline:
            reader.wait_for_timeout(250)
        assert frames[len(sockets) - 1] > 0, "the page did not run on the new process by itself"
        reader.wait_for_timeout(1000)
        for _ in range(3):
            step(reader, "ArrowUp")
        assert axial_index(reader) + 1 == shown + 3
        # the slice is committed through the viewer's fragment: the page runs on the new process
        expect(reader.get_by_text(f"· axial {shown + 3}", exact=False).first).to_be_visible(
            timeout=20_000)
        expect(reader.get_by_role("button", name="Sign out")).to_be_visible()
        assert reader.url.startswith(url), reader.url  # never reloaded elsewhere
        second = (tmp_path / "second.log").read_text()
        assert "does not exist anymore" not in second, second[-2000:]
