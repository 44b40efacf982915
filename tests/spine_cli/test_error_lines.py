"""Bad input and broken surroundings give one line on stderr: no '[Errno N]', no SQL statement,
no row values, no traceback; "internal error" is kept for real bugs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from db import models as m
from db.db_errors import database_refusal
from db.session import unit_of_work
from spine_cli.main import describe_os_error, main


def test_os_errors_name_the_path_and_what_to_do() -> None:
    said = describe_os_error(FileExistsError(17, "File exists", "/data/out"))
    assert said.startswith("/data/out: exists already") and "Errno" not in said
    said = describe_os_error(PermissionError(13, "Permission denied", "/root/x"))
    assert said == "/root/x: permission denied; choose a path you may use or change its permissions"


def test_a_refused_row_is_named_without_sql_or_values(db_sessions) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(db_sessions) as s:
        s.add(m.User(username="secret-name", display_name="a", role="viewer", password_hash="!"))
    with pytest.raises(IntegrityError) as caught:
        with unit_of_work(db_sessions) as s:
            s.add(m.User(username="secret-name", display_name="b", role="viewer", password_hash="!"))
    said = database_refusal(caught.value)
    assert "INSERT" not in said and "secret-name" not in said and "\n" not in said, said
    assert said.startswith("the database refused the change (") and "nothing of it was saved" in said


def test_an_unreachable_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["info", "--db", "postgresql://nobody:pw@127.0.0.1:1/none",
                 "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: cannot use the database") and "pw" not in err, err
    assert "internal error" not in err and "SELECT" not in err


def test_a_missing_import_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["import", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "var")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("below", ["", "sub"])
def test_demo_into_a_file_is_one_line(tmp_path: Path, below: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file")
    out = taken / below if below else taken
    code = main(["demo", "--out", str(out), "--studies", "1", "--data-dir", str(tmp_path / "var")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and "Errno" not in err, err
    assert len(err.strip().splitlines()) == 1
