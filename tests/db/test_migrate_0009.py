"""Migration 0009 on real SQLite and PostgreSQL: ``boxes.client_key`` is added empty to the boxes
already there, one key makes one box per study and reader (any number of boxes have none), and a
downgrade removes the column and its index and keeps the boxes."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import current_revision, downgrade, upgrade
from db.session import make_engine

NOW = "'2026-01-01 00:00:00'"


def _box(box_id: int, reader: int, key: str | None) -> str:
    value = "NULL" if key is None else f"'{key}'"
    return (
        "INSERT INTO boxes (id, study_id, series_id, reader_id, slice_index, instance_number, x, y, "
        "width, height, level, level_from_mask, note, source, fracture, is_key, is_reference, "
        f"created_at, updated_at, version{', client_key' if key is not None else ''}) VALUES "
        f"({box_id}, 1, 1, {reader}, 0, 1, 1.0, 1.0, 4.0, 4.0, NULL, true, '', 'drawn', NULL, true, "
        f"false, {NOW}, {NOW}, 1{', ' + value if key is not None else ''})"
    )


def test_client_key_upgrades_empty_is_unique_per_reader_and_downgrades(db_url: str) -> None:
    upgrade(db_url, "0008")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for uid, name in ((1, "r1"), (2, "r2")):
                conn.execute(text(
                    "INSERT INTO users (id, username, display_name, password_hash, role, is_chair, "
                    f"active, created_at, version) VALUES ({uid}, '{name}', '{name}', '!', "
                    f"'annotator', false, true, {NOW}, 1)"))
            conn.execute(text(
                "INSERT INTO studies (id, study_uid, dataset, source_path, patient_id, description, "
                "status, n_slices, has_mask, warnings, imported_at, imported_by, version) VALUES "
                f"(1, '1.1', 'dicom', '', '', '', 'new', 10, false, '[]', {NOW}, '', 1)"))
            conn.execute(text(
                "INSERT INTO series (id, study_id, series_uid, modality, source_format, source_dir, "
                "files, shape, affine, instance_numbers, fingerprint, warnings, created_at) VALUES "
                f"(1, 1, '1.1.1', 'CT', 'nifti', '/', '[]', '[10, 8, 8]', '[]', '[]', '-', '[]', {NOW})"))
            conn.execute(text(_box(1, 1, None)))

        upgrade(db_url, "0009")
        assert current_revision(db_url) == "0009"
        with engine.connect() as conn:
            insp = inspect(conn)
            assert "client_key" in {c["name"] for c in insp.get_columns("boxes")}
            assert "uq_boxes_client_key" in {i["name"] for i in insp.get_indexes("boxes")}
            assert conn.execute(text("SELECT client_key FROM boxes")).scalars().all() == [None]
        with engine.begin() as conn:
            conn.execute(text(_box(2, 1, None)))  # boxes without a key: any number
            conn.execute(text(_box(3, 1, "new-a")))
            conn.execute(text(_box(4, 2, "new-a")))  # the same key of another reader
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(_box(5, 1, "new-a")))

        downgrade(db_url, "0008")
        assert current_revision(db_url) == "0008"
        with engine.connect() as conn:
            insp = inspect(conn)
            assert "client_key" not in {c["name"] for c in insp.get_columns("boxes")}
            assert "uq_boxes_client_key" not in {i["name"] for i in insp.get_indexes("boxes")}
            assert conn.execute(text("SELECT id FROM boxes ORDER BY id")).scalars().all() == [1, 2, 3, 4]
        upgrade(db_url, "0009")
        assert current_revision(db_url) == "0009"
    finally:
        engine.dispose()
