"""Browser end-to-end fixtures: the real app on a free loopback port, driven by Playwright in
Debian's Chromium (never a downloaded browser).

The app runs on its own SQLite database under a temporary folder, bootstrapped exactly as
``scripts/start.sh`` does (demo users, small synthetic demo studies).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("SPINE_TEST_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the app did not answer at {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def app_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("app-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({
        "SPINE_DATA_DIR": str(data),
        "SPINE_DEMO_STUDIES": "2",
        "SPINE_DEMO_SHAPE": "96x160x160",
        "SPINE_WORKERS": "2",
    })
    return env


@pytest.fixture(scope="session")
def app_url(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap the embedded default and serve the app; yields its base URL."""
    spine = [sys.executable, "-m", "spine_core.cli"]
    subprocess.run([*spine, "bootstrap", "--no-progress"], env=app_env, cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    port = _free_port()
    log = tmp_path_factory.mktemp("app-log") / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            env=app_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/_stcore/health", 120, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed; run scripts/ensure-chromium.sh")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def screenshot(page: object, name: str) -> Path:
    """Save a screenshot under test-artifacts/screenshots (shown in the README)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)  # type: ignore[attr-defined]
    return path


def sign_in(page: object, base_url: str, username: str, password: str) -> None:
    page.goto(base_url)  # type: ignore[attr-defined]
    page.get_by_label("User name", exact=True).fill(username)  # type: ignore[attr-defined]
    page.get_by_label("Password", exact=True).fill(password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign out").wait_for()  # type: ignore[attr-defined]
