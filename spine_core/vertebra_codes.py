"""Standard codes for what we exchange as DICOM: vertebrae (SNOMED CT), fracture findings, calls.

The vertebra codes are SNOMED CT's, as DICOM's code dictionary names them (pydicom's
``codes.SCT.C1Vertebra`` ...: CID 7150 / the anatomic region lists). Levels with no code of
their own (L6, T13: anatomical variants) get SNOMED CT's generic "Vertebra" code and keep their
name in the segment label / tracking identifier; :func:`level_of_code` reads both back.

Values that no standard vocabulary has (a reader's "unsure", a Genant grade) use the private
coding scheme ``99SPINE`` (DICOM's rule for local codes: designators starting with "99").
"""

from __future__ import annotations

from pydicom.sr.coding import Code

from spine_core.errors import LabelVocabularyError
from spine_core.labels import LEVEL_IDS, LEVEL_NAMES

SCT = "SCT"
LOCAL = "99SPINE"

#: Level name -> (SNOMED CT code value, meaning).
VERTEBRA_SCT: dict[str, tuple[str, str]] = {
    "C1": ("14806007", "C1 vertebra"),
    "C2": ("39976000", "C2 vertebra"),
    "C3": ("113205007", "C3 vertebra"),
    "C4": ("5329002", "C4 vertebra"),
    "C5": ("36978003", "C5 vertebra"),
    "C6": ("36054005", "C6 vertebra"),
    "C7": ("87391001", "C7 vertebra"),
    "T1": ("64864005", "T1 vertebra"),
    "T2": ("53733008", "T2 vertebra"),
    "T3": ("1626008", "T3 vertebra"),
    "T4": ("73071006", "T4 vertebra"),
    "T5": ("56401006", "T5 vertebra"),
    "T6": ("45296009", "T6 vertebra"),
    "T7": ("62487009", "T7 vertebra"),
    "T8": ("11068009", "T8 vertebra"),
    "T9": ("82687006", "T9 vertebra"),
    "T10": ("7610001", "T10 vertebra"),
    "T11": ("12989004", "T11 vertebra"),
    "T12": ("23215003", "T12 vertebra"),
    "L1": ("66794005", "L1 vertebra"),
    "L2": ("14293000", "L2 vertebra"),
    "L3": ("36470004", "L3 vertebra"),
    "L4": ("11994002", "L4 vertebra"),
    "L5": ("49668003", "L5 vertebra"),
    "S": ("54735007", "Sacrum"),
    "Co": ("64688005", "Coccyx"),
}
#: SNOMED CT "Vertebra": L6 and T13 (no code of their own).
VERTEBRA_GENERIC = ("51282000", "Vertebra")

ANATOMICAL_STRUCTURE = Code("91723000", SCT, "Anatomical Structure")
#: Finding type of a reader's box and the concept of a per-level call: "Fracture of bone".
FRACTURE = Code("125605004", SCT, "Fracture of bone")
PRESENT = Code("52101004", SCT, "Present")
ABSENT = Code("272519000", SCT, "Absent")
UNSURE = Code("UNSURE", LOCAL, "Reader unsure")
CALL_CODES: dict[str, Code] = {"fractured": PRESENT, "not_fractured": ABSENT, "unsure": UNSURE}
GENANT_GRADE = Code("GENANT", LOCAL, "Genant semiquantitative grade")
FINAL_LABEL = Code("FINAL", LOCAL, "Final label")


def genant_code(grade: int) -> Code:
    return Code(f"GENANT{int(grade)}", LOCAL, f"Genant grade {int(grade)}")


def vertebra_code(level: str) -> Code:
    """The SNOMED CT code of a level name ('C2' -> 39976000 "C2 vertebra")."""
    if level not in LEVEL_IDS:
        raise LabelVocabularyError(f"'{level}' is not a vertebra level")
    value, meaning = VERTEBRA_SCT.get(level, VERTEBRA_GENERIC)
    return Code(value, SCT, meaning)


_BY_VALUE = {value: level for level, (value, _) in VERTEBRA_SCT.items()}


def level_of_code(value: str, scheme: str, label: str = "") -> str | None:
    """The level a code (and, for the generic code, a label such as 'T13') stands for, or None."""
    if scheme not in (SCT, "SRT"):
        return None
    if value in _BY_VALUE and value != VERTEBRA_GENERIC[0]:
        return _BY_VALUE[value]
    text = label.strip()
    return text if value == VERTEBRA_GENERIC[0] and text in LEVEL_NAMES.values() else None


def call_of_code(value: str, scheme: str) -> str | None:
    for call, code in CALL_CODES.items():
        if code.value == value and code.scheme_designator == scheme:
            return call
    return None
