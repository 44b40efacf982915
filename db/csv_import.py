"""Label and box CSVs: RSNA's train.csv / train_bounding_boxes.csv, report texts, readers' work.

Each file is read row by row; a bad row is refused with a message naming the file, the line and
what is wrong, and the other rows are imported. Re-importing a file adds nothing twice.

Readers' box CSVs may carry two optional columns (``spine export readers`` writes them):

* ``fracture``: the reader's own id of one fracture (empty: a box on its own);
* ``key``: 1 (or empty) for a key box the reader drew, 0 for a box interpolated between two key
  boxes of its fracture.

Key rows are stored; after the file, each fracture (rows of one reader, study and fracture id) is
interpolated by the rule of :mod:`spine_core.interpolation` (``db.box_events.refresh_fracture``).
Key=0 rows are never stored — the boxes between key rows are always made from the keys — but each
is checked against the rule: a key=0 row that is not between two key rows of its fracture, or whose
box differs from the interpolated one by more than :data:`INTERPOLATION_TOLERANCE_PX`, is reported
as a problem of its line (the interpolated box is kept). Of two key rows of one fracture on the
same slice the later line wins; the earlier is refused with a message naming the later.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import models as m
from db.audit import record
from spine_core.adjudication import LevelCall
from spine_core.boxes import Box
from spine_core.consensus import validate_box
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
    """Cache of study id, series shape and instance numbers by StudyInstanceUID."""

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


def _slice_index(series: m.Series, slice_number: str) -> int:
    value = _number(slice_number, "slice_number")
    if value != int(value):
        raise InputError(f"slice_number must be an integer, got '{slice_number[:40]}'")
    number = int(value)
    numbers = [int(n) for n in series.instance_numbers]
    if number not in numbers:
        raise InputError(
            f"slice_number {number} does not exist in this study "
            f"(instance numbers {min(numbers)}–{max(numbers)})" if numbers else
            f"slice_number {number}: the series has no instance numbers"
        )
    return numbers.index(number)


def dataset_user(session: Session) -> m.User:
    """The inactive system account owning dataset reference boxes (created on first use)."""
    user = session.scalars(select(m.User).where(m.User.username == DATASET_USER)).first()
    if user is None:
        user = m.User(username=DATASET_USER, display_name="Dataset reference", role=Role.viewer.value,
                      active=False, password_hash="!")
        session.add(user)
        session.flush()
    return user


def import_csv(session: Session, path: Path, actor: str, kind: str | None = None) -> CsvOutcome:
    """Import one CSV in the caller's transaction (a savepoint per row keeps good rows)."""
    kind = kind or detect_csv_kind(path)
    outcome = CsvOutcome(path, kind)
    studies = _Studies(session)
    handler = _HANDLERS[kind]
    fractures = _Fractures(_later_keys(path)) if kind == "reader_boxes" else None
    for line, row in _rows(path):
        uid = row.get("StudyInstanceUID", "")
        where = f"{path.name} line {line}"
        found = studies.get(uid)
        if found is None:
            outcome.problems.append(f"{where}: study '{uid}' is not imported; import its images first")
            continue
        try:
            with session.begin_nested():
                if fractures is not None:
                    changed = _reader_box(session, found, row, actor, fractures=fractures, line=line,
                                          where=where)
                else:
                    changed = handler(session, found, row, actor)
        except SpineError as exc:
            outcome.problems.append(f"{where}: {exc}")
            continue
        if changed:
            outcome.imported += 1
        else:
            outcome.unchanged += 1
    if fractures is not None:
        fractures.finish(session, actor, outcome)
    return outcome


def _rsna_labels(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, _ = found
    labels = {level: _flag(row[level], level) for level in CERVICAL}
    overall = _flag(row["patient_overall"], "patient_overall")
    if overall != any(labels.values()):
        raise InputError(
            f"patient_overall={int(overall)} contradicts C1–C7 ({''.join(str(int(v)) for v in labels.values())})"
        )
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    if report is None:
        report = m.Report(study_id=study.id, created_by=actor, source="train.csv")
        session.add(report)
    elif report.labels == labels and report.patient_overall == overall:
        return False
    before = {"labels": dict(report.labels or {}), "patient_overall": report.patient_overall}
    report.labels = labels
    report.patient_overall = overall
    session.flush()
    record(session, actor, "report.labels", "study", study.study_uid, before,
           {"labels": labels, "patient_overall": overall})
    return True


def _report_text(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, _ = found
    report = session.scalars(select(m.Report).where(m.Report.study_id == study.id)).first()
    if report is None:
        report = m.Report(study_id=study.id, created_by=actor, source="reports.csv", labels={})
        session.add(report)
    elif report.text == row["text"]:
        return False
    before = {"text": report.text}
    report.text = row["text"]
    session.flush()
    record(session, actor, "report.text", "study", study.study_uid, before, {"text": row["text"]})
    return True


def _box_from_row(series: m.Series, row: dict[str, str]) -> tuple[Box, int]:
    slice_index = _slice_index(series, row["slice_number"])
    box = Box(x=_number(row["x"], "x"), y=_number(row["y"], "y"),
                  width=_number(row["width"], "width"), height=_number(row["height"], "height"),
                  slice_index=slice_index)
    n, rows, cols = (int(v) for v in series.shape)
    validate_box(box, rows=rows, cols=cols, n_slices=n)
    return box, int(series.instance_numbers[slice_index])


def _add_box(session: Session, study: m.Study, series: m.Series, reader: m.User, box: Box,
             instance: int, level: str | None, note: str, source: str, actor: str,
             fracture: str | None = None) -> bool:
    same = select(m.Box.id).where(
        m.Box.study_id == study.id, m.Box.reader_id == reader.id,
        m.Box.slice_index == box.slice_index, m.Box.x == box.x, m.Box.y == box.y,
        m.Box.width == box.width, m.Box.height == box.height, m.Box.deleted_at.is_(None),
    )
    if fracture is not None:  # the same key box of the same fracture
        same = same.where(m.Box.fracture == fracture, m.Box.is_key.is_(True))
    if session.scalars(same).first() is not None:
        return False
    row = m.Box(study_id=study.id, series_id=series.id, reader_id=reader.id,
                slice_index=box.slice_index, instance_number=instance, x=box.x, y=box.y,
                width=box.width, height=box.height, level=level, level_from_mask=level is None,
                note=note, source=source, fracture=fracture, is_key=True)
    session.add(row)
    session.flush()
    after: dict[str, object] = {
        "study": study.study_uid, "reader": reader.username, "slice_number": instance,
        "x": box.x, "y": box.y, "width": box.width, "height": box.height, "level": level}
    if fracture is not None:
        after["fracture"] = fracture
    record(session, actor, "box.import", "box", str(row.id), None, after)
    return True


def _rsna_box(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str) -> bool:
    study, series = found
    if series is None:
        raise InputError("the study has no image series")
    box, instance = _box_from_row(series, row)
    return _add_box(session, study, series, dataset_user(session), box, instance, None, "",
                    "dataset", actor)


def _reader(session: Session, username: str) -> m.User:
    user = session.scalars(select(m.User).where(m.User.username == username)).first()
    if user is None:
        raise InputError(f"reader '{username}' is not a user; add them with `spine users add`")
    if user.role != Role.annotator.value:
        raise InputError(f"user '{username}' is {user.role}, not an annotator")
    return user


def _ensure_assigned(session: Session, study: m.Study, reader: m.User, actor: str) -> None:
    exists = session.scalars(
        select(m.Assignment).where(m.Assignment.study_id == study.id, m.Assignment.reader_id == reader.id)
    ).first()
    if exists is None:
        session.add(m.Assignment(study_id=study.id, reader_id=reader.id, assigned_by=actor,
                                 status=m.AssignmentStatus.submitted.value))
        session.flush()
        record(session, actor, "assign", "study", study.study_uid, None,
               {"reader": reader.username, "via": "import"})


@dataclass
class _Fractures:
    """The fracture work of one readers' box CSV, finished after its rows (:func:`import_csv`).

    ``later``: line of a key row -> the later line of a key row of the same fracture on the same
    slice (that one wins); ``groups``: (study id, reader id, fracture) to interpolate; ``checks``:
    key=0 rows (where, group, box, slice_number) to compare with the interpolated boxes.
    """

    later: dict[int, int]
    groups: dict[tuple[int, int, str], str] = field(default_factory=dict)
    checks: list[tuple[str, tuple[int, int, str], Box, int]] = field(default_factory=list)

    def finish(self, session: Session, actor: str, outcome: CsvOutcome) -> None:
        from db.box_events import refresh_fracture

        for (study_id, reader_id, fracture), reader in self.groups.items():
            try:
                with session.begin_nested():
                    refresh_fracture(session, study_id, reader_id, fracture, actor)
            except SpineError as exc:
                outcome.problems.append(
                    f"{outcome.path.name}: fracture '{fracture}' of reader {reader} was not "
                    f"interpolated: {exc}")
        for where, (study_id, reader_id, fracture), box, number in self.checks:
            made = session.scalars(select(m.Box).where(
                m.Box.study_id == study_id, m.Box.reader_id == reader_id, m.Box.fracture == fracture,
                m.Box.slice_index == box.slice_index, m.Box.is_key.is_(False),
                m.Box.deleted_at.is_(None),
            )).first()
            if made is None:
                outcome.problems.append(
                    f"{where}: the key=0 row on slice_number {number} is not between two key rows of "
                    f"fracture '{fracture}'; ignored (boxes between key rows are interpolated from them)")
                continue
            corners = (box.x, box.y, box.x2, box.y2)
            expected = (made.x, made.y, made.x + made.width, made.y + made.height)
            if max(abs(a - b) for a, b in zip(corners, expected)) > INTERPOLATION_TOLERANCE_PX:
                outcome.problems.append(
                    f"{where}: the key=0 row on slice_number {number} (x={box.x:g}, y={box.y:g}, "
                    f"width={box.width:g}, height={box.height:g}) differs from the box interpolated "
                    f"between the key rows of fracture '{fracture}' (x={made.x:.4g}, y={made.y:.4g}, "
                    f"width={made.width:.4g}, height={made.height:.4g}); the interpolated box was kept")


def _later_keys(path: Path) -> dict[int, int]:
    """Line of each key row that a later key row of the same reader, study, fracture and slice
    replaces -> that later line (the last of them)."""
    last: dict[tuple[str, str, str, int], int] = {}
    later: dict[int, int] = {}
    for line, row in _rows(path):
        fracture = row.get("fracture", "")
        if not fracture or row.get("key", "") not in ("", "1"):
            continue
        try:
            number = int(float(row.get("slice_number", "")))
        except ValueError:
            continue
        key = (row.get("StudyInstanceUID", ""), row.get("reader", ""), fracture, number)
        if key in last:
            later[last[key]] = line
        last[key] = line
    return {line: _last(later, line) for line in later}


def _last(later: dict[int, int], line: int) -> int:
    while line in later:
        line = later[line]
    return line


def _reader_box(session: Session, found: tuple[m.Study, m.Series | None], row: dict[str, str], actor: str,
                *, fractures: _Fractures | None = None, line: int = 0, where: str = "") -> bool:
    study, series = found
    if series is None:
        raise InputError("the study has no image series")
    reader = _reader(session, row["reader"])
    fracture = row.get("fracture", "") or None
    if fracture is not None and len(fracture) > 64:
        raise InputError(f"fracture '{fracture[:20]}…' is longer than 64 characters")
    key = _flag(row["key"], "key") if row.get("key", "") else True
    box, instance = _box_from_row(series, row)
    level = level_name(level_id(row["level"])) if row.get("level") else None
    if not key:
        if fracture is None:
            raise InputError("key=0 marks a box interpolated between the key boxes of a fracture, so "
                             "the row needs a fracture id (column fracture)")
        if fractures is not None:
            fractures.checks.append((where, (study.id, reader.id, fracture), box, instance))
        return False
    if fractures is not None and line in fractures.later:
        raise InputError(
            f"line {fractures.later[line]} is a later key row of fracture '{fracture}' on the same "
            f"slice_number {instance}; the later row wins, this one was not imported")
    _ensure_assigned(session, study, reader, actor)
    added = _add_box(session, study, series, reader, box, instance, level, row.get("note", ""),
                     "imported", actor, fracture)
    if fracture is not None:
        if fractures is not None:
            fractures.groups.setdefault((study.id, reader.id, fracture), reader.username)
        else:
            from db.box_events import refresh_fracture

            refresh_fracture(session, study.id, reader.id, fracture, actor, series=series)
    return added


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
    existing = session.scalars(
        select(m.LevelLabel).where(m.LevelLabel.study_id == study.id,
                                   m.LevelLabel.reader_id == reader.id, m.LevelLabel.level == level)
    ).first()
    if existing is not None and existing.call == call:
        return False
    before = None if existing is None else {"call": existing.call}
    if existing is None:
        session.add(m.LevelLabel(study_id=study.id, reader_id=reader.id, level=level, call=call))
    else:
        existing.call = call
    session.flush()
    record(session, actor, "level.import", "level_label", f"{study.study_uid}:{level}", before,
           {"call": call, "reader": reader.username})
    return True


#: Spellings accepted for a level call (RSNA-style 0/1 included).
_CALL_ALIASES = {"1": "fractured", "0": "not_fractured", "?": "unsure", "fractured": "fractured",
                 "not_fractured": "not_fractured", "not fractured": "not_fractured",
                 "unsure": "unsure"}

_HANDLERS = {
    "rsna_labels": _rsna_labels,
    "rsna_boxes": _rsna_box,
    "reader_boxes": _reader_box,
    "reader_levels": _reader_level,
    "reports": _report_text,
}
