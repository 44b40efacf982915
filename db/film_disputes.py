"""Labelling disputes on radiographs: when one reader's vertebra labels are shifted by one level
against another's on (at least 75 % of) the vertebrae both boxed, the study gets ONE dispute of
kind ``labelling`` ("Reader 2's labels are one level below Reader 1's on 4 vertebrae") instead of
one disagreement per vertebra; the committee decides whose labelling is right.

It reuses the ``disputes`` / ``decisions`` tables (see :mod:`db.disputes`):

* the dispute's ``level`` is :data:`FILM_LEVEL` (it is about the whole film); its ``details``
  hold ``sentence`` (the first shifted pair in words), ``pairs`` (each shifted pair of readers:
  the shift, how many vertebrae, the labels side by side) and ``readers``;
* a decision names the reader whose labelling is right (``details["decisions"][id]["labelling"]``,
  its ``reason`` says it in words); ``fractured`` stays None.

:func:`sync_labelling_dispute` runs in :func:`db.disputes.refresh_disputes` for film studies
(submitted readers only); a decided labelling dispute is not opened again by a refresh, reopen it
with :func:`db.disputes.reopen`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import DECIDED, OPEN, ActorLike, load_actor, study_readers
from db.audit import record
from db.disputes import (
    RefreshResult,
    _dispute_snapshot,
    _lock_dispute,
    _open_dispute,
    _update_status,
    _withdraw_or_flag,
    _write_details,
)
from db.film_reading import compare_readers, submitted_film_boxes
from spine_core.adjudication import DisputeKind, Policy
from spine_core.errors import VoteRejected
from spine_core.film_labels import LabelComparison, shown_level
from spine_core.roles import Permission

LABELLING = DisputeKind.labelling.value
#: ``disputes.level`` of a labelling dispute: the whole film, not one vertebra.
FILM_LEVEL = "film"


def _pair_details(c: LabelComparison) -> dict[str, Any]:
    return {
        "reader_a": c.reader_a, "reader_b": c.reader_b, "shift": c.shift, "shifted": c.shifted,
        "matched": len(c.labelled_pairs), "sentence": c.describe(),
        "labels": [[shown_level(p.a.level or ""), shown_level(p.b.level or "")]
                   for p in c.labelled_pairs],
        "mean_iou": round(c.mean_iou, 3) if c.mean_iou is not None else None,
    }


def labelling_findings(session: Session, study_id: int) -> list[LabelComparison]:
    """The pairs of submitted readers whose labels are shifted by one level."""
    return [c for c in compare_readers(submitted_film_boxes(session, study_id)) if c.shift]


def _labelling_disputes(session: Session, study_id: int) -> list[m.Dispute]:
    return list(session.scalars(select(m.Dispute).where(
        m.Dispute.study_id == int(study_id), m.Dispute.kind == LABELLING).order_by(m.Dispute.id)))


def sync_labelling_dispute(session: Session, study: m.Study, actor: str,
                           result: RefreshResult) -> None:
    """Open, update or withdraw the study's one labelling dispute (ids go into ``result``)."""
    shifted = labelling_findings(session, study.id)
    existing = _labelling_disputes(session, study.id)
    open_one = next((d for d in existing if d.status == OPEN), None)
    if not shifted:
        if open_one is not None:
            _withdraw_or_flag(session, open_one, actor, result,
                              "the readers' vertebra labels are no longer shifted by one level")
        return
    pairs = [_pair_details(c) for c in shifted]
    readers = sorted({r for c in shifted for r in (c.reader_a, c.reader_b)})
    details: dict[str, Any] = {"sentence": pairs[0]["sentence"], "pairs": pairs,
                               "readers": readers, "kinds": [LABELLING]}
    if open_one is not None:
        _write_details(session, open_one, details, 0, actor, result)
    elif not any(d.status == DECIDED for d in existing):
        _open_dispute(session, study, FILM_LEVEL, LABELLING, details, 0, actor, result)


def decide_labelling(session: Session, actor: ActorLike, dispute_id: int, reader: str,
                     reason: str) -> m.Decision:
    """The committee's decision on a labelling dispute: ``reader``'s labelling is right.

    Raises:
        PermissionDenied: the actor may not decide disputes.
        NotFound: no such dispute.
        VoteRejected: not a labelling dispute, already decided, a reader not in the dispute, no
            reason, or the actor read the study.
    """
    user = load_actor(session, actor)
    check_permission(user, Permission.decide)
    dispute = _lock_dispute(session, dispute_id)
    if dispute.kind != LABELLING:
        raise VoteRejected(f"dispute {dispute.id} is not about vertebra labels on a film")
    if dispute.status != OPEN:
        raise VoteRejected("this labelling dispute is already decided: reopen it with a reason "
                           "before deciding again")
    if user.username in study_readers(session, dispute.study_id):
        raise VoteRejected(f"{user.username} read this study and cannot decide its disputes: "
                           "adjudicators must be independent of the readers")
    readers = list((dispute.details or {}).get("readers", []))
    if reader not in readers:
        raise VoteRejected(f"choose the labelling of one of the readers in this dispute "
                           f"({', '.join(readers)}), not {reader!r}")
    why = (reason or "").strip()
    if not why:
        raise VoteRejected("give the reason for the decision (e.g. 'C2 counted from the dens')")
    now = dt.datetime.now(dt.UTC)
    before = _dispute_snapshot(dispute)
    decision = m.Decision(dispute_id=dispute.id, round=dispute.round, fractured=None,
                          policy=Policy.COMMITTEE_DECIDES.value,
                          reason=f"{reader}'s labelling is right: {why}", decided_by=user.username,
                          decided_at=now, superseded=False)
    session.add(decision)
    session.flush()
    details = dict(dispute.details or {})
    details["decisions"] = {**details.get("decisions", {}),
                            str(decision.id): {"source": "committee", "labelling": reader}}
    dispute.details = details
    dispute.status = DECIDED
    dispute.closed_at = now
    session.flush()
    record(session, user.username, "decision.record", "decision", decision.id, None, {
        "dispute": dispute.id, "level": dispute.level, "kind": dispute.kind,
        "round": decision.round, "labelling": reader, "policy": decision.policy,
        "reason": decision.reason})
    record(session, user.username, "dispute.decide", "dispute", dispute.id, before,
           _dispute_snapshot(dispute))
    study = session.get(m.Study, dispute.study_id)
    assert study is not None
    from db import grade_disputes  # the vertebrae are named now: their grades are compared

    grade_disputes.sync_grade_disputes(session, study, user.username,
                                       RefreshResult(study_id=study.id))
    grade_disputes.write_final_grades(session, study, user.username)
    _update_status(session, study, user.username)
    return decision


def labelling_in_force(session: Session, study_id: int) -> str | None:
    """The reader whose labelling the committee chose (decision not superseded), if any."""
    rows = session.execute(
        select(m.Dispute, m.Decision).join(m.Decision, m.Decision.dispute_id == m.Dispute.id)
        .where(m.Dispute.study_id == int(study_id), m.Dispute.kind == LABELLING,
               m.Dispute.status == DECIDED, m.Decision.superseded.is_(False))
        .order_by(m.Decision.decided_at, m.Decision.id)).all()
    chosen = None
    for dispute, decision in rows:
        info = (dispute.details or {}).get("decisions", {}).get(str(decision.id), {})
        chosen = info.get("labelling", chosen)
    return str(chosen) if chosen else None
