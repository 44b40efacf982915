"""CSV cells: formula-like text neutralised as OWASP recommends, numbers untouched, restored."""

from __future__ import annotations

import pytest

from spine_core.csv_safe import neutralise, restore, safe_dict, safe_row


@pytest.mark.parametrize("text", ["=1+1", "+A1", "-A1+2", "@SUM(A1)", "\t=1", "\r=1",
                                  "=HYPERLINK(\"http://x\")"])
def test_formula_like_text_gets_a_quote_and_comes_back(text: str) -> None:
    out = neutralise(text)
    assert out == "'" + text and restore(out) == text


@pytest.mark.parametrize("value", ["-1.5", "+3", "12", "C5", "", "'quoted", "a=b", 7, -2.0, None])
def test_numbers_and_plain_text_are_left_alone(value: object) -> None:
    assert neutralise(value) == value
    if isinstance(value, str):
        assert restore(value) == value


def test_text_that_already_starts_with_a_quote_survives_exactly() -> None:
    for text in ("'=x", "''@y"):
        assert neutralise(text) == "'" + text and restore(neutralise(text)) == text


def test_rows_and_dicts() -> None:
    assert safe_row(["=x", 1, "y"]) == ["'=x", 1, "y"]
    assert safe_dict({"a": "@x", "b": "-4"}) == {"a": "'@x", "b": "-4"}
