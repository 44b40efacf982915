"""Two app servers on one database, in Chromium: a reader signed in on one replica is signed in on
another (the cookie's token is a database row), and a server killed and started again still signs
its readers in (a restart forgets nobody). Cookies belong to the host, not the port, so one
browser context carries its cookie from one loopback server to the other."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.backend_helpers import free_port
from tests.browser.conftest import ROOT, _wait_http, open_page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@contextmanager
def replica(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One more ``streamlit run server.py`` on the same data folder (and so the same database)."""
    port = free_port()
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
