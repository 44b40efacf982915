"""Genant grades: which calls a study asks for, each reader's grade per level, the dataset's own
grades, and agreement between readers.

* :func:`scheme_of` — "fracture" (fractured / not / unsure) or "genant" (grade 0-3 + morphology);
  :func:`set_scheme` changes it (admins, before anyone read the study);
* :func:`set_grade` — a reader's grade on one level (assigned annotators only, checked by
  :func:`spine_core.genant.check_grade`, versioned against another tab, audited ``grade.set``);
* :func:`grades_of` — the reader's own grades (readers are blinded to each other's);
* :func:`store_dataset_grades` — the dataset's truth grades (system account ``dataset``);
* :func:`grade_agreement` — weighted kappa (linear, quadratic) per level and overall, and the
  grade confusion, for every pair of readers over the studies they both graded (adjudicators and
  admins only).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import models as m
from db.annotations import _require_writable
from db.audit import record
from db.csv_import import dataset_user
from spine_core.errors import ConflictError, InputError, NotFound, PermissionDenied
from spine_core.genant import check_grade, parse_morphology
from spine_core.labels import level_id, level_name
from spine_core.metrics import grade_confusion, weighted_kappa
from spine_core.roles import Permission, can


@dataclass(frozen=True)
class Grade:
    level: str
    grade: int
    morphology: str | None
    version: int


def scheme_of(session: Session, study_id: int) -> str:
    study = session.get(m.Study, int(study_id))
    if study is None:
        raise NotFound(f"study {study_id} does not exist; reload the case list")
    return study.call_scheme


def set_scheme(session: Session, actor: m.User, study_id: int, scheme: str) -> str:
    """Decide which calls readers make on a study: ``fracture`` or ``genant`` (admins, who
    assign the reading). Audited ``study.scheme``; returns the scheme in force.

    Raises:
        PermissionDenied: the actor may not assign readers.
        InputError: an unknown scheme, or readers already made calls of the current scheme
            (switching would hide their work).
        NotFound: no such study.
    """
    from spine_core.genant import CALL_SCHEMES

    if not can(actor.role, Permission.assign_readers):
        raise PermissionDenied("only admins decide which calls readers make on a study")
    wanted = str(scheme).strip().lower()
    if wanted not in CALL_SCHEMES:
        raise InputError(f"reading scheme {scheme!r} is not one of {', '.join(CALL_SCHEMES)}")
    current = scheme_of(session, study_id)
    if wanted == current:
        return current
    made = (select(m.LevelLabel.id).where(m.LevelLabel.study_id == study_id) if current == "fracture"
            else select(m.LevelGrade.id).join(m.User, m.User.id == m.LevelGrade.reader_id)
            .where(m.LevelGrade.study_id == study_id, m.User.username != "dataset"))
    if session.scalars(made.limit(1)).first() is not None:
        raise InputError(f"readers already made {current} calls on this study; switching to "
                         f"{wanted} would hide their work (reassign the study instead)")
    study = session.get(m.Study, int(study_id))
    assert study is not None
    study.call_scheme = wanted
    session.flush()
    record(session, actor.username, "study.scheme", "study", study.study_uid,
           {"call_scheme": current}, {"call_scheme": wanted})
    return wanted


def grades_of(session: Session, reader: m.User, study_id: int) -> dict[str, Grade]:
    """The reader's own grades on the study, by level."""
    rows = session.scalars(select(m.LevelGrade).where(
        m.LevelGrade.study_id == study_id, m.LevelGrade.reader_id == reader.id))
    return {r.level: Grade(r.level, r.grade, r.morphology, r.version) for r in rows}


def set_grade(session: Session, actor: m.User, study_id: int, level: str, grade: int,
              morphology: str | None, *, expected_version: int | None = None) -> Grade:
    """Record the reader's Genant grade (and morphology, none at grade 0) on one level.

    Raises:
        GenantError (an InputError): a grade outside 0-3 or a morphology on a grade-0 level.
        InputError: an unknown level, or a study read with fracture calls.
        PermissionDenied: not an annotator assigned to the study, or already submitted.
        ConflictError: the grade was changed elsewhere since ``expected_version``.
    """
    check_grade(grade, morphology)
    morph = parse_morphology(morphology)
    morph_value = morph.value if morph else None
    name = level_name(level_id(level))
    if scheme_of(session, study_id) != "genant":
        raise InputError("this study is read with fracture calls (fractured / not / unsure), not "
                         "Genant grades")
    _require_writable(session, actor, study_id)
    return _write(session, actor, study_id, name, int(grade), morph_value, expected_version)


def _write(session: Session, reader: m.User, study_id: int, name: str, grade: int,
           morphology: str | None, expected_version: int | None) -> Grade:
    def current() -> m.LevelGrade | None:
        return session.scalars(select(m.LevelGrade).where(
            m.LevelGrade.study_id == study_id, m.LevelGrade.reader_id == reader.id,
            m.LevelGrade.level == name).execution_options(populate_existing=True)).first()

    row = current()
    if row is None:
        if expected_version is not None:
            raise ConflictError(f"your grade on {name} was removed elsewhere; reload the study")
        try:
            with session.begin_nested():
                row = m.LevelGrade(study_id=study_id, reader_id=reader.id, level=name, grade=grade,
                                   morphology=morphology)
                session.add(row)
        except IntegrityError:  # the same reader's other tab inserted it first
            row = current()
            if row is None:
                raise
        else:
            record(session, reader.username, "grade.set", "level_grade", f"{study_id}:{name}", None,
                   {"grade": grade, "morphology": morphology, "reader": reader.username})
            return Grade(name, grade, morphology, row.version)
    if expected_version is not None and row.version != expected_version:
        raise ConflictError(f"your grade on {name} was changed to {row.grade} elsewhere (another "
                            "tab?) since you loaded it; reload to see it")
    if (row.grade, row.morphology) == (grade, morphology):
        return Grade(name, row.grade, row.morphology, row.version)
    before = {"grade": row.grade, "morphology": row.morphology}
    stmt = update(m.LevelGrade).where(m.LevelGrade.id == row.id, m.LevelGrade.version == row.version)
    result = session.execute(stmt.values(grade=grade, morphology=morphology,
                                         version=m.LevelGrade.version + 1,
                                         updated_at=dt.datetime.now(dt.UTC))
                             .execution_options(synchronize_session=False))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise ConflictError(f"your grade on {name} was changed elsewhere at the same moment; "
                            "reload to see it")
    record(session, reader.username, "grade.set", "level_grade", f"{study_id}:{name}", before,
           {"grade": grade, "morphology": morphology, "reader": reader.username})
    return Grade(name, grade, morphology, row.version + 1)


def store_dataset_grades(session: Session, study_id: int,
                         grades: Mapping[str, tuple[int, str | None]], actor: str) -> int:
    """The dataset's own grades of a study (level -> (grade, morphology)); returns how many
    changed. Each is checked; re-importing the same file changes nothing."""
    owner = dataset_user(session)
    changed = 0
    for level, (grade, morphology) in grades.items():
        check_grade(grade, morphology)
        name = level_name(level_id(level))
        before = grades_of(session, owner, study_id).get(name)
        if before is not None and (before.grade, before.morphology) == (grade, morphology):
            continue
        _write(session, owner, study_id, name, int(grade), morphology, None)
        changed += 1
    if changed:
        record(session, actor, "grade.import", "study", study_id, None, {"levels": changed})
    return changed


@dataclass(frozen=True)
class PairAgreement:
    """Two readers' grades over the levels both graded."""

    reader_a: str
    reader_b: str
    n: int
    kappa_linear: float
    kappa_quadratic: float
    confusion: list[list[int]]  # rows: reader_a's grade, columns: reader_b's
    per_level: dict[str, tuple[int, float]]  # level -> (n, quadratic kappa)
    per_level_linear: dict[str, float] = field(default_factory=dict)  # level -> linear kappa


def study_set_grades(session: Session, viewer: m.User, study_ids: Iterable[int] | None = None
                     ) -> dict[str, dict[tuple[int, str], tuple[int, str | None]]]:
    """Every reader's grades over a set of studies (all studies when ``study_ids`` is None):
    reader (user name; ``dataset`` for the dataset's own) -> (study id, mask level) ->
    (grade, morphology). Levels are the mask's names, so two readers' grades of one vertebra
    meet even when they renumber it differently (``db.relabel``).

    Raises PermissionDenied for anyone but adjudicators and admins (readers are blinded)."""
    if not can(viewer.role, Permission.read_disputes):
        raise PermissionDenied("only adjudicators and admins compare readers' grades")
    stmt = select(m.LevelGrade.study_id, m.LevelGrade.level, m.LevelGrade.grade,
                  m.LevelGrade.morphology, m.User.username
                  ).join(m.User, m.User.id == m.LevelGrade.reader_id)
    if study_ids is not None:
        stmt = stmt.where(m.LevelGrade.study_id.in_([int(i) for i in study_ids]))
    out: dict[str, dict[tuple[int, str], tuple[int, str | None]]] = {}
    for sid, level, grade, morph, reader in session.execute(stmt):
        out.setdefault(reader, {})[(int(sid), level)] = (int(grade), morph)
    return out


def grade_agreement(session: Session, viewer: m.User, study_ids: Iterable[int] | None = None
                    ) -> list[PairAgreement]:
    """Weighted kappa and confusion for every pair of readers (the dataset counts as a reader),
    over the grades :func:`study_set_grades` gathers.

    Raises PermissionDenied for anyone but adjudicators and admins (readers are blinded)."""
    by_reader = {reader: {key: g for key, (g, _) in grades.items()}
                 for reader, grades in study_set_grades(session, viewer, study_ids).items()}
    out = []
    for a, b in itertools.combinations(sorted(by_reader), 2):
        common = sorted(set(by_reader[a]) & set(by_reader[b]))
        if not common:
            continue
        ga = np.array([by_reader[a][k] for k in common])
        gb = np.array([by_reader[b][k] for k in common])
        per_level: dict[str, tuple[int, float]] = {}
        per_level_linear: dict[str, float] = {}
        for level in sorted({k[1] for k in common}, key=level_id):
            idx = [i for i, k in enumerate(common) if k[1] == level]
            per_level[level] = (len(idx), _kappa(ga[idx], gb[idx], "quadratic"))
            per_level_linear[level] = _kappa(ga[idx], gb[idx], "linear")
        out.append(PairAgreement(a, b, len(common), _kappa(ga, gb, "linear"),
                                 _kappa(ga, gb, "quadratic"), grade_confusion(ga, gb).tolist(),
                                 per_level, per_level_linear))
    return out


def _kappa(a: np.ndarray, b: np.ndarray, weights: str) -> float:
    import warnings

    from spine_core.metrics import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # NaN says it: too few to tell
        return weighted_kappa(a, b, weights)
