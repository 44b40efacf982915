"""Shared pytest wiring: fixtures from the helper modules are registered here."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest_plugins: list[str] = [
    module
    for module in ("tests.db_fixtures", "tests.dicom_fixtures")
    if importlib.util.find_spec(module) is not None
]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's SPINE_* settings (except the test PostgreSQL URL)."""
    for key in list(os.environ):
        if key.startswith("SPINE_") and key != "SPINE_TEST_PG_URL":
            monkeypatch.delenv(key, raising=False)
