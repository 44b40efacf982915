"""`spine demo --region/--layout`: flags, defaults, the RSNA refusal, folders the importer finds."""

from __future__ import annotations

import json
from pathlib import Path

from spine_cli.main import build_parser
from spine_core.io.layouts import detect_layout, iter_cases
from tests.spine_cli.test_main import run_spine


def test_defaults_are_cervical_rsna_as_before() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.region, args.layout, args.shape) == ("cervical", "rsna", None)
    args = build_parser().parse_args(["demo", "--region", "whole", "--layout", "verse"])
    assert (args.region, args.layout) == ("whole", "verse")


def test_rsna_layout_refuses_the_whole_spine_in_one_line(tmp_path: Path) -> None:
    result = run_spine("demo", "--region", "whole", "--out", str(tmp_path / "d"),
                       data_dir=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RSNA layout holds cervical studies only" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_unknown_region_is_an_argparse_error(tmp_path: Path) -> None:
    result = run_spine("demo", "--region", "sacral", data_dir=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_a_radiograph_region_for_ct_is_one_line(tmp_path: Path) -> None:
    result = run_spine("demo", "--region", "lumbar", data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: region 'lumbar': choose one of cervical, "
                                     "thoracolumbar, whole")


def test_verse_and_ctspine_demo_folders_import_without_help(tmp_path: Path) -> None:
    for layout, kind in (("verse", "verse"), ("ctspine1k", "ctspine1k")):
        out = tmp_path / layout
        result = run_spine("demo", "--region", "thoracolumbar", "--layout", layout,
                           "--studies", "2", "--shape", "96x48x48", "--out", str(out),
                           data_dir=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "thoracolumbar" in result.stdout
        assert detect_layout(out).kind == kind
        assert len(list(iter_cases(out))) == 2
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["layout"] == layout and manifest["shape"] == [96, 48, 48]


def test_bad_shape_is_one_line(tmp_path: Path) -> None:
    result = run_spine("demo", "--layout", "verse", "--shape", "96x48", "--out",
                       str(tmp_path / "d"), data_dir=tmp_path)
    assert result.returncode != 0 and "--shape must be" in result.stderr


def test_whole_spine_demo_imports_into_the_database(tmp_path: Path) -> None:
    result = run_spine("demo", "--region", "whole", "--layout", "verse", "--studies", "2",
                       "--shape", "128x48x48", "--out", str(tmp_path / "d"), "--import",
                       "--no-progress", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "verse: 2 studies added" in result.stdout and "2 masks" in result.stdout


def test_xray_demo_writes_lateral_dx_films_and_refuses_regions_it_cannot_film(tmp_path: Path) -> None:
    import csv

    import pydicom

    out = tmp_path / "xr"
    result = run_spine("demo", "--modality", "xray", "--region", "lumbar", "--studies", "1",
                       "--out", str(out), data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 synthetic lateral lumbar radiographs (DX)" in result.stdout
    (path,) = out.glob("train_images/*/1.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "DX" and ds.ImagerPixelSpacing and ds.Rows > 500
    with (out / "truth.csv").open(newline="") as fh:
        levels = [r["level"] for r in csv.DictReader(fh)]
    assert {"L1", "L5", "S"} <= set(levels)
    refused = run_spine("demo", "--modality", "xray", "--region", "whole", "--out",
                        str(tmp_path / "no"), data_dir=tmp_path)
    assert refused.returncode == 2 and "cervical or lumbar" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "no").exists()
