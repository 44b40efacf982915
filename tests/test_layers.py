"""The layers run one way: app.py, pages/, spine_cli/ → db/ → spine_core/ (and spine_viewer/ beside
pages; spine_web/, the HTTP routes, → db/). Every import counts, at module level and inside
functions; the check reads the source with ``ast``, so an import nobody executes in the tests is
caught too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("spine_core", "db", "pages", "spine_cli", "spine_viewer", "spine_web", "app", "streamlit")

#: What each layer must never import (top-level package names).
FORBIDDEN: dict[str, frozenset[str]] = {
    "spine_core": frozenset({"db", "pages", "spine_cli", "spine_viewer", "spine_web", "app", "streamlit"}),
    "db": frozenset({"pages", "spine_cli", "spine_viewer", "spine_web", "app", "streamlit"}),
    "spine_cli": frozenset({"pages", "spine_viewer", "spine_web", "app", "streamlit"}),
    "spine_viewer": frozenset({"db", "pages", "spine_cli", "spine_web", "app"}),
    # the HTTP routes beside the Streamlit app: spine_web -> db -> spine_core, never the pages
    "spine_web": frozenset({"pages", "spine_cli", "spine_viewer", "app", "streamlit"}),
    "pages": frozenset({"spine_cli", "app"}),
    "app": frozenset({"spine_cli"}),
}


def _sources(layer: str) -> list[Path]:
    path = ROOT / layer
    if layer == "app":
        return [ROOT / "app.py"]
    return sorted(p for p in path.rglob("*.py") if "node_modules" not in p.parts) if path.is_dir() else []


def _imported(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``tree``, relative imports resolved."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations() -> list[str]:
    found = []
    for layer, forbidden in FORBIDDEN.items():
        for path in _sources(layer):
            module = _module_name(path)
            for line, name in _imported(ast.parse(path.read_text(), str(path)), module):
                if name.split(".")[0] in forbidden:
                    found.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {name}")
    return found


def test_imports_flow_one_way() -> None:
    assert violations() == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = "def f():\n    from db.models import Study\n    import streamlit as st\n"
    names = [n for _, n in _imported(ast.parse(source), "spine_core.x")]
    assert names == ["db.models", "streamlit"]


def test_enums_are_declared_once() -> None:
    """LevelCall, VoteChoice, DisputeKind, Role ... each have one class statement in the code."""
    declared: dict[str, list[str]] = defaultdict(list)
    for layer in ("spine_core", "db", "pages", "spine_cli", "app"):
        for path in _sources(layer):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")) in ("Enum", "StrEnum", "IntEnum")
                    for b in node.bases
                ):
                    declared[node.name].append(str(path.relative_to(ROOT)))
    twice = {name: where for name, where in declared.items() if len(where) > 1}
    assert twice == {}
    assert {"LevelCall", "VoteChoice", "DisputeKind", "DisputeStatus", "Role", "Permission"} <= set(declared)


@pytest.mark.parametrize("package", ["spine_core", "spine_core.io", "spine_core.inference"])
def test_packages_state_their_public_surface(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names, f"{package} has no __all__"
    for name in names:
        assert importlib.util.find_spec(f"{package}.{name}") is not None or hasattr(module, name), name
