"""Browser end-to-end fixtures: the real app on a free loopback port, driven by Playwright in
Debian's Chromium (never a downloaded browser).

The app runs on its own SQLite database under a temporary folder, bootstrapped exactly as
``scripts/start.sh`` does (demo users, small synthetic demo studies).

Helpers shared by the browser tests live here too: :func:`settle` (wait for Streamlit's run),
:func:`sign_in`, :func:`open_page`, :func:`screenshot`, :func:`app_db`, :func:`tick_grid_row`,
:func:`pick_option`, and the ``contexts`` fixture (one browser context per user).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backend_helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"


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
        "SPINE_DEMO_UNREAD": "0",  # the tests assign what they read (tests/db/test_bootstrap.py)
        "SPINE_WORKERS": "2",
    })
    return env


@pytest.fixture(scope="session")
def app_url(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap the embedded default and serve the app; yields its base URL."""
    spine = [sys.executable, "-m", "spine_cli.main"]
    subprocess.run([*spine, "bootstrap", "--no-progress"], env=app_env, cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    port = free_port()
    log = tmp_path_factory.mktemp("app-log") / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "server.py", "--server.headless", "true",
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


def _new_page(browser: Any) -> tuple[Any, Any]:
    """(context, page): a fresh browser context (its own cookies and session) and its page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    return context, pg


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context, pg = _new_page(browser)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def contexts(browser: Any) -> Iterator[Callable[[], Any]]:
    """New browser contexts on demand (one per user), closed at the end; each call returns
    the new context's page."""
    made: list[Any] = []

    def new() -> Any:
        context, pg = _new_page(browser)
        made.append(context)
        return pg

    yield new
    for context in made:
        context.close()


def screenshot(page: object, name: str) -> Path:
    """Save a screenshot under test-artifacts/screenshots (shown in the README)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)  # type: ignore[attr-defined]
    return path


def settle(page: Any, pause: float = 0.6) -> None:
    """Wait until Streamlit has finished the run the last action started."""
    time.sleep(pause)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)


def tick_grid_row(page: Any, table: Any, row: int, took: Any, tries: int = 3) -> None:
    """Tick the checkbox of ``row`` (0-based) in a Streamlit data grid and wait for ``took``, the
    locator that shows the app took the selection.

    The grid is a canvas: a click that lands before the grid takes pointer events (a rerun still
    drawing it, as seen under CI's load) is lost without a trace. The click is given again only
    when the page's run is over and ``took`` has still not come, so a slow run is never toggled
    back off."""
    settle(page, 0.3)
    box = table.locator("canvas").first.bounding_box()
    assert box is not None, "the data grid has no canvas"
    for _ in range(tries):
        page.mouse.click(box["x"] + 15, box["y"] + 35 + 17 + 35 * row)
        settle(page, 1.0)
        try:
            took.first.wait_for(timeout=5_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the click was lost
            settle(page, 0.3)
            if took.count():
                return
    took.first.wait_for(timeout=5_000)  # fails naming what never came


def pick_option(page: Any, box: Any, value: str, tries: int = 3) -> None:
    """Choose ``value`` in the Streamlit selectbox ``box`` (a combobox locator) by typing it.

    Typing goes into the box's own input (``fill``), never to the page, so a viewer's keyboard
    shortcuts can't take it. A dropdown closed by a rerun that was still running is opened
    again, at most ``tries`` times."""
    option = page.get_by_role("option").filter(has_text=re.compile(rf"^{re.escape(value)}$"))
    for attempt in range(tries):
        settle(page, 0.3)
        box.scroll_into_view_if_needed()
        box.click()
        box.fill(value)
        try:
            option.first.wait_for(timeout=5_000)
            option.first.click()
            break
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the list closed or lagged
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
    settle(page, 1.0)


def set_expander(page: Any, label: str, expanded: bool, tries: int = 3) -> Any:
    """Open (or close) the Streamlit expander titled ``label`` and wait until its body shows (or
    is hidden); returns the body's locator.

    A click that lands while a rerun redraws the page can be lost, or undone by the redraw. The
    click is given again only once the run is over and the expander is still not as asked."""
    expander = page.locator("[data-testid=stExpander]").filter(
        has=page.get_by_text(label, exact=True))
    body = expander.locator("[data-testid=stExpanderDetails]")

    def shown() -> bool:
        return bool(body.count()) and body.first.is_visible()

    for _ in range(tries):
        settle(page, 0.3)
        if shown() == expanded:
            return body
        expander.get_by_text(label, exact=True).first.click()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and shown() != expanded:
            time.sleep(0.1)
    settle(page, 0.3)
    assert shown() == expanded, f"the expander {label!r} did not {'open' if expanded else 'close'}"
    return body


def submit_sign_in(page: Any, base_url: str, username: str, password: str) -> None:
    """Open the app and submit the sign-in form, whatever comes of it."""
    page.goto(base_url)
    page.get_by_label("User name", exact=True).wait_for()
    page.get_by_label("User name", exact=True).fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_in(page: Any, base_url: str, username: str, password: str | None = None) -> None:
    """Sign in (a demo account's password is its user name) and wait for the first page."""
    submit_sign_in(page, base_url, username, username if password is None else password)
    page.get_by_role("button", name="Sign out").wait_for()
    settle(page)
    session_cookie(page)  # a reload or a deep link from here on stays signed in


def session_cookie(page: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The browser's session cookie, once the app has handed it over (fails after the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for cookie in page.context.cookies():
            if cookie["name"] == "spine_session":
                return dict(cookie)
        time.sleep(0.2)
    raise AssertionError("the app never set the session cookie")


def open_page(page: Any, title: str, pause: float = 1.5) -> None:
    """Follow the navigation link ``title`` and wait for the page's run."""
    page.get_by_role("link", name=title).click()
    settle(page, pause)


def import_synthetic_studies(app_env: dict[str, str], folder: Path, n: int, seed: int,
                             shape: tuple[int, int, int] = (48, 112, 112)) -> list[str]:
    """Write ``n`` synthetic RSNA studies without readers under ``folder`` and import them into
    the running app's database (``spine import``); returns their StudyInstanceUIDs."""
    import csv

    from spine_core.phantom.rsna_layout import write_rsna_dataset

    write_rsna_dataset(folder, n_studies=n, seed=seed, shape=shape, workers=1, n_readers=0)
    subprocess.run([sys.executable, "-m", "spine_cli.main", "import", str(folder), "--no-progress"],
                   env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    with (folder / "train.csv").open(newline="") as fh:
        return [row["StudyInstanceUID"] for row in csv.DictReader(fh)]


def app_db(app_env: dict[str, str]) -> sqlite3.Connection:
    """A read-only connection to the running app's SQLite database."""
    path = Path(app_env["SPINE_DATA_DIR"]) / "spine.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
