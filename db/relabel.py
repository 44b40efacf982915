"""A reader's renumbering of a study's vertebrae ("this is L6", "T13 present"), stored per reader.

* :func:`relabel_of` — the reader's own renumbering (mask level -> the reader's level);
* :func:`set_relabel` — store one: a shift ("the vertebra labelled ``at`` is ``says``", the levels
  below follow, :func:`spine_core.relabel.shift_from`) or an explicit mapping; ``{}`` clears it.
  Assigned annotators only, checked against the study's mask levels, versioned against another
  tab, audited ``relabel.set``;
* :func:`study_relabels` — every reader's renumbering of a study (exports, the committee).

The mask itself is never changed: exports of a reader's work carry the reader's names
(:func:`spine_core.relabel.relabel_name`, :func:`spine_core.relabel.apply_relabel`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from db.adjudication_inputs import mask_levels
from db.annotations import _require_writable
from db.audit import record
from spine_core.errors import ConflictError, InputError
from spine_core.relabel import check_relabel, shift_from


@dataclass(frozen=True)
class Relabelling:
    """A reader's renumbering: only the levels it changes; ``version`` 0 when none is stored."""

    mapping: dict[str, str] = field(default_factory=dict)
    rule: dict[str, str] = field(default_factory=dict)
    version: int = 0


def _row(session: Session, study_id: int, reader_id: int) -> m.ReaderRelabel | None:
    return session.scalars(select(m.ReaderRelabel).where(
        m.ReaderRelabel.study_id == study_id, m.ReaderRelabel.reader_id == reader_id)
        .execution_options(populate_existing=True)).first()


def relabel_of(session: Session, reader: m.User, study_id: int) -> Relabelling:
    """The reader's own renumbering of the study ({} when the reader counts as the mask does)."""
    row = _row(session, int(study_id), reader.id)
    if row is None:
        return Relabelling()
    return Relabelling(dict(row.mapping or {}), dict(row.rule or {}), row.version)


def study_relabels(session: Session, study_id: int) -> dict[str, dict[str, str]]:
    """Reader (user name) -> their renumbering of the study, for readers who made one."""
    rows = session.execute(select(m.User.username, m.ReaderRelabel.mapping)
                           .join(m.User, m.User.id == m.ReaderRelabel.reader_id)
                           .where(m.ReaderRelabel.study_id == int(study_id)))
    return {name: dict(mapping) for name, mapping in rows if mapping}


def set_relabel(session: Session, actor: m.User, study_id: int, *, at: str | None = None,
                says: str | None = None, mapping: Mapping[str, str] | None = None,
                expected_version: int | None = None) -> Relabelling:
    """Store the reader's renumbering: ``at`` + ``says`` (a shift from that level on) or
    ``mapping`` (mask level -> reader's level; ``{}`` clears it).

    Raises:
        RelabelError (an InputError): unknown names, a level the mask lacks, two vertebrae given
            one name, a count past L6; InputError: neither or both forms, or no mask.
        PermissionDenied: not an annotator assigned to the study, or already submitted.
        ConflictError: changed elsewhere since ``expected_version``.
    """
    sid = int(study_id)
    present = sorted(set(mask_levels(session, sid)))
    if (at is None) == (mapping is None) or (at is None) != (says is None):
        raise InputError("say either which vertebra is which (at= and says=) or give a mapping of "
                         "mask levels to your levels, not both")
    if not present:
        raise InputError("this study has no vertebra mask, so there is no numbering to correct")
    if at is not None and says is not None:
        clean = shift_from(present, at, says)
        rule = {"at": str(at).strip(), "says": str(says).strip()}
    else:
        clean = check_relabel(present, mapping or {})
        rule = {}
    _require_writable(session, actor, sid)
    row = _row(session, sid, actor.id)
    if row is None:
        if expected_version:
            raise ConflictError("your renumbering was removed elsewhere; reload the study")
        try:
            with session.begin_nested():
                row = m.ReaderRelabel(study_id=sid, reader_id=actor.id, mapping=clean, rule=rule)
                session.add(row)
        except IntegrityError:  # the same reader's other tab stored one first
            raise ConflictError("your renumbering was saved from another tab at the same moment; "
                                "reload to see it") from None
        record(session, actor.username, "relabel.set", "reader_relabel", f"{sid}:{actor.username}",
               None, {"mapping": clean, "rule": rule})
        return Relabelling(clean, rule, row.version)
    if expected_version is not None and row.version != expected_version:
        raise ConflictError("your renumbering was changed elsewhere (another tab?) since you "
                            "loaded it; reload to see it")
    if dict(row.mapping or {}) == clean and dict(row.rule or {}) == rule:
        return Relabelling(clean, rule, row.version)
    before = {"mapping": dict(row.mapping or {}), "rule": dict(row.rule or {})}
    result = session.execute(
        update(m.ReaderRelabel)
        .where(m.ReaderRelabel.id == row.id, m.ReaderRelabel.version == row.version)
        .values(mapping=clean, rule=rule, version=m.ReaderRelabel.version + 1,
                updated_at=dt.datetime.now(dt.UTC))
        .execution_options(synchronize_session=False))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise ConflictError("your renumbering was changed elsewhere at the same moment; reload")
    record(session, actor.username, "relabel.set", "reader_relabel", f"{sid}:{actor.username}",
           before, {"mapping": clean, "rule": rule})
    return Relabelling(clean, rule, row.version + 1)
