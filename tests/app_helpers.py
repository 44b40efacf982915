"""A real workspace for AppTest runs of app.py and the admin page: a migrated SQLite database in a
temporary folder with the demo users, the pages pointed at it through ``SPINE_DATA_DIR``.

scrypt runs with a small cost here (the stored hashes say which cost they used, so sign-in checks
them exactly as in production, only faster).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db import models as m
from db import users
from db.session import unit_of_work
from db.workspace import Workspace, open_workspace
from pages.parts.common import SignedInUser, workspace
from spine_core import signin_throttle
from spine_core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
FAST_SCRYPT_N = 2**10


@contextmanager
def fast_scrypt() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "SCRYPT_N", FAST_SCRYPT_N)
        yield


def demo_workspace(root: Path) -> Workspace:
    """A workspace under ``root`` with the demo users."""
    ws = open_workspace(Settings(data_dir=root, workers=1))
    with fast_scrypt(), unit_of_work(ws.sessions) as session:
        users.ensure_demo_users(session)
    return ws


@contextmanager
def pages_on(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """Point the pages at ``ws``; sign-in delays shrunk, throttle counts (rows of ``ws``'s
    database, which the app counts in) forgotten."""
    monkeypatch.setenv("SPINE_DATA_DIR", str(ws.settings.data_dir))
    monkeypatch.setenv("SPINE_WORKERS", "1")
    monkeypatch.setattr(users, "SCRYPT_N", FAST_SCRYPT_N)
    monkeypatch.setattr(signin_throttle, "REFUSAL_DELAY_S", 0.01)
    monkeypatch.setattr(signin_throttle, "FIRST_PENALTY_S", 0.01)
    ws.signin.throttle.reset()
    workspace.clear()
    try:
        yield ws
    finally:
        workspace.clear()
        ws.signin.throttle.reset()


def signed_in(ws: Workspace, username: str) -> SignedInUser:
    """The session value of the account ``username`` as stored now."""
    with ws.sessions() as session:
        u = session.scalars(select(m.User).where(m.User.username == username)).one()
        return SignedInUser(u.id, u.username, u.display_name, u.role, bool(u.is_chair))


def app(user: SignedInUser | None = None, script: str = "app.py", **state: Any) -> AppTest:
    """An AppTest of ``script`` (not run yet), optionally with someone signed in."""
    at = AppTest.from_file(str(ROOT / script), default_timeout=TIMEOUT)
    if user is not None:
        at.session_state["user"] = user
    for key, value in state.items():
        at.session_state[key] = value
    return at


def button(at: AppTest, label: str) -> Any:
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def texts(at: Any, *kinds: str) -> list[str]:
    kinds = kinds or ("title", "subheader", "markdown", "caption", "error", "warning", "info",
                      "success")
    return [str(e.value) for kind in kinds for e in getattr(at, kind)]


def workstation_view(at: AppTest) -> dict[str, Any]:
    """The view the page sent to its one client-side workstation this run (its frame's JSON
    header)."""
    from spine_viewer.transport import unpack_frame

    frames = [el.proto.bytes for el in at.get("bidi_component") if el.proto.bytes]
    assert len(frames) == 1, "one workstation on the page"
    view: dict[str, Any] = unpack_frame(frames[0])[0]["view"]
    return view
