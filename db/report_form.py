"""What the admin's report editor shows: a study found by its UID and its stored report.

Writing goes through :func:`db.reports.set_report` (admin check, validation, audit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import ActorLike, load_actor
from spine_core.adjudication import craniocaudal_key
from spine_core.errors import InputError, NotFound
from spine_core.labels import CERVICAL
from spine_core.roles import Permission

#: Levels the editor always offers: the cervical spine (RSNA's C1–C7) and the thoracic spine.
THORACIC: tuple[str, ...] = tuple(f"T{i}" for i in range(1, 13))
EDITOR_LEVELS: tuple[str, ...] = (*CERVICAL, *THORACIC)


@dataclass(frozen=True)
class ReportForm:
    """A study and its report as stored (empty labels and text when it has none yet)."""

    study_id: int
    study_uid: str
    dataset: str
    exists: bool
    labels: dict[str, bool] = field(default_factory=dict)
    patient_overall: bool | None = None
    text: str = ""
    source: str = ""

    @property
    def levels(self) -> list[str]:
        """The editor's levels plus any other level the stored report labels (kept on save)."""
        return editor_levels(self.labels)


def editor_levels(stored: Iterable[str]) -> list[str]:
    """:data:`EDITOR_LEVELS` and the levels in ``stored``, head to feet."""
    return sorted({*EDITOR_LEVELS, *stored}, key=craniocaudal_key)


def derived_overall(labels: Mapping[str, bool | None]) -> bool | None:
    """The patient-level answer :func:`db.reports.set_report` stores when none is given: any
    level fractured; None when no level is labelled."""
    given = [v for v in labels.values() if v is not None]
    return any(given) if given else None


def report_form(session: Session, actor: ActorLike, study_uid: str) -> ReportForm:
    """The study with this Study Instance UID and its report, for an admin to edit.

    Raises:
        PermissionDenied: the actor is not an active admin.
        InputError: an empty UID.  NotFound: no such study.
    """
    check_permission(load_actor(session, actor), Permission.edit_reports)
    uid = study_uid.strip() if isinstance(study_uid, str) else ""
    if not uid:
        raise InputError("type the Study Instance UID of the study whose report you want to edit")
    study = session.scalars(select(m.Study).where(m.Study.study_uid == uid)).first()
    if study is None:
        raise NotFound(f"no study has the UID {uid!r}; copy it from the case list")
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    if report is None:
        return ReportForm(study.id, study.study_uid, study.dataset, exists=False)
    return ReportForm(study.id, study.study_uid, study.dataset, exists=True,
                      labels=dict(report.labels or {}), patient_overall=report.patient_overall,
                      text=report.text, source=report.source)
