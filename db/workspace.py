"""The running installation: settings, database sessions and the volume cache, opened once.

The app (through ``st.cache_resource``), the CLI and the backend each hold one :class:`Workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.session import make_engine, make_sessionmaker
from db.signin_state import SignInState
from spine_core.config import Settings
from spine_core.io.cache import VolumeCache


@dataclass
class Workspace:
    """Shared, read-mostly handles of one installation (thread-safe to share)."""

    settings: Settings

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return make_sessionmaker(make_engine(self.settings.database_url))

    @cached_property
    def signin(self) -> SignInState:
        """Sign-in sessions, hand-off tickets and the failure throttle, in the database (shared
        by every app replica on it)."""
        return SignInState(self.sessions)

    @cached_property
    def cache(self) -> VolumeCache:
        return VolumeCache(self.settings.volume_cache_dir)


def open_workspace(settings: Settings) -> Workspace:
    """A workspace on an up-to-date database (migrations applied)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    return Workspace(settings)
