"""The per-vertebra Genant grades file of a VerSe or CTSpine1K folder (``genant_grades.csv``):
``subject,label,grade,morphology``, one row per vertebra, VerSe label numbers (1-7 C, 8-19 T,
20-25 L, 26 sacrum, 28 T13), morphology empty at grade 0.

:func:`read_grades` checks every row and names the bad ones by line; :func:`subject_key` matches a
row's subject to a case of the folder (``sub-verse004`` and ``verse004_dir-ax``;
``phantom_001`` and ``COLONOG/phantom_001``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spine_core.errors import InputError
from spine_core.genant import check_grade, parse_morphology
from spine_core.labels import LEVEL_NAMES

FILE_NAME = "genant_grades.csv"
COLUMNS = ("subject", "label", "grade", "morphology")


@dataclass(frozen=True)
class GradeRow:
    line: int
    subject: str
    level: str
    grade: int
    morphology: str | None


def subject_key(text: str) -> str:
    """The part of a subject or case id both spellings share."""
    name = PurePosixPath(str(text).strip()).name
    if name.startswith("sub-"):
        name = name[4:]
    return name.split("_dir-")[0]


def read_grades(path: Path) -> tuple[list[GradeRow], list[str]]:
    """(good rows, one line per bad row: "genant_grades.csv line 7: ...")."""
    rows: list[GradeRow] = []
    problems: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS[:3] if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path.name}: columns {', '.join(missing)} are missing; the grades "
                                 f"file needs {', '.join(COLUMNS)}")
            for line, raw in enumerate(reader, start=2):
                try:
                    rows.append(_row(line, raw))
                except (InputError, ValueError) as exc:
                    problems.append(f"{path.name} line {line}: {exc}")
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not a UTF-8 text CSV file") from None
    return rows, problems


def _row(line: int, raw: dict[str, str | None]) -> GradeRow:
    subject = (raw.get("subject") or "").strip()
    if not subject:
        raise InputError("the subject is empty")
    label_text = (raw.get("label") or "").strip()
    try:
        label = int(label_text)
    except ValueError:
        raise InputError(f"label {label_text!r} is not a VerSe label number") from None
    if label not in LEVEL_NAMES:
        raise InputError(f"label {label} is not a vertebra (VerSe labels 1-28)")
    grade_text = (raw.get("grade") or "").strip()
    try:
        grade = int(grade_text)
    except ValueError:
        raise InputError(f"grade {grade_text!r} is not one of 0, 1, 2, 3") from None
    morphology = (raw.get("morphology") or "").strip() or None
    check_grade(grade, morphology)
    morph = parse_morphology(morphology)
    return GradeRow(line, subject, LEVEL_NAMES[label], grade, morph.value if morph else None)
