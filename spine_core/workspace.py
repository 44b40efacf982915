"""The running installation: settings, database sessions and the volume cache, opened once.

The app (through ``st.cache_resource``), the CLI and the backend each hold one :class:`Workspace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from spine_core.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from spine_core.io.cache import VolumeCache


@dataclass
class Workspace:
    """Shared, read-mostly handles of one installation (thread-safe to share)."""

    settings: Settings

    @cached_property
    def sessions(self) -> "sessionmaker[Session]":
        from db.session import make_engine, make_sessionmaker

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return make_sessionmaker(make_engine(self.settings.database_url))

    @cached_property
    def cache(self) -> "VolumeCache":
        from spine_core.io.cache import VolumeCache

        return VolumeCache(self.settings.volume_cache_dir)


def open_workspace(settings: Settings) -> Workspace:
    """A workspace on an up-to-date database (migrations applied)."""
    from db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    return Workspace(settings)


def database_summary(settings: Settings) -> dict[str, Any]:
    """What `spine info` prints: settings in force and row counts."""
    from sqlalchemy import func, select

    from db import models as m

    ws = open_workspace(settings)
    out: dict[str, Any] = {
        "database": _redact(settings.database_url),
        "data_dir": str(settings.data_dir.resolve()),
        "cache_dir": str(settings.volume_cache_dir.resolve()),
        "backend": settings.backend_url or "in-process (CPU unless CUDA is available)",
    }
    with ws.sessions() as session:
        for label, model in (
            ("studies", m.Study),
            ("series", m.Series),
            ("masks", m.Mask),
            ("users", m.User),
            ("boxes", m.Box),
            ("open disputes", m.Dispute),
            ("predictions", m.Prediction),
        ):
            stmt = select(func.count()).select_from(model)
            if model is m.Dispute:
                stmt = stmt.where(m.Dispute.status == m.DisputeStatus.open.value)
            if model is m.Box:
                stmt = stmt.where(m.Box.deleted_at.is_(None))
            out[label] = session.scalar(stmt)
    return out


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def bootstrap(settings: Settings, *, progress: bool = True) -> list[str]:
    """Prepare the embedded default: migrations, demo users, demo studies on first start.

    Idempotent: demo users and demo data are only created when missing (an empty study table).
    Returns what was done, one line per step.
    """
    from sqlalchemy import func, select

    from db import models as m
    from db.users import ensure_demo_users

    done: list[str] = []
    ws = open_workspace(settings)
    with ws.sessions.begin() as session:
        created = ensure_demo_users(session)
        if created:
            done.append(f"created demo users: {', '.join(created)}")
        n_studies = session.scalar(select(func.count()).select_from(m.Study)) or 0
    if n_studies == 0 and settings.demo_studies > 0:
        from spine_core.importer import import_path
        from spine_core.phantom import write_rsna_dataset

        demo_dir = settings.data_dir / "demo"
        write_rsna_dataset(demo_dir, n_studies=settings.demo_studies, seed=settings.demo_seed,
                           shape=settings.demo_shape_tuple, workers=settings.workers)
        report = import_path(demo_dir, settings, actor="bootstrap", progress=progress)
        done.append(f"generated and imported demo data: {report.summary()}")
    return done
