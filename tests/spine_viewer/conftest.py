"""Fixtures of the viewer's browser tests: the demo app ``viewer_app.py`` served on a free loopback
port (one per configuration); the Chromium is the suite's one ``browser`` fixture
(tests/chromium_fixtures.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backend_helpers import free_port
from tests.browser.conftest import _wait_http

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "viewer_app.py"


class ViewerApp:
    """A running viewer_app.py: its base URL and its log (one ``VIEWER_RUN n`` line per run)."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def runs(self) -> int:
        return self.log.read_text(errors="replace").count("VIEWER_RUN ")


@pytest.fixture(scope="session")
def viewer_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ViewerApp]]:
    """Start viewer_app.py with extra environment variables on demand (one server per set)."""
    started: dict[tuple[tuple[str, str], ...], tuple[subprocess.Popen[bytes], ViewerApp]] = {}

    def start(**env_extra: str) -> ViewerApp:
        key = tuple(sorted(env_extra.items()))
        if key in started:
            return started[key][1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        env.update(env_extra)
        env["PYTHONPATH"] = str(ROOT)
        port = free_port()
        log = tmp_path_factory.mktemp("viewer-app") / "streamlit.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
                 "--server.port", str(port), "--server.address", "127.0.0.1",
                 "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        app = ViewerApp(f"http://127.0.0.1:{port}", log)
        started[key] = (proc, app)
        _wait_http(f"{app.url}/_stcore/health", 120, proc, log)
        return app

    yield start
    for proc, _ in started.values():
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
