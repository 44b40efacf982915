"""Migration 0004 on real SQLite and PostgreSQL: VerSe and CTSpine1K studies imported before it
are read with Genant grades, others keep fracture calls; level_grades refuses a grade outside
0-3; a downgrade removes both."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import current_revision, downgrade, upgrade
from db.session import make_engine


def test_existing_whole_spine_studies_become_genant_and_grades_stay_in_range(db_url: str) -> None:
    upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, display_name, password_hash, role, is_chair, active, "
                "created_at, version) VALUES (1, 'r1', 'r1', '!', 'annotator', false, true, "
                "'2026-01-01 00:00:00', 1)"))
            for sid, dataset in ((1, "verse"), (2, "rsna"), (3, "ctspine1k")):
                conn.execute(text(
                    "INSERT INTO studies (id, study_uid, dataset, source_path, patient_id, description, "
                    "status, n_slices, has_mask, warnings, imported_at, imported_by, version) VALUES "
                    f"({sid}, '1.{sid}', '{dataset}', '', '', '', 'new', 10, false, '[]', "
                    "'2026-01-01 00:00:00', '', 1)"))
            conn.execute(text(
                "INSERT INTO series (id, study_id, series_uid, modality, source_format, source_dir, "
                "files, shape, affine, instance_numbers, fingerprint, warnings, created_at) VALUES "
                "(1, 1, '1.1.1', 'CT', 'nifti', '/', '[]', '[10, 8, 8]', '[]', '[]', '-', '[]', "
                "'2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO masks (id, series_id, path, vocabulary, source, levels, fingerprint, "
                "warnings, created_at) VALUES (1, 1, '/m.nii.gz', 'verse', 'dataset', "
                "'[\"C7\", \"T1\", \"L1\", \"S\"]', '', '[]', '2026-01-01 00:00:00')"))
        upgrade(db_url, "0004")
        assert current_revision(db_url) == "0004"
        with engine.begin() as conn:
            schemes = dict(conn.execute(text("SELECT dataset, call_scheme FROM studies")).all())
            assert schemes == {"verse": "genant", "rsna": "fracture", "ctspine1k": "genant"}
            regions = dict(conn.execute(text("SELECT dataset, region FROM studies")).all())
            assert regions == {"verse": "whole", "rsna": "", "ctspine1k": ""}
            conn.execute(text("INSERT INTO level_grades (study_id, reader_id, level, grade, morphology, "
                              "updated_at, version) VALUES (1, 1, 'L1', 2, 'wedge', "
                              "'2026-01-01 00:00:00', 1)"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO level_grades (study_id, reader_id, level, grade, morphology, "
                              "updated_at, version) VALUES (1, 1, 'L2', 4, NULL, "
                              "'2026-01-01 00:00:00', 1)"))
        with engine.connect() as conn:
            insp = inspect(conn)
            assert {"reader_relabels", "final_grades"} <= set(insp.get_table_names())
            assert {"grade", "morphology"} <= {c["name"] for c in insp.get_columns("decisions")}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO final_grades (study_id, level, grade, morphology, source, "
                              "updated_at, updated_by) VALUES (1, 'L2', -1, NULL, 'dataset', "
                              "'2026-01-01 00:00:00', '')"))
        downgrade(db_url, "0003")
        with engine.connect() as conn:
            insp = inspect(conn)
            assert "level_grades" not in insp.get_table_names()
            assert not {"reader_relabels", "final_grades"} & set(insp.get_table_names())
            assert "grade" not in {c["name"] for c in insp.get_columns("decisions")}
            assert "call_scheme" not in {c["name"] for c in insp.get_columns("studies")}
    finally:
        engine.dispose()
