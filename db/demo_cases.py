"""The demonstration's case list: the cases an admin curates for clinicians, or, without one, the
studies with predictions (a true positive, a miss and a false alarm first where the truth is known).

Curating is for admins (``curate_demonstration``) and audited (``demo_case.add|edit|move|remove``);
reading the list and a case's labels is for anyone who may see the demonstration. Each case also
says where each level's final label came from (report, readers, committee) or that it is pending.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import models as m
from db.access import check_permission
from db.adjudication_inputs import ActorLike, load_actor, report_labels
from db.audit import record, snapshot
from spine_core.adjudication import craniocaudal_key
from spine_core.errors import ConflictError, InputError, NotFound
from spine_core.labels import LEVEL_IDS
from spine_core.roles import Permission

#: Predicted studies looked at for the list made without a curated one.
MAX_FALLBACK = 200
TITLE_MAX = 200
FIELDS = ("study_id", "title", "note", "level", "position")


@dataclass(frozen=True)
class DemoCaseRow:
    """One case to show: ``id`` is None for a case of the list made without a curated one."""

    id: int | None
    study_id: int
    study_uid: str
    dataset: str
    title: str
    note: str
    level: str | None
    position: int
    version: int = 0

    @property
    def short_name(self) -> str:
        """"rsna · …7f3a21" — the dataset and the end of the UID, never 64 characters."""
        return f"{self.dataset} · …{self.study_uid[-8:]}"


def _row(case: m.DemoCase, study: m.Study) -> DemoCaseRow:
    return DemoCaseRow(case.id, case.study_id, study.study_uid, study.dataset, case.title,
                       case.note, case.level, case.position, case.version)


def curated_cases(session: Session) -> list[DemoCaseRow]:
    """The curated list in the order of showing."""
    rows = session.execute(
        select(m.DemoCase, m.Study).join(m.Study, m.Study.id == m.DemoCase.study_id)
        .order_by(m.DemoCase.position, m.DemoCase.id)).all()
    return [_row(c, s) for c, s in rows]


def _curator(session: Session, actor: ActorLike) -> m.User:
    user = load_actor(session, actor)
    check_permission(user, Permission.curate_demonstration)
    return user


def _checked(title: str, level: str | None) -> tuple[str, str | None]:
    text = (title or "").strip()
    if not text:
        raise InputError("a demonstration case needs a title, e.g. 'C2 fracture the report missed'")
    if len(text) > TITLE_MAX:
        raise InputError(f"the title has {len(text)} characters; keep it under {TITLE_MAX}")
    name = (level or "").strip().upper() or None
    if name is not None and name not in LEVEL_IDS:
        raise InputError(f"'{level}' is not a vertebra level (C1..C7, T1..T13, L1..L6, S1)")
    return text, name


def _case(session: Session, case_id: int) -> m.DemoCase:
    case = session.get(m.DemoCase, int(case_id))
    if case is None:
        raise NotFound(f"demonstration case {case_id} was removed meanwhile; reload the page")
    return case


def _check_version(case: m.DemoCase, version: int | None) -> None:
    if version is not None and case.version != int(version):
        raise ConflictError(f"the case '{case.title}' was changed by {case.updated_by} meanwhile; "
                            "reload the page and edit it again")


def add_case(session: Session, actor: ActorLike, study_id: int, title: str, note: str = "",
             level: str | None = None) -> int:
    """Append a case to the list; returns its id. Audited as ``demo_case.add``."""
    user = _curator(session, actor)
    if session.get(m.Study, int(study_id)) is None:
        raise NotFound(f"study {study_id} does not exist (removed meanwhile?); reload the page")
    text, name = _checked(title, level)
    last = session.scalar(select(func.max(m.DemoCase.position)))
    case = m.DemoCase(study_id=int(study_id), title=text, note=(note or "").strip(), level=name,
                      position=(last if last is not None else -1) + 1, updated_by=user.username,
                      updated_at=dt.datetime.now(dt.UTC))
    session.add(case)
    session.flush()
    record(session, user.username, "demo_case.add", "demo_case", case.id,
           after=snapshot(case, FIELDS))
    return case.id


def edit_case(session: Session, actor: ActorLike, case_id: int, *, title: str, note: str,
              level: str | None, version: int | None = None) -> None:
    """Change a case's title, note and level. Audited as ``demo_case.edit``."""
    user = _curator(session, actor)
    case = _case(session, case_id)
    _check_version(case, version)
    text, name = _checked(title, level)
    before = snapshot(case, FIELDS)
    case.title, case.note, case.level = text, (note or "").strip(), name
    case.updated_by, case.updated_at = user.username, dt.datetime.now(dt.UTC)
    session.flush()
    record(session, user.username, "demo_case.edit", "demo_case", case.id, before,
           snapshot(case, FIELDS))


def move_case(session: Session, actor: ActorLike, case_id: int, steps: int) -> None:
    """Move a case ``steps`` places later (negative: earlier), clamped to the list; the list is
    renumbered 0..n-1. Audited as ``demo_case.move``."""
    user = _curator(session, actor)
    case = _case(session, case_id)
    cases = list(session.scalars(select(m.DemoCase).order_by(m.DemoCase.position,
                                                             m.DemoCase.id)))
    old = cases.index(case)
    new = max(0, min(len(cases) - 1, old + int(steps)))
    if new == old:
        return
    cases.insert(new, cases.pop(old))
    for position, item in enumerate(cases):
        if item.position != position:
            item.position = position
    session.flush()
    record(session, user.username, "demo_case.move", "demo_case", case.id,
           {"position": old}, {"position": new})


def remove_case(session: Session, actor: ActorLike, case_id: int) -> None:
    """Take a case off the list (the study stays). Audited as ``demo_case.remove``."""
    user = _curator(session, actor)
    case = _case(session, case_id)
    before = snapshot(case, FIELDS)
    session.delete(case)
    session.flush()
    record(session, user.username, "demo_case.remove", "demo_case", int(case_id), before)


# --- the list made without a curated one -------------------------------------------------------


def study_truth(session: Session, study_id: int) -> bool | None:
    """Whether the study is fractured as far as is known: any final label fractured (True), all
    labelled levels intact (False), or None when nothing is labelled or a level is pending."""
    labels = final_label_sources(session, study_id)
    if any(fractured for fractured, _ in labels.values()):
        return True
    if not labels or any(fractured is None for fractured, _ in labels.values()):
        return None
    return False


def _fallback_title(truth: bool | None, flagged: bool) -> tuple[str, int]:
    """The case's title and its rank (true positive, miss, false alarm first)."""
    if truth is True and flagged:
        return "Fracture the model found", 0
    if truth is True:
        return "Fracture the model missed", 1
    if truth is False and flagged:
        return "False alarm: the model flags an intact spine", 2
    if truth is False:
        return "No fracture, and the model agrees", 3
    return "Truth not known yet", 4


def _top_level(probabilities: dict[str, float], labels: dict[str, tuple[bool | None, str]],
               truth: bool | None, flagged: bool) -> str | None:
    fractured = [lvl for lvl, (f, _) in labels.items() if f]
    if truth and fractured:  # the fracture (the one the model rates highest)
        return max(fractured, key=lambda lvl: probabilities.get(lvl, 0.0))
    if flagged and probabilities:
        return max(probabilities, key=probabilities.__getitem__)
    return None


def predicted_cases(session: Session, threshold: float = 0.5) -> list[DemoCaseRow]:
    """Studies with a prediction (latest per study): the first true positive, miss and false
    alarm in that order where the truth is known, then the others by study UID."""
    latest = (select(m.Prediction.study_id, func.max(m.Prediction.id).label("pid"))
              .group_by(m.Prediction.study_id).subquery())
    rows = session.execute(
        select(m.Study, m.Prediction).join(latest, latest.c.study_id == m.Study.id)
        .join(m.Prediction, m.Prediction.id == latest.c.pid)
        .order_by(m.Study.study_uid).limit(MAX_FALLBACK)).all()
    found: list[tuple[int, DemoCaseRow]] = []
    for study, prediction in rows:
        probabilities = {str(k): float(v) for k, v in (prediction.level_probabilities or {}).items()
                         if v is not None}
        p = prediction.patient_probability
        if p is None and probabilities:
            p = max(probabilities.values())
        flagged = p is not None and p >= threshold
        labels = final_label_sources(session, study.id)
        truth = study_truth(session, study.id)
        title, rank = _fallback_title(truth, flagged)
        level = _top_level(probabilities, labels, truth, flagged)
        note = (f"The model gives {level} the highest probability." if level and rank != 0
                else "")
        found.append((rank, DemoCaseRow(None, study.id, study.study_uid, study.dataset, title,
                                        note, level, 0)))
    first: list[tuple[int, DemoCaseRow]] = []
    for rank in (0, 1, 2):
        hit = next((item for item in found if item[0] == rank), None)
        if hit is not None:
            first.append(hit)
    rest = [item for item in found if item not in first]
    ordered = [row for _, row in first + rest]
    return [DemoCaseRow(r.id, r.study_id, r.study_uid, r.dataset, r.title, r.note, r.level, i)
            for i, r in enumerate(ordered)]


def demonstration_cases(session: Session, threshold: float = 0.5) -> tuple[list[DemoCaseRow], bool]:
    """(cases, curated): the curated list, or the predicted studies when there is none."""
    curated = curated_cases(session)
    if curated:
        return curated, True
    return predicted_cases(session, threshold), False


# --- where each level's label came from --------------------------------------------------------


def final_label_sources(session: Session, study_id: int) -> dict[str, tuple[bool | None, str]]:
    """Level -> (fractured, source) as exports use it: source 'report', 'readers' or 'decision';
    (None, 'pending') for a level under an open reader/report dispute. Head to feet."""
    from db.disputes import undecided_levels_of

    out: dict[str, tuple[bool | None, str]] = {}
    pending = undecided_levels_of(session, study_id)
    for level, value in report_labels(session, study_id).items():
        if level not in pending:
            out[level] = (bool(value), "report")
    for row in session.scalars(select(m.FinalLabel).where(m.FinalLabel.study_id == study_id)):
        out[row.level] = (bool(row.fractured), row.source)
    for level in pending:
        if level not in out:
            out[level] = (None, "pending")
    return dict(sorted(out.items(), key=lambda item: craniocaudal_key(item[0])))


@dataclass(frozen=True)
class TruthBox:
    """A fracture box of the dataset itself (its published truth, no reader's work)."""

    slice_index: int
    x: float
    y: float
    width: float
    height: float
    level: str | None


def truth_boxes(session: Session, study_id: int) -> list[TruthBox]:
    """The dataset's own fracture boxes of a study (any role that sees the demonstration may see
    them: they are the dataset's truth, not a reader's work), by slice."""
    rows = session.scalars(select(m.Box).where(
        m.Box.study_id == int(study_id), m.Box.source == "dataset", m.Box.deleted_at.is_(None),
        m.Box.width > 0, m.Box.height > 0).order_by(m.Box.slice_index, m.Box.id))
    return [TruthBox(int(b.slice_index), float(b.x), float(b.y), float(b.width), float(b.height),
                     b.level) for b in rows]
