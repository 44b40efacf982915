"""Shared pytest wiring: fixtures from the helper modules are registered here."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytest_plugins: list[str] = [
    module
    for module in ("tests.db_fixtures", "tests.dicom_fixtures", "tests.chromium_fixtures")
    if importlib.util.find_spec(module) is not None
]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's SPINE_* settings (except the test PostgreSQL URL)."""
    for key in list(os.environ):
        if key.startswith("SPINE_") and key != "SPINE_TEST_PG_URL":
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it in ``sys.modules``; a process
    pool started later in the same worker (spawn) would re-run that page in every child instead of
    pytest's entry point. Put the real ``__main__`` back after each test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


BROWSER_RERUN_ON = [PlaywrightTimeout]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser test that timed out waiting in Playwright gets one rerun (pytest-rerunfailures).

    On a busy 2-core runner a click can land while Streamlit redraws and be lost; Playwright's own
    runner retries on CI for that reason. Only Playwright's TimeoutError is retried, once: a wrong
    assertion or an app error fails at once, and a test that times out twice fails. Reruns are
    listed in the summary (``R``), so a flaky test stays visible."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=BROWSER_RERUN_ON))
