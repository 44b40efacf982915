"""The `spine` command as a user runs it: a real process, real files, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spine_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def run_spine(*args: str, data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env["SPINE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "spine_cli.main", *args], cwd=ROOT, env=env, input=stdin,
        capture_output=True, text=True, timeout=300,
    )


def _subcommands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    commands = [[name] for name in sub.choices]  # type: ignore[union-attr]
    commands += [["users", "add"], ["users", "list"], ["users", "set-role"],
                 ["disputes", "list"], ["disputes", "refresh"]]
    return commands


@pytest.mark.parametrize("command", _subcommands(), ids=lambda c: " ".join(c))
def test_every_subcommand_has_help(command: list[str], tmp_path: Path) -> None:
    result = run_spine(*command, "--help", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: spine" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_import_of_a_missing_path_is_one_clear_line(tmp_path: Path) -> None:
    result = run_spine("import", str(tmp_path / "nowhere"), data_dir=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_import_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_spine("import", str(empty), data_dir=tmp_path / "var")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(empty) in result.stderr or "empty" in result.stderr.lower()


def test_export_nifti_of_unknown_study_is_refused(tmp_path: Path) -> None:
    result = run_spine("export", "nifti", "1.2.3.4", str(tmp_path / "out"), data_dir=tmp_path)
    assert result.returncode == 2
    assert "no study with StudyInstanceUID 1.2.3.4" in result.stderr


def test_users_add_list_set_role(tmp_path: Path) -> None:
    added = run_spine("users", "add", "dr_who", "--role", "annotator", data_dir=tmp_path,
                      stdin="s3cret-pass\n")
    assert added.returncode == 0, added.stderr
    again = run_spine("users", "add", "dr_who", "--role", "annotator", data_dir=tmp_path,
                      stdin="s3cret-pass\n")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    changed = run_spine("users", "set-role", "dr_who", "adjudicator", data_dir=tmp_path)
    assert changed.returncode == 0, changed.stderr
    listed = run_spine("users", "list", data_dir=tmp_path)
    assert "dr_who\tadjudicator" in listed.stdout


def test_db_upgrade_and_info(tmp_path: Path) -> None:
    upgraded = run_spine("db", "upgrade", data_dir=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database at revision" in upgraded.stdout
    info = run_spine("info", data_dir=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "studies: 0" in info.stdout


def test_a_demo_imported_into_an_empty_database_brings_its_readers_work(tmp_path: Path) -> None:
    import sqlite3

    result = run_spine("demo", "--studies", "2", "--shape", "48x64x64", "--out", str(tmp_path / "d"),
                       "--import", "--no-progress", data_dir=tmp_path / "var")
    assert result.returncode == 0, result.stderr
    assert "is not a user" not in result.stderr and "created the demo accounts" in result.stdout
    con = sqlite3.connect(tmp_path / "var" / "spine.db")
    readers = con.execute("SELECT COUNT(DISTINCT u.username) FROM boxes b JOIN users u "
                          "ON u.id = b.reader_id WHERE u.username LIKE 'reader%'").fetchone()[0]
    calls = con.execute("SELECT COUNT(*) FROM level_labels").fetchone()[0]
    assert readers >= 1 and calls > 0
