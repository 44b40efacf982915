"""The progress callback that long work (prediction, evaluation, import) reports through."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress"]

#: Called with the fraction done (0.0–1.0) and a short text saying what is being done now.
Progress = Callable[[float, str], None]
