"""CSV cells a spreadsheet will not run as formulas (OWASP "CSV injection").

Every CSV the project writes passes its cells through :func:`neutralise`: a text cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so Excel,
LibreOffice and Google Sheets show it as text. Numbers (``-1.5``) are left alone: they are never
formulas. :func:`restore` undoes it on import, so a reader's text survives export and import
exactly as written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _formula_like(text: str) -> bool:
    """Text a spreadsheet would run once any quotes in front are taken off."""
    bare = text.lstrip("'")
    return bare.startswith(FORMULA_START) and not _is_number(bare)


def neutralise(value: Any) -> Any:
    """The cell as written to a CSV: formula-like text prefixed with ``'`` (text that already
    starts with quotes before a formula gets one more, so :func:`restore` is exact)."""
    if isinstance(value, str) and _formula_like(value):
        return "'" + value
    return value


def restore(text: str) -> str:
    """A cell read back from one of our CSVs: the ``'`` that :func:`neutralise` added removed."""
    if text.startswith("'") and _formula_like(text):
        return text[1:]
    return text


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [neutralise(v) for v in row]


def safe_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: neutralise(v) for k, v in row.items()}
