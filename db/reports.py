"""The radiology report of a study: per-level labels, text and source, entered or edited by an
admin and audited (CSV imports go through :mod:`db.csv_import`)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import ActorLike, get_study, load_actor
from db.audit import record, snapshot
from spine_core import adjudication as adj
from spine_core.errors import InputError, LabelVocabularyError
from spine_core.labels import level_id, level_name
from spine_core.roles import Permission


def _flag(level: str, value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", ""):
        text = value.strip().lower()
        return None if text == "" else text in ("1", "true")
    raise InputError(
        f"report label {level}={value!r} is not a yes/no value: use True/False (or 1/0), or "
        "leave the level out when the report does not say"
    )


def _canonical_labels(labels: Mapping[str, object]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for raw, value in labels.items():
        try:
            name = level_name(level_id(str(raw)))
        except LabelVocabularyError as exc:
            raise InputError(f"report labels: {exc}") from None
        flag = _flag(name, value)
        if flag is not None:
            out[name] = flag
    return dict(sorted(out.items(), key=lambda kv: adj.craniocaudal_key(kv[0])))


def report_of(session: Session, study_id: int) -> m.Report | None:
    """The study's report, or None when it has none."""
    return session.scalars(select(m.Report).where(m.Report.study_id == int(study_id))).first()


def set_report(
    session: Session,
    actor: ActorLike,
    study_id: int,
    labels: Mapping[str, object],
    text: str,
    source: str = "manual entry",
    *,
    patient_overall: bool | None = None,
) -> m.Report:
    """Create or replace a study's report: per-level labels, free text and where it came from.

    ``labels`` maps level names (C1..C7, T1.., any case) to True/False; a level mapped to None or
    left out is one the report does not label. A ``patient_overall`` key (or argument) is checked
    against the levels: a fractured level with ``patient_overall`` False is refused. Without it,
    ``patient_overall`` is "any level fractured" (None when no level is labelled).
    Audited as ``report.set``. Call :func:`refresh_disputes` afterwards to re-check the study.

    Raises:
        PermissionDenied: the actor is not an admin.
        NotFound: no such study.
        InputError: an unknown level, a value that is not yes/no, or a contradiction.
    """
    user = load_actor(session, actor)
    check_permission(user, Permission.edit_reports)
    study = get_study(session, study_id)
    given = dict(labels)
    overall_value = given.pop("patient_overall", patient_overall)
    clean = _canonical_labels(given)
    overall = _flag("patient_overall", overall_value)
    if overall is None and clean:
        overall = any(clean.values())
    if overall is False and any(clean.values()):
        fractured = ", ".join(k for k, v in clean.items() if v)
        raise InputError(
            f"patient_overall is 0 but the report marks {fractured} fractured; correct one of them"
        )
    if not isinstance(text, str):
        raise InputError("the report text must be text (an empty text is allowed)")
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    before = None
    if report is None:
        report = m.Report(study_id=study.id, created_by=user.username)
        session.add(report)
    else:
        before = snapshot(report, ("labels", "patient_overall", "text", "source"))
        if (dict(report.labels or {}), report.patient_overall, report.text, report.source) == (
            clean, overall, text, source
        ):
            return report
    report.labels = clean
    report.patient_overall = overall
    report.text = text
    report.source = source
    session.flush()
    record(session, user.username, "report.set", "study", study.study_uid, before,
           snapshot(report, ("labels", "patient_overall", "text", "source")))
    return report


