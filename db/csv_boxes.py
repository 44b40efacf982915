"""Box CSVs in bulk: readers' boxes (``readers_boxes.csv``) and RSNA's ``train_bounding_boxes.csv``.

Three steps, in the caller's one transaction per file:

1. *Check* every row first, without writing: study, series, reader, slice, box, level, fracture,
   key. A bad row gets one line naming the file, the line and what is wrong; the others go on.
2. *Compare* with the live boxes of the file's studies and readers (one query): a row whose box
   is already there (imported before, or drawn in the app and exported) is unchanged.
3. *Insert* the rest in batches, ``INSERT … ON CONFLICT (import_key) DO NOTHING RETURNING``
   (:mod:`db.import_keys`): a row another import added meanwhile is skipped by the database, not
   by a check, so two imports of one file racing leave one copy. Assignments are upserted the same
   way; audit entries (one per row) are written in bulk.

Fractures whose keys were added are then interpolated (``db.box_events.refresh_fracture``), and
each key=0 row is checked against the interpolated box of its slice (see :mod:`db.csv_import`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from db import models as m
from db.bulk_insert import insert_rows
from db.import_keys import box_import_key, insert_for
from spine_core.boxes import Box
from spine_core.consensus import validate_box
from spine_core.errors import InputError, SpineError
from spine_core.labels import level_id, level_name
from spine_core.roles import Role

#: Rows per INSERT statement (and per IN list).
BATCH = 2000

_BOXES: Table = m.Box.__table__  # type: ignore[assignment]
_ASSIGNMENTS: Table = m.Assignment.__table__  # type: ignore[assignment]
_AUDIT: Table = m.AuditEntry.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class _Series:
    """What checking a row needs of a study's first series."""

    study_id: int
    study_uid: str
    series: m.Series
    index_of: dict[int, int]  # instance number -> slice index
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class _KeyRow:
    """A checked key row, ready to store."""

    line: int
    where: str
    target: _Series
    reader_id: int
    reader: str
    box: Box
    instance: int
    level: str | None
    note: str
    fracture: str | None

    def content(self) -> tuple[int, int, int, float, float, float, float]:
        b = self.box
        return (self.target.study_id, self.reader_id, b.slice_index, b.x, b.y, b.width, b.height)


@dataclass
class _Checks:
    """key=0 rows to compare with the interpolated boxes: (where, study, reader, fracture, box, number)."""

    rows: list[tuple[str, int, int, str, Box, int]] = field(default_factory=list)


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _targets(session: Session, uids: Iterable[str]) -> dict[str, _Series | None]:
    """StudyInstanceUID -> its study and first series (None: the study has no series)."""
    found: dict[str, _Series | None] = {}
    wanted = sorted(set(uids))
    for chunk in _chunks(wanted):
        studies = {uid: study_id for uid, study_id in session.execute(
            select(m.Study.study_uid, m.Study.id).where(m.Study.study_uid.in_(chunk)))}
        first: dict[int, m.Series] = {}
        for series in session.scalars(select(m.Series).where(
                m.Series.study_id.in_(list(studies.values()))).order_by(m.Series.id)):
            first.setdefault(series.study_id, series)
        for uid, study_id in studies.items():
            s = first.get(study_id)
            found[uid] = None if s is None else _Series(
                study_id, uid, s, {int(n): i for i, n in enumerate(s.instance_numbers)},
                tuple(int(v) for v in s.shape))  # type: ignore[arg-type]
    return found


def _slice_index(target: _Series, slice_number: str) -> int:
    from db.csv_import import _number

    value = _number(slice_number, "slice_number")
    if value != int(value):
        raise InputError(f"slice_number must be an integer, got '{slice_number[:40]}'")
    number = int(value)
    index = target.index_of.get(number)
    if index is None:
        numbers = target.index_of
        raise InputError(
            f"slice_number {number} does not exist in this study "
            f"(instance numbers {min(numbers)}–{max(numbers)})" if numbers else
            f"slice_number {number}: the series has no instance numbers")
    return index


def _box(target: _Series, row: dict[str, str]) -> tuple[Box, int]:
    from db.csv_import import _number

    index = _slice_index(target, row["slice_number"])
    box = Box(x=_number(row["x"], "x"), y=_number(row["y"], "y"),
              width=_number(row["width"], "width"), height=_number(row["height"], "height"),
              slice_index=index)
    n, rows, cols = target.shape
    validate_box(box, rows=rows, cols=cols, n_slices=n)
    return box, int(target.series.instance_numbers[index])


class _Readers:
    """Users by name, checked once each (a refusal is remembered as its message)."""

    def __init__(self, session: Session, names: Iterable[str]) -> None:
        wanted = sorted(set(names))
        self.users: dict[str, tuple[int, str] | str] = {}
        for chunk in _chunks(wanted):
            for user_id, name, role in session.execute(
                    select(m.User.id, m.User.username, m.User.role).where(m.User.username.in_(chunk))):
                self.users[name] = (user_id, name) if role == Role.annotator.value else (
                    f"user '{name}' is {role}, not an annotator")

    def get(self, name: str) -> tuple[int, str]:
        found = self.users.get(name)
        if found is None:
            raise InputError(f"reader '{name}' is not a user; add them with `spine users add`")
        if isinstance(found, str):
            raise InputError(found)
        return found


def later_keys(rows: Sequence[tuple[int, dict[str, str]]]) -> dict[int, int]:
    """Line of each key row that a later key row of the same reader, study, fracture and slice
    replaces -> that later line (the last of them)."""
    last: dict[tuple[str, str, str, int], int] = {}
    later: dict[int, int] = {}
    for line, row in rows:
        fracture = row.get("fracture", "")
        if not fracture or row.get("key", "") not in ("", "1"):
            continue
        try:
            number = int(float(row.get("slice_number", "")))
        except (ValueError, OverflowError):
            continue
        key = (row.get("StudyInstanceUID", ""), row.get("reader", ""), fracture, number)
        if key in last:
            later[last[key]] = line
        last[key] = line
    out = {}
    for line in later:
        end = line
        while end in later:
            end = later[end]
        out[line] = end
    return out


def import_box_rows(session: Session, name: str, rows: Sequence[tuple[int, dict[str, str]]],
                    actor: str, *, readers: bool) -> tuple[int, int, list[str]]:
    """Import checked box rows of one file (readers' when ``readers``, else the dataset's own);
    returns (imported, unchanged, problems)."""
    from db.csv_import import _flag, dataset_user

    targets = _targets(session, (row.get("StudyInstanceUID", "") for _, row in rows))
    if readers:
        people = _Readers(session, (row.get("reader", "") for _, row in rows))
        later = later_keys(rows)
    else:
        owner = dataset_user(session)
    problems: list[str] = []
    keys: list[_KeyRow] = []
    checks = _Checks()
    unchanged = 0
    for line, row in rows:
        where = f"{name} line {line}"
        uid = row.get("StudyInstanceUID", "")
        if uid not in targets:
            problems.append(f"{where}: study '{uid}' is not imported; import its images first")
            continue
        target = targets[uid]
        try:
            if target is None:
                raise InputError("the study has no image series")
            if not readers:
                box, instance = _box(target, row)
                keys.append(_KeyRow(line, where, target, owner.id, owner.username, box, instance,
                                    None, "", None))
                continue
            reader_id, reader = people.get(row["reader"])
            fracture = row.get("fracture", "") or None
            if fracture is not None and len(fracture) > 64:
                raise InputError(f"fracture '{fracture[:20]}…' is longer than 64 characters")
            key = _flag(row["key"], "key") if row.get("key", "") else True
            box, instance = _box(target, row)
            level = level_name(level_id(row["level"])) if row.get("level") else None
            if not key:
                if fracture is None:
                    raise InputError("key=0 marks a box interpolated between the key boxes of a "
                                     "fracture, so the row needs a fracture id (column fracture)")
                checks.rows.append((where, target.study_id, reader_id, fracture, box, instance))
                unchanged += 1
                continue
            if line in later:
                raise InputError(
                    f"line {later[line]} is a later key row of fracture '{fracture}' on the same "
                    f"slice_number {instance}; the later row wins, this one was not imported")
            keys.append(_KeyRow(line, where, target, reader_id, reader, box, instance, level,
                                row.get("note", ""), fracture))
        except SpineError as exc:
            problems.append(f"{where}: {exc}")
    now = dt.datetime.now(dt.UTC)
    if readers:
        _assign(session, keys, actor, now)
    added, groups = _insert_boxes(session, keys, actor, now, source="imported" if readers else "dataset")
    unchanged += len(keys) - added
    problems += _interpolate(session, name, groups, actor, now)
    problems += _check_interpolated(session, checks)
    return added, unchanged, problems


def _assign(session: Session, keys: Sequence[_KeyRow], actor: str, now: dt.datetime) -> None:
    """Readers' imported work counts as submitted: an assignment per study and reader (upsert)."""
    pairs = dict.fromkeys((k.target.study_id, k.reader_id) for k in keys)
    names = {(k.target.study_id, k.reader_id): (k.target.study_uid, k.reader) for k in keys}
    studies = sorted({s for s, _ in pairs})
    have: set[tuple[int, int]] = set()
    for chunk in _chunks(studies):
        have.update((s, r) for s, r in session.execute(
            select(m.Assignment.study_id, m.Assignment.reader_id)
            .where(m.Assignment.study_id.in_(chunk))))
    missing = sorted(p for p in pairs if p not in have)
    made: list[tuple[int, int]] = []
    for chunk in _chunks(missing):
        stmt = insert_for(session, _ASSIGNMENTS).on_conflict_do_nothing(
            index_elements=["study_id", "reader_id"]
        ).returning(_ASSIGNMENTS.c.study_id, _ASSIGNMENTS.c.reader_id)
        made += [(s, r) for s, r in session.execute(stmt, [
            {"study_id": s, "reader_id": r, "assigned_by": actor, "assigned_at": now, "version": 1,
             "status": m.AssignmentStatus.submitted.value} for s, r in chunk])]
    _audit(session, now, [
        (actor, "assign", "study", names[p][0], None, {"reader": names[p][1], "via": "import"})
        for p in sorted(made)])


@dataclass
class _Fracture:
    """A fracture that got new keys: its series, the keys added (id, row) in file order, and
    whether the database held boxes of it before this file."""

    series: m.Series
    added: list[tuple[int, _KeyRow]] = field(default_factory=list)
    existed: bool = False


def _insert_boxes(session: Session, keys: Sequence[_KeyRow], actor: str, now: dt.datetime,
                  source: str) -> tuple[int, dict[tuple[int, int, str], _Fracture]]:
    """Insert the key rows whose box is not there yet; returns how many were added and the
    fractures (study, reader, fracture) that got a new key."""
    studies = sorted({k.target.study_id for k in keys})
    readers = sorted({k.reader_id for k in keys})
    live: set[tuple[int, int, int, float, float, float, float]] = set()
    live_keys: set[tuple[tuple[int, int, int, float, float, float, float], str]] = set()
    known: set[tuple[int, int, str]] = set()  # fractures with live boxes
    for chunk in _chunks(studies):
        for r in session.execute(select(
                m.Box.study_id, m.Box.reader_id, m.Box.slice_index, m.Box.x, m.Box.y, m.Box.width,
                m.Box.height, m.Box.fracture, m.Box.is_key,
        ).where(m.Box.study_id.in_(chunk), m.Box.reader_id.in_(readers), m.Box.deleted_at.is_(None))):
            content = tuple(r[:7])
            live.add(content)  # type: ignore[arg-type]
            if r.fracture is not None:
                known.add((r.study_id, r.reader_id, r.fracture))
                if r.is_key:
                    live_keys.add((content, r.fracture))  # type: ignore[arg-type]
    pending: list[_KeyRow] = []
    for k in keys:
        content = k.content()
        if (content in live) if k.fracture is None else ((content, k.fracture) in live_keys):
            continue
        live.add(content)
        if k.fracture is not None:
            live_keys.add((content, k.fracture))
        pending.append(k)
    values = [{
        "study_id": k.target.study_id, "series_id": k.target.series.id, "reader_id": k.reader_id,
        "slice_index": k.box.slice_index, "instance_number": k.instance, "x": k.box.x,
        "y": k.box.y, "width": k.box.width, "height": k.box.height, "level": k.level,
        "level_from_mask": k.level is None, "note": k.note, "source": source,
        "fracture": k.fracture, "is_key": True, "created_at": now, "updated_at": now,
        "deleted_at": None, "version": 1, "import_key": box_import_key(*k.content(), k.fracture),
    } for k in pending]
    ids = _insert_returning(session, values)
    entries = []
    groups: dict[tuple[int, int, str], _Fracture] = {}
    for k, v in zip(pending, values, strict=True):
        box_id = ids.get(str(v["import_key"]))
        if box_id is None:  # another import added it meanwhile
            continue
        after: dict[str, Any] = {
            "study": k.target.study_uid, "reader": k.reader, "slice_number": k.instance,
            "x": k.box.x, "y": k.box.y, "width": k.box.width, "height": k.box.height,
            "level": k.level}
        if k.fracture is not None:
            after["fracture"] = k.fracture
            group = (k.target.study_id, k.reader_id, k.fracture)
            if group not in groups:
                groups[group] = _Fracture(k.target.series, existed=group in known)
            groups[group].added.append((box_id, k))
        entries.append((actor, "box.import", "box", str(box_id), None, after))
    _audit(session, now, entries)
    return len(entries), groups


_NEW_KEYS = "ON CONFLICT (import_key) WHERE deleted_at IS NULL DO NOTHING"
#: Box columns with one value for every row of an import.
_SAME = ("source", "is_key", "created_at", "updated_at", "deleted_at", "version")


def _insert_returning(session: Session, values: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert boxes unless their import key is taken; import key -> id of the rows added."""
    if not values:
        return {}
    same = {c: values[0][c] for c in _SAME}
    rows = [{c: v for c, v in row.items() if c not in same} for row in values]
    return {key: box_id for box_id, key in insert_rows(
        session, _BOXES, rows, constants=same, on_conflict=_NEW_KEYS, returning=("id", "import_key"))}


def _insert_plain(session: Session, values: Sequence[dict[str, Any]]) -> None:
    """Insert boxes without a key (interpolated ones)."""
    if values:
        same = {c: values[0][c] for c in _SAME}
        insert_rows(session, _BOXES, [{c: v for c, v in row.items() if c not in same} for row in values],
                    constants=same)


def _audit(session: Session, now: dt.datetime,
           entries: Sequence[tuple[str, str, str, str, dict[str, Any] | None, dict[str, Any] | None]]
           ) -> None:
    """One audit entry per change, in bulk (values are JSON-safe already)."""
    insert_rows(session, _AUDIT, [
        {"actor": actor, "action": action, "entity": entity, "entity_id": entity_id,
         "before": before, "after": after}
        for actor, action, entity, entity_id, before, after in entries], constants={"at": now})


def _interpolate(session: Session, name: str, groups: dict[tuple[int, int, str], _Fracture],
                 actor: str, now: dt.datetime) -> list[str]:
    """Interpolate the fractures that got keys: new ones in bulk here, the others (which had
    boxes already) by ``db.box_events.refresh_fracture``, one at a time."""
    from db.box_events import refresh_fracture

    problems = []
    usernames = {user_id: name for user_id, name in session.execute(select(
        m.User.id, m.User.username).where(m.User.id.in_(sorted({r for _, r, _ in groups}))))}
    fresh = {g: f for g, f in groups.items() if not f.existed}
    _interpolate_new(session, fresh, actor, now)
    for (study_id, reader_id, fracture), group in groups.items():
        if not group.existed:
            continue
        try:
            with session.begin_nested():
                refresh_fracture(session, study_id, reader_id, fracture, actor, series=group.series)
        except SpineError as exc:
            problems.append(f"{name}: fracture '{fracture}' of reader {usernames[reader_id]} was "
                            f"not interpolated: {exc}")
    return problems


def _interpolate_new(session: Session, groups: dict[tuple[int, int, str], _Fracture], actor: str,
                     now: dt.datetime) -> None:
    """Fractures that had no box before this file: their interpolated boxes in bulk, as
    ``refresh_fracture`` makes them (same rows, one ``fracture.interpolate`` audit entry each).
    The file's later-key rule leaves no two keys of one fracture on one slice."""
    from db.box_events import INTERPOLATED
    from spine_core.interpolation import interpolate

    rows: list[dict[str, Any]] = []
    entries = []
    for (study_id, reader_id, fracture), group in groups.items():
        by_id = {box_id: k for box_id, k in group.added}
        result = interpolate(
            Box(k.box.slice_index, k.box.x, k.box.y, k.box.width, k.box.height, reader=str(reader_id),
                level=k.level, id=box_id) for box_id, k in group.added)
        numbers = group.series.instance_numbers
        made = []
        for item in result.interpolated:
            b = item.box
            nearer = by_id[int(item.nearer.id)]  # type: ignore[arg-type]
            made.append(b.slice_index)
            rows.append({
                "study_id": study_id, "series_id": group.series.id, "reader_id": reader_id,
                "slice_index": b.slice_index, "instance_number": int(numbers[b.slice_index]),
                "x": b.x, "y": b.y, "width": b.width, "height": b.height, "level": b.level,
                "level_from_mask": nearer.level is None, "note": "", "source": INTERPOLATED,
                "fracture": fracture, "is_key": False, "created_at": now, "updated_at": now,
                "deleted_at": None, "version": 1, "import_key": None})
        if made:
            entries.append((actor, "fracture.interpolate", "fracture",
                            f"{study_id}:{reader_id}:{fracture}", None, {
                                "keys": [k.slice_index for k in result.keys],
                                "interpolated": sorted(made), "created": len(made), "updated": 0,
                                "removed": [], "superseded": []}))
    _insert_plain(session, rows)
    _audit(session, now, entries)


def _check_interpolated(session: Session, checks: _Checks) -> list[str]:
    """Each key=0 row against the interpolated box of its slice (one query)."""
    from db.csv_import import INTERPOLATION_TOLERANCE_PX

    if not checks.rows:
        return []
    studies = sorted({s for _, s, _, _, _, _ in checks.rows})
    made: dict[tuple[int, int, str, int], tuple[float, float, float, float]] = {}
    for chunk in _chunks(studies):
        for r in session.execute(select(
                m.Box.study_id, m.Box.reader_id, m.Box.fracture, m.Box.slice_index, m.Box.x, m.Box.y,
                m.Box.width, m.Box.height,
        ).where(m.Box.study_id.in_(chunk), m.Box.is_key.is_(False), m.Box.deleted_at.is_(None),
                m.Box.fracture.is_not(None)).order_by(m.Box.id)):
            made.setdefault((r.study_id, r.reader_id, r.fracture, r.slice_index),
                            (r.x, r.y, r.width, r.height))
    problems = []
    for where, study_id, reader_id, fracture, box, number in checks.rows:
        found = made.get((study_id, reader_id, fracture, box.slice_index))
        if found is None:
            problems.append(
                f"{where}: the key=0 row on slice_number {number} is not between two key rows of "
                f"fracture '{fracture}'; ignored (boxes between key rows are interpolated from them)")
            continue
        x, y, w, h = found
        corners = (box.x, box.y, box.x2, box.y2)
        if max(abs(a - b) for a, b in zip(corners, (x, y, x + w, y + h))) > INTERPOLATION_TOLERANCE_PX:
            problems.append(
                f"{where}: the key=0 row on slice_number {number} (x={box.x:g}, y={box.y:g}, "
                f"width={box.width:g}, height={box.height:g}) differs from the box interpolated "
                f"between the key rows of fracture '{fracture}' (x={x:.4g}, y={y:.4g}, "
                f"width={w:.4g}, height={h:.4g}); the interpolated box was kept")
    return problems
