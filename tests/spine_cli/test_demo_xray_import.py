"""`spine demo --modality xray --import` and `spine import` of radiographs: the synthetic DX films
become radiograph cases; bad films are one stderr line each; a PNG without sidecar says spacing unknown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.spine_cli.test_main import run_spine


def test_xray_demo_imports_its_films_as_one_slice_dx_series(tmp_path: Path) -> None:
    out = tmp_path / "xr"
    result = run_spine("demo", "--modality", "xray", "--region", "cervical", "--studies", "1",
                       "--out", str(out), "--import", "--no-progress", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rsna: 1 studies added" in result.stdout and "1 masks" in result.stdout
    assert "Traceback" not in result.stderr
    (db_file,) = tmp_path.glob("*.db")
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT modality, shape, files FROM series ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["DX"]
    assert all(r[1].startswith("[1,") and r[2] == '["1.dcm"]' for r in rows)
    with sqlite3.connect(db_file) as conn:  # the projected vertebrae: the film's label mask
        (levels,) = conn.execute("SELECT levels FROM masks").fetchone()
    assert levels.startswith('["C1", "C2"') or levels.startswith('["C2"'), levels
    again = run_spine("import", str(out), "--no-progress", data_dir=tmp_path)
    assert again.returncode == 0 and "1 already imported" in again.stdout, again.stderr


def test_bad_radiographs_are_one_stderr_line_each(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tests.radiograph_helpers import small_film, write_dx

    root = tmp_path / "bad"
    film = small_film()
    write_dx(film, root / "frames", 2, NumberOfFrames=2,
             PixelData=np.tile(film.image, (2, 1, 1)).tobytes())
    write_dx(film, root / "huge", 4, Rows=30000, Columns=30000, PixelData=b"\0" * 64)
    write_dx(film, root / "good", 5)
    result = run_spine("import", str(root), "--no-progress", data_dir=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "1 studies added" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and "Traceback" not in result.stderr, result.stderr
    assert any("frames/1.dcm" in s and "2 frames" in s for s in skipped), skipped
    assert any("1.dcm" in s and "30000×30000" in s and "re-export" in s for s in skipped), skipped
    pngs = tmp_path / "png"
    pngs.mkdir()
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(pngs / "film.png")
    plain = run_spine("import", str(pngs), "--no-progress", data_dir=tmp_path)
    assert plain.returncode == 0 and "1 studies added" in plain.stdout, plain.stderr
    assert "spacing unknown" in plain.stderr  # a warning line, not guessed
