"""The committed viewer bundle was built from the committed frontend sources.

``frontend/build.mjs`` writes ``spine_viewer/static/SOURCES.sha256``: sha256 over the lines
``<relative path>\\0<sha256 of the file>\\n`` of build.mjs, package.json, package-lock.json,
tsconfig.json and src/** (POSIX paths, sorted). This test recomputes it from the files (mtimes mean
nothing in a git clone); when it fails, run ``scripts/build-viewer.sh`` and commit the bundle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from spine_viewer.bundle import BUNDLE, STAMP

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"
FIXED = ("build.mjs", "package.json", "package-lock.json", "tsconfig.json")


def sources_hash(frontend: Path = FRONTEND) -> str:
    files = [frontend / f for f in FIXED] + [p for p in (frontend / "src").rglob("*") if p.is_file()]
    lines = sorted(
        (p.relative_to(frontend).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files
    )
    return hashlib.sha256("".join(f"{rel}\0{digest}\n" for rel, digest in lines).encode()).hexdigest()


@pytest.mark.skipif(not (FRONTEND / "src").is_dir(), reason="installed without the frontend sources")
def test_bundle_matches_its_sources() -> None:
    assert BUNDLE.is_file(), "spine_viewer/static/workstation.js is missing: run scripts/build-viewer.sh"
    stamp = STAMP.read_text(encoding="utf-8").split()[0]
    assert stamp == sources_hash(), (
        "frontend/ changed since spine_viewer/static/workstation.js was built: "
        "run scripts/build-viewer.sh and commit the new bundle and SOURCES.sha256"
    )


def test_bundle_is_one_self_contained_module() -> None:
    text = BUNDLE.read_text(encoding="utf-8")
    assert "export{" in text.replace(" ", "") or "export default" in text
    assert "import(" not in text and not text.lstrip().startswith("import ")
