"""Label and box CSVs: RSNA's train.csv / train_bounding_boxes.csv, report texts, readers' work.

Each file is read whole and imported in the caller's one transaction; a bad row is refused with a
message naming the file, the line and what is wrong, and the other rows are imported.
Re-importing a file adds nothing twice, and two imports of one file at once leave one copy: rows
are written with ``INSERT … ON CONFLICT`` on a unique key (:mod:`db.import_keys`), never a check
followed by an insert. Box files go in bulk (:mod:`db.csv_boxes`); the others row by row.

Readers' box CSVs may carry two optional columns (``spine export readers`` writes them):

* ``fracture``: the reader's own id of one fracture (empty: a box on its own);
* ``key``: 1 (or empty) for a key box the reader drew, 0 for a box interpolated between two key
  boxes of its fracture.

Key rows are stored; after the file, each fracture (rows of one reader, study and fracture id) that
got a new key is interpolated by the rule of :mod:`spine_core.interpolation` (in bulk for a
fracture new to the database, by ``db.box_events.refresh_fracture`` for one that had boxes).
Key=0 rows are never stored — the boxes between key rows are always made from the keys — but each
is checked against the rule: a key=0 row that is not between two key rows of its fracture, or whose
box differs from the interpolated one by more than :data:`INTERPOLATION_TOLERANCE_PX`, is reported
as a problem of its line (the interpolated box is kept). Of two key rows of one fracture on the
same slice the later line wins; the earlier is refused with a message naming the later.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from db.import_keys import insert_for
from spine_core.adjudication import LevelCall
from spine_core.csv_safe import restore
from spine_core.errors import InputError, SpineError
from spine_core.labels import CERVICAL, level_id, level_name
from spine_core.roles import Role

#: Column sets that identify each kind of CSV (a file may have extra columns).
CSV_KINDS: dict[str, frozenset[str]] = {
    "rsna_labels": frozenset({"StudyInstanceUID", "patient_overall", *CERVICAL}),
    "rsna_boxes": frozenset({"StudyInstanceUID", "x", "y", "width", "height", "slice_number"}),
    "reader_boxes": frozenset({"StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader"}),
    "reader_levels": frozenset({"StudyInstanceUID", "reader", "level", "call"}),
    "reports": frozenset({"StudyInstanceUID", "text"}),
}

#: Columns only a readers' boxes CSV has (never RSNA's bounding_boxes.csv).
READER_BOX_EXTRAS = frozenset({"level", "note", "fracture", "key"})

#: Order in which a dataset's CSVs are imported (labels before boxes: boxes mark levels).
CSV_ORDER: tuple[str, ...] = ("rsna_labels", "reports", "rsna_boxes", "reader_levels", "reader_boxes")

#: CSV kinds that carry readers' work (they change assignments, so disputes are re-checked).
READER_KINDS = frozenset({"reader_boxes", "reader_levels"})

#: The system account that owns a dataset's own reference boxes (e.g. RSNA's union boxes).
DATASET_USER = "dataset"  # one of db.users.SYSTEM_ACCOUNTS

#: How far (pixels) a key=0 row may lie from the box interpolated between its key rows (exports
#: round to 1e-4 px).
INTERPOLATION_TOLERANCE_PX = 1e-3


@dataclass
class CsvOutcome:
    """What one CSV import did."""

    path: Path
    kind: str
    imported: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)


def detect_csv_kind(path: Path) -> str:
    """Which kind of CSV a file is, from its header (reader boxes before RSNA boxes: superset)."""
    header = set(_header(path))
    readers_only = header & READER_BOX_EXTRAS
    if (CSV_KINDS["rsna_boxes"] <= header and "reader" not in header
            and (readers_only or path.name.lower().startswith("readers"))):
        why = (f"columns {', '.join(sorted(readers_only))} are readers' columns" if readers_only
               else "its name says it holds readers' work")
        raise InputError(
            f"{path.name}: a readers' boxes CSV needs a reader column (who drew each box), and "
            f"{why}; add the reader column, or, if these are the dataset's own reference boxes, "
            "remove those columns and name the file bounding_boxes.csv")
    for kind in ("reader_boxes", "reader_levels", "rsna_labels", "rsna_boxes", "reports"):
        if CSV_KINDS[kind] <= header:
            return kind
    raise InputError(
        f"{path.name}: unknown CSV columns {sorted(header)}; expected one of: "
        + "; ".join(f"{k} ({', '.join(sorted(v))})" for k, v in CSV_KINDS.items())
    )


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not a UTF-8 text CSV file") from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            # spaces around a cell go; a leading tab stays (a reader's text is kept as written),
            # and the quote our own exports put before formula-like text is taken off again
            yield line, {k.strip(): restore((v or "").strip(" ")) for k, v in row.items()
                         if k is not None}


class _Studies:
    """Cache of study and first series by StudyInstanceUID."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[str, tuple[m.Study, m.Series | None] | None] = {}

    def get(self, uid: str) -> tuple[m.Study, m.Series | None] | None:
        if uid not in self._cache:
            study = self.session.scalars(select(m.Study).where(m.Study.study_uid == uid)).first()
            if study is None:
                self._cache[uid] = None
            else:
                series = self.session.scalars(
                    select(m.Series).where(m.Series.study_id == study.id).order_by(m.Series.id)
                ).first()
                self._cache[uid] = (study, series)
        return self._cache[uid]


def _flag(value: str, column: str) -> bool:
    if value in ("0", "1"):
        return value == "1"
    raise InputError(f"column {column} must be 0 or 1, got '{value}'")


def _number(value: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"column {column} must be a number, got '{value[:40]}'") from None
    if not math.isfinite(number):
        raise InputError(f"column {column} must be a finite number, got '{value[:40]}'")
    return number


def dataset_user(session: Session) -> m.User:
    """The inactive system account owning dataset reference boxes (created on first use; two
    imports creating it at once make one)."""
    session.execute(insert_for(session, m.User.__table__).values(
        username=DATASET_USER, display_name="Dataset reference", role=Role.viewer.value,
        active=False, password_hash="!", is_chair=False, created_at=dt.datetime.now(dt.UTC),
        version=1,
    ).on_conflict_do_nothing(index_elements=["username"]))
    return session.scalars(select(m.User).where(m.User.username == DATASET_USER)).one()


def import_csv(session: Session, path: Path, actor: str, kind: str | None = None) -> CsvOutcome:
    """Import one CSV in the caller's transaction (box files in bulk, others with a savepoint per
    row that keeps the good rows)."""
    kind = kind or detect_csv_kind(path)
    outcome = CsvOutcome(path, kind)
    if kind in ("reader_boxes", "rsna_boxes"):
        from db.csv_boxes import import_box_rows

        outcome.imported, outcome.unchanged, outcome.problems = import_box_rows(
            session, path.name, list(_rows(path)), actor, readers=kind == "reader_boxes")
        return outcome
    studies = _Studies(session)
    handler = _HANDLERS[kind]
    for line, row in _rows(path):
        uid = row.get("StudyInstanceUID", "")
        where = f"{path.name} line {line}"
        found = studies.get(uid)
        if found is None:
            outcome.problems.append(f"{where}: study '{uid}' is not imported; import its images first")
            continue
        try:
            with session.begin_nested():
                changed = handler(session, found, row, actor)
        except SpineError as exc:
            outcome.problems.append(f"{where}: {exc}")
            continue
        if changed:
            outcome.imported += 1
        else:
            outcome.unchanged += 1
    return outcome


def _report(session: Session, study: m.Study, source: str, **values: object) -> m.Report | None:
    """The study's report to change, locked; None when this call created it with ``values``
    (an upsert: two imports at once make one report)."""
    made = session.execute(insert_for(session, m.Report.__table__).values(
        study_id=study.id, created_by=values.pop("created_by"), source=source,
        created_at=dt.datetime.now(dt.UTC), version=1, **values,
    ).on_conflict_do_nothing(index_elements=["study_id"]).returning(m.Report.__table__.c.id)).first()
    if made is not None:
        return None
    return session.scalars(select(m.Report).where(m.Report.study_id == study.id)
                           .with_for_update().execution_options(populate_existing=True)).one()


def _rsna_labels(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, _ = found
    labels = {level: _flag(row[level], level) for level in CERVICAL}
    overall = _flag(row["patient_overall"], "patient_overall")
    if overall != any(labels.values()):
        raise InputError(
            f"patient_overall={int(overall)} contradicts C1–C7 ({''.join(str(int(v)) for v in labels.values())})"
        )
    after = {"labels": labels, "patient_overall": overall}
    report = _report(session, study, "train.csv", created_by=actor, text="", labels=labels,
                     patient_overall=overall)
    if report is None:
        record(session, actor, "report.labels", "study", study.study_uid,
               {"labels": {}, "patient_overall": None}, after)
        return True
    if report.labels == labels and report.patient_overall == overall:
        return False
    before = {"labels": dict(report.labels or {}), "patient_overall": report.patient_overall}
    report.labels = labels
    report.patient_overall = overall
    session.flush()
    record(session, actor, "report.labels", "study", study.study_uid, before, after)
    return True


def _report_text(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, _ = found
    report = _report(session, study, "reports.csv", created_by=actor, text=row["text"], labels={},
                     patient_overall=None)
    if report is None:
        record(session, actor, "report.text", "study", study.study_uid, {"text": ""},
               {"text": row["text"]})
        return True
    if report.text == row["text"]:
        return False
    before = {"text": report.text}
    report.text = row["text"]
    session.flush()
    record(session, actor, "report.text", "study", study.study_uid, before, {"text": row["text"]})
    return True


def _reader(session: Session, username: str) -> m.User:
    user = session.scalars(select(m.User).where(m.User.username == username)).first()
    if user is None:
        raise InputError(f"reader '{username}' is not a user; add them with `spine users add`")
    if user.role != Role.annotator.value:
        raise InputError(f"user '{username}' is {user.role}, not an annotator")
    return user


def _ensure_assigned(session: Session, study: m.Study, reader: m.User, actor: str) -> None:
    """An assignment of the study to the reader, submitted (an upsert on study and reader)."""
    made = session.execute(insert_for(session, m.Assignment.__table__).values(
        study_id=study.id, reader_id=reader.id, assigned_by=actor,
        status=m.AssignmentStatus.submitted.value, assigned_at=dt.datetime.now(dt.UTC), version=1,
    ).on_conflict_do_nothing(index_elements=["study_id", "reader_id"])
        .returning(m.Assignment.__table__.c.id)).first()
    if made is not None:
        record(session, actor, "assign", "study", study.study_uid, None,
               {"reader": reader.username, "via": "import"})


def _reader_box(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str],
                actor: str) -> bool:
    """One reader's box (a DICOM SR's, say) as a row of a readers' CSV; True when it was added.

    Raises:
        InputError: what is wrong with the row.
    """
    from db.csv_boxes import import_box_rows

    study, _ = found
    added, _, problems = import_box_rows(
        session, "", [(0, {**row, "StudyInstanceUID": study.study_uid})], actor, readers=True)
    if problems:
        raise InputError(problems[0].removeprefix(" line 0: "))
    return added > 0


def _reader_level(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, _ = found
    reader = _reader(session, row["reader"])
    level = level_name(level_id(row["level"]))
    call = _CALL_ALIASES.get(row["call"].strip().lower(), row["call"])
    if call not in {c.value for c in LevelCall}:
        raise InputError(
            f"call '{row['call']}' must be one of fractured, not_fractured, unsure (or 1 / 0)"
        )
    _ensure_assigned(session, study, reader, actor)
    after = {"call": call, "reader": reader.username}
    made = session.execute(insert_for(session, m.LevelLabel.__table__).values(
        study_id=study.id, reader_id=reader.id, level=level, call=call,
        updated_at=dt.datetime.now(dt.UTC), version=1,
    ).on_conflict_do_nothing(index_elements=["study_id", "reader_id", "level"])
        .returning(m.LevelLabel.__table__.c.id)).first()
    if made is not None:
        record(session, actor, "level.import", "level_label", f"{study.study_uid}:{level}", None, after)
        return True
    existing = session.scalars(
        select(m.LevelLabel).where(m.LevelLabel.study_id == study.id,
                                   m.LevelLabel.reader_id == reader.id, m.LevelLabel.level == level)
        .with_for_update().execution_options(populate_existing=True)
    ).one()
    if existing.call == call:
        return False
    before = {"call": existing.call}
    existing.call = call
    session.flush()
    record(session, actor, "level.import", "level_label", f"{study.study_uid}:{level}", before, after)
    return True


#: Spellings accepted for a level call (RSNA-style 0/1 included).
_CALL_ALIASES = {"1": "fractured", "0": "not_fractured", "?": "unsure", "fractured": "fractured",
                 "not_fractured": "not_fractured", "not fractured": "not_fractured",
                 "unsure": "unsure"}

_HANDLERS = {
    "rsna_labels": _rsna_labels,
    "reader_levels": _reader_level,
    "reports": _report_text,
}
