"""Unique keys of imported boxes on SQLite and PostgreSQL (db.import_keys, migration 0006): the
key binds imports only, so readers still draw what they like in the app; a box a reader deleted
comes back on re-import, a box a reader moved is not doubled; migration 0006 keeps one of the
copies that racing imports left in older databases, and its keys are the importer's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import annotations as ann
from db import box_events as ev
from db import models as m
from db.audit import history
from db.csv_import import import_csv
from db.import_keys import box_import_key
from db.migrate import downgrade, upgrade
from db.session import make_engine, make_sessionmaker, unit_of_work
from tests.annotation_helpers import FIRST_INSTANCE, add_study, setup_people, user

CSV = ("StudyInstanceUID,slice_number,x,y,width,height,reader,level,note\n"
       f"7.7.1,{FIRST_INSTANCE + 3},10,12,8,6,reader1,C5,first\n"
       f"7.7.1,{FIRST_INSTANCE + 4},20,22,5,5,reader1,C6,second\n")


def _live(sessions: sessionmaker[Session]) -> list[m.Box]:
    with unit_of_work(sessions, readonly=True) as s:
        return list(s.scalars(select(m.Box).where(m.Box.deleted_at.is_(None)).order_by(m.Box.id)))


def test_imported_boxes_are_keyed_and_readers_boxes_stay_free(db_sessions: sessionmaker[Session],
                                                              tmp_path: Path) -> None:
    ids = setup_people(db_sessions)
    with unit_of_work(db_sessions) as s:
        study_id = add_study(s, "7.7.1").id
    path = tmp_path / "readers_boxes.csv"
    path.write_text(CSV)
    with unit_of_work(db_sessions) as s:
        assert import_csv(s, path, "admin").imported == 2
    boxes = _live(db_sessions)
    assert [b.import_key for b in boxes] == [
        box_import_key(study_id, ids["reader1"], b.slice_index, b.x, b.y, b.width, b.height, None)
        for b in boxes]
    with unit_of_work(db_sessions, readonly=True) as s:  # the audit entries written in bulk read back
        entries = history(s, action="box.import")
    assert sorted(e.after["level"] for e in entries) == ["C5", "C6"]
    assert all(e.before is None and e.actor == "admin" for e in entries)
    assert {e.entity_id for e in entries} == {str(b.id) for b in boxes}

    def act(fn, *args):  # noqa: ANN001, ANN202 - one request of reader1
        with unit_of_work(db_sessions) as s:
            return fn(s, user(s, ids["reader1"]), *args)

    act(ann.reopen, study_id)  # imported work counts as submitted
    drawn = ann.BoxInput(3, 40, 40, 8, 6, level="C5")  # one box drawn twice on one slice
    act(ev.create_box, study_id, drawn)
    act(ev.create_box, study_id, drawn)
    assert sum(b.source == "drawn" and b.import_key is None for b in _live(db_sessions)) == 2

    first, second = boxes
    act(ev.delete_box, first.id, first.version)
    act(ev.change_box, second.id, second.version, ann.BoxInput(4, 30, 30, 5, 5, level="C6"))
    with unit_of_work(db_sessions) as s:  # the deleted box comes back, the moved one is not doubled
        again = import_csv(s, path, "admin")
    assert (again.imported, again.unchanged, again.problems) == (1, 1, [])
    live = _live(db_sessions)
    assert len(live) == 4 and sum(b.import_key == first.import_key for b in live) == 1


def _seed_0005(url: str) -> None:
    """Rows as an import racing itself left them before 0006: copies of one imported box, of an
    interpolated box, of a dataset mask; a drawn box beside them."""
    now = "'2026-01-01 00:00:00'"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, display_name, password_hash, role, is_chair, active, "
                f"created_at, version) VALUES (1, 'r1', 'r1', '!', 'annotator', false, true, {now}, 1)"))
            conn.execute(text(
                "INSERT INTO studies (id, study_uid, dataset, source_path, patient_id, description, "
                "status, n_slices, has_mask, region, call_scheme, warnings, imported_at, imported_by, "
                f"version) VALUES (1, '1.2', 'dicom', '', '', '', 'new', 10, true, '', 'fracture', '[]', "
                f"{now}, '', 1)"))
            conn.execute(text(
                "INSERT INTO series (id, study_id, series_uid, modality, source_format, source_dir, "
                "files, shape, affine, instance_numbers, fingerprint, warnings, created_at) VALUES "
                f"(1, 1, '1.2.1', 'CT', 'dicom', '/', '[]', '[10, 8, 8]', '[]', '[]', '-', '[]', {now})"))
            for mask_id in (1, 2):
                conn.execute(text(
                    "INSERT INTO masks (id, series_id, path, vocabulary, source, levels, fingerprint, "
                    f"warnings, created_at) VALUES ({mask_id}, 1, 'm.nii.gz', 'verse', 'dataset', '[]', "
                    f"'f', '[]', {now})"))
            rows = [(1, "imported", "true", "NULL"), (2, "imported", "true", "NULL"),
                    (3, "drawn", "true", "NULL"), (4, "interpolated", "false", "'F1'"),
                    (5, "interpolated", "false", "'F1'")]
            for box_id, source, is_key, fracture in rows:
                conn.execute(text(
                    "INSERT INTO boxes (id, study_id, series_id, reader_id, slice_index, "
                    "instance_number, x, y, width, height, level, level_from_mask, note, source, "
                    f"fracture, is_key, created_at, updated_at, version) VALUES ({box_id}, 1, 1, 1, 2, "
                    f"3, 1.5, 1, 4, 4, 'C5', true, '', '{source}', {fracture}, {is_key}, {now}, {now}, 1)"))
    finally:
        engine.dispose()


def test_migration_0006_keeps_one_of_each_copy_and_keys_it_like_the_importer(db_url: str) -> None:
    upgrade(db_url, "0005")
    _seed_0005(db_url)
    upgrade(db_url, "0006")
    upgrade(db_url)  # the ORM maps today's columns; the migrations after 0006 keep its rows as they are
    sessions = make_sessionmaker(db_url)
    try:
        with unit_of_work(sessions, readonly=True) as s:
            boxes = {b.id: b for b in s.scalars(select(m.Box))}
            assert {i for i, b in boxes.items() if b.deleted_at is None} == {1, 3, 4}
            assert boxes[2].deleted_at is not None and boxes[5].deleted_at is not None
            assert boxes[1].import_key == box_import_key(1, 1, 2, 1.5, 1.0, 4.0, 4.0, None)
            assert boxes[3].import_key is None and boxes[2].import_key is None
            dedupe = {e.entity_id: e.after for e in history(s, action="box.dedupe")}
            assert dedupe.keys() == {"2", "5"} and dedupe["2"]["duplicate_of"] == 1
            assert [k.id for k in s.scalars(select(m.Mask))] == [1]
        with unit_of_work(sessions) as s:  # the kept box's key is taken now
            s.add(m.Box(id=10, study_id=1, series_id=1, reader_id=1, slice_index=2, instance_number=3, x=1.5,
                        y=1, width=4, height=4, source="imported", import_key=boxes[1].import_key,
                        deleted_at=dt.datetime.now(dt.UTC)))  # a deleted row may share it
        with pytest.raises(IntegrityError, match="import_key"):  # a second live one may not
            with unit_of_work(sessions) as s:
                s.add(m.Box(id=11, study_id=1, series_id=1, reader_id=1, slice_index=2, instance_number=3,
                            x=1.5, y=1, width=4, height=4, source="imported",
                            import_key=boxes[1].import_key))
    finally:
        sessions.kw["bind"].dispose()
    downgrade(db_url, "0005")
    upgrade(db_url)


def test_one_readers_box_at_a_time_as_the_sr_import_adds_them(db_sessions: sessionmaker[Session]) -> None:
    from db.csv_import import _reader_box
    from spine_core.errors import InputError

    setup_people(db_sessions)
    row = {"reader": "reader1", "slice_number": str(FIRST_INSTANCE + 2), "x": "1.5", "y": "2",
           "width": "4", "height": "4", "level": "C4", "note": "", "key": "", "fracture": ""}
    with unit_of_work(db_sessions) as s:
        study = add_study(s, "7.7.2")
        found = (study, ann.primary_series(s, study.id))
        assert _reader_box(s, found, row, "admin") is True
        assert _reader_box(s, found, row, "admin") is False  # the same box: nothing added
        with pytest.raises(InputError, match=r"^reader 'nobody' is not a user"):
            _reader_box(s, found, {**row, "reader": "nobody"}, "admin")
    assert len(_live(db_sessions)) == 1
