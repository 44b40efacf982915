"""Shared pytest wiring: fixtures from the helper modules are registered here."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest

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
