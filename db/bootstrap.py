"""Start-up and status of an installation: `spine bootstrap` and `spine info`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from db import models as m
from db.annotations import assign
from db.importer import import_path
from db.users import DEMO_USERS, ensure_demo_users, get_user
from db.workspace import Workspace, open_workspace
from spine_core.adjudication import DisputeStatus
from spine_core.config import Settings
from spine_core.phantom.rsna_layout import write_rsna_dataset
from spine_core.roles import Role


def database_summary(settings: Settings) -> dict[str, Any]:
    """What `spine info` prints: settings in force and row counts."""
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
                stmt = stmt.where(m.Dispute.status == DisputeStatus.open.value)
            if model is m.Box:
                stmt = stmt.where(m.Box.deleted_at.is_(None))
            out[label] = session.scalar(stmt)
    return out


def _redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def bootstrap(settings: Settings, *, progress: bool = True) -> list[str]:
    """Prepare the embedded default: migrations, demo users, demo studies on first start.

    Idempotent: demo users and demo data are only created when missing (an empty study table).
    Returns what was done, one line per step.
    """
    done: list[str] = []
    ws = open_workspace(settings)
    with ws.sessions.begin() as session:
        created = ensure_demo_users(session)
        if created:
            done.append(f"created demo users: {', '.join(created)}")
        n_studies = session.scalar(select(func.count()).select_from(m.Study)) or 0
    if n_studies == 0 and settings.demo_studies > 0:
        demo_dir = settings.data_dir / "demo"
        write_rsna_dataset(demo_dir, n_studies=settings.demo_studies, seed=settings.demo_seed,
                           shape=settings.demo_shape_tuple, workers=settings.workers)
        report = import_path(demo_dir, settings, actor="bootstrap", progress=progress)
        done.append(f"generated and imported demo data: {report.summary()}")
        if settings.demo_unread > 0:
            done.append(_studies_to_read(ws, progress=progress))
    return done


def _studies_to_read(ws: Workspace, *, progress: bool) -> str:
    """Demo studies no reader has read yet, assigned to every demo reader.

    The main demo set comes with its readers' work, so all of it counts as submitted; a newcomer
    signed in as a reader needs studies of their own to draw on. These have the report's labels
    but no reader's boxes."""
    settings = ws.settings
    out = settings.data_dir / "demo-to-read"
    manifest = write_rsna_dataset(out, n_studies=settings.demo_unread, seed=settings.demo_seed + 1,
                                  shape=settings.demo_shape_tuple, workers=settings.workers,
                                  n_readers=0)
    import_path(out, settings, actor="bootstrap", progress=progress)
    uids = [s.study_uid for s in manifest.studies]
    with ws.sessions.begin() as session:
        admin = get_user(session, "admin")
        readers = [u for u in (get_user(session, d.username) for d in DEMO_USERS if d.role == Role.annotator)
                   if u is not None and u.active]
        if admin is None or not readers:
            return "demo studies to read: imported, not assigned (no admin or no active demo reader)"
        for study in session.scalars(select(m.Study).where(m.Study.study_uid.in_(uids))):
            assign(session, admin, study.id, [r.id for r in readers])
    names = ", ".join(r.username for r in readers)
    return f"demo studies to read: {len(uids)}, assigned to {names}"
