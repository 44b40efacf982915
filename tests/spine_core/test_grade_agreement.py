"""Weighted kappa and grade confusion against values computed by hand, and the grades file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spine_core.errors import InputError
from spine_core.genant import scheme_for_dataset
from spine_core.io.genant_csv import read_grades, subject_key
from spine_core.metrics import UndefinedMetricWarning, grade_confusion, weighted_kappa

# Two readers, six levels. Confusion (rows A, columns B), grades 0..3:
#   A=0: B=0 twice, B=1 once;  A=1: B=1 once;  A=2: B=3 once;  A=3: B=3 once.
A = [0, 0, 0, 1, 2, 3]
B = [0, 0, 1, 1, 3, 3]


def test_confusion() -> None:
    assert grade_confusion(A, B).tolist() == [[2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


def test_weighted_kappa_by_hand() -> None:
    # rows (A): 3, 1, 1, 1; columns (B): 2, 2, 0, 2; n = 6; expected E_ij = r_i c_j / 6.
    # linear: observed sum w*O = |0-1|*1 + |2-3|*1 = 2
    #   expected sum w*E = (1/6) * sum_ij |i-j| r_i c_j
    #   r=(3,1,1,1), c=(2,2,0,2): terms i=0: 3*(0*2+1*2+2*0+3*2)=24; i=1: 1*(2+0+0+4)=6;
    #   i=2: 1*(4+2+0+2)=8; i=3: 1*(6+4+0+0)=10 -> 48/6 = 8 -> kappa = 1 - 2/8 = 0.75
    assert weighted_kappa(A, B, "linear") == pytest.approx(0.75)
    # quadratic: observed = 1 + 1 = 2; expected: i=0: 3*(0+2+0+18)=60; i=1: 1*(2+0+0+8)=10;
    #   i=2: 1*(8+2+0+2)=12; i=3: 1*(18+8+0+0)=26 -> 108/6 = 18 -> kappa = 1 - 2/18
    assert weighted_kappa(A, B, "quadratic") == pytest.approx(1 - 2 / 18)
    assert weighted_kappa(A, A) == pytest.approx(1.0)


def test_undefined_and_bad_input() -> None:
    with pytest.warns(UndefinedMetricWarning, match="every grade was the same"):
        assert math.isnan(weighted_kappa([0, 0, 0], [0, 0, 0]))
    with pytest.raises(InputError, match="0..3"):
        weighted_kappa([0, 4], [0, 1])
    with pytest.raises(InputError, match="linear"):
        weighted_kappa(A, B, "cubic")


def test_scheme_by_dataset() -> None:
    assert [scheme_for_dataset(d) for d in ("verse", "ctspine1k", "rsna", "dicom")] == [
        "genant", "genant", "fracture", "fracture"]


def test_grades_file_rows_are_checked_by_line(tmp_path: Path) -> None:
    path = tmp_path / "genant_grades.csv"
    path.write_text("subject,label,grade,morphology\n"
                    "sub-verse004,20,2,wedge\n"       # 2: L1 grade 2
                    "sub-verse004,21,0,\n"            # 3: L2 normal
                    "sub-verse004,22,4,crush\n"       # 4: grade out of range
                    "sub-verse004,23,0,wedge\n"       # 5: morphology on grade 0
                    "sub-verse004,99,1,wedge\n"       # 6: not a vertebra
                    "sub-verse004,28,1,Biconcave\n")  # 7: T13 grade 1
    rows, problems = read_grades(path)
    assert [(r.line, r.level, r.grade, r.morphology) for r in rows] == [
        (2, "L1", 2, "wedge"), (3, "L2", 0, None), (7, "T13", 1, "biconcave")]
    assert problems == [
        "genant_grades.csv line 4: Genant grade 4 is not one of 0, 1, 2, 3",
        "genant_grades.csv line 5: a grade-0 (normal) vertebra has no morphology, got 'wedge'",
        "genant_grades.csv line 6: label 99 is not a vertebra (VerSe labels 1-28)",
    ]
    assert subject_key("sub-verse004") == subject_key("verse004_dir-ax") == "verse004"
    assert subject_key("phantom_001") == subject_key("COLONOG/phantom_001")
