"""The built browser bundle (``spine_viewer/static/workstation.js``, made by ``frontend/``)."""

from __future__ import annotations

import functools
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
BUNDLE = STATIC / "workstation.js"
STAMP = STATIC / "SOURCES.sha256"


@functools.lru_cache(maxsize=1)
def bundle_js() -> str:
    """The whole bundle as text, passed inline to the component (no relative imports in it)."""
    try:
        return BUNDLE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(
            f"{BUNDLE} is missing; build it with scripts/build-viewer.sh (needs Node 20)"
        ) from None
