"""DICOM unique identifiers as the standard defines them (PS3.5 §9.1): at most 64 characters,
digits in dot-separated components. A UID from a file is checked here before it is stored or used
in a file name, so ``../../PWNED`` never reaches a path."""

from __future__ import annotations

import re

from spine_core.errors import InputError

#: Digits and dots only, no empty component (leading zeros are tolerated: real archives have them).
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_LENGTH = 64


def is_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and bool(UID_PATTERN.match(value))


def check_uid(value: object, what: str, where: str) -> str:
    """``value`` if it is a DICOM UID, else InputError naming ``what`` (e.g. "StudyInstanceUID")
    and ``where`` (the file or row) and what to do."""
    if is_uid(value):
        return str(value)
    shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + "...")
    raise InputError(f"{where}: {what} {shown} is not a DICOM UID (at most {MAX_UID_LENGTH} "
                     "characters, digits and dots); fix or remove the file")
