"""Migration 0003 on real SQLite and PostgreSQL: boxes drawn before it become key boxes of no
fracture, the reading_times table appears, and a downgrade keeps the boxes."""

from __future__ import annotations

from sqlalchemy import inspect, text

from db.migrate import current_revision, downgrade, upgrade
from db.session import make_engine


def _insert_box(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, display_name, password_hash, role, is_chair, active, "
                "created_at, version) VALUES (1, 'r1', 'r1', '!', 'annotator', false, true, "
                "'2026-01-01 00:00:00', 1)"))
            conn.execute(text(
                "INSERT INTO studies (id, study_uid, dataset, source_path, patient_id, description, status, "
                "n_slices, has_mask, warnings, imported_at, imported_by, version) VALUES (1, '1.2', 'dicom', "
                "'', '', '', 'new', 10, false, '[]', '2026-01-01 00:00:00', '', 1)"))
            conn.execute(text(
                "INSERT INTO series (id, study_id, series_uid, modality, source_format, source_dir, files, "
                "shape, affine, instance_numbers, fingerprint, warnings, created_at) VALUES (1, 1, '1.2.1', "
                "'CT', 'dicom', '/', '[]', '[10, 8, 8]', '[]', '[]', '-', '[]', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO boxes (id, study_id, series_id, reader_id, slice_index, instance_number, x, y, "
                "width, height, level, level_from_mask, note, source, created_at, updated_at, version) "
                "VALUES (1, 1, 1, 1, 2, 3, 1, 1, 4, 4, 'C5', true, '', 'drawn', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00', 1)"))
    finally:
        engine.dispose()


def test_existing_boxes_become_key_boxes_and_downgrade_keeps_them(db_url: str) -> None:
    upgrade(db_url, "0002")
    _insert_box(db_url)
    upgrade(db_url, "0003")
    assert current_revision(db_url) == "0003"
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT fracture, is_key FROM boxes WHERE id = 1")).one()
            assert (row.fracture, bool(row.is_key)) == (None, True)
            insp = inspect(conn)
            assert "reading_times" in insp.get_table_names()
            assert "ix_boxes_study_reader_fracture" in {ix["name"] for ix in insp.get_indexes("boxes")}
    finally:
        engine.dispose()
    downgrade(db_url, "0002")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            assert "reading_times" not in insp.get_table_names()
            assert {"fracture", "is_key"}.isdisjoint(c["name"] for c in insp.get_columns("boxes"))
            assert conn.execute(text("SELECT count(*) FROM boxes")).scalar_one() == 1
    finally:
        engine.dispose()
