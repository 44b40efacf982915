"""Join names taken from data (CSV cells, file lists, JSON) onto a dataset root, safely.

A dataset folder is untrusted input: a CSV may name ``../../etc/passwd`` and a folder may hold a
symlink to somewhere else. Every path the layouts build from such names goes through
:func:`safe_join`, which refuses anything that would land outside the root.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from spine_core.errors import UnsafePathError


def safe_join(root: Path | str, relative: str | os.PathLike[str]) -> Path:
    """``root / relative`` if, and only if, the result stays inside ``root``.

    Refused (:class:`UnsafePathError`): empty names, absolute paths, drive letters, backslashes,
    NUL bytes, any ``..`` component, and paths whose resolved target (following symlinks,
    including a symlinked final component) lies outside the resolved root.

    The returned path is ``root / relative`` (not resolved), so callers keep the names they know;
    it need not exist.
    """
    text = os.fspath(relative)
    if not isinstance(text, str):
        raise UnsafePathError(f"path {text!r} is not text; give file names as strings")
    if not text or not text.strip():
        raise UnsafePathError("empty file name; check the CSV or file list for blank cells")
    if "\x00" in text:
        raise UnsafePathError(f"file name {text!r} contains a NUL byte")
    if "\\" in text:
        raise UnsafePathError(
            f"file name {text!r} contains a backslash; use '/' separated names relative to the "
            "dataset folder"
        )
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(
            f"file name {text!r} is absolute; names must be relative to the dataset folder"
        )
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"file name {text!r} contains '..' and would leave the dataset folder")
    root_path = Path(root)
    candidate = root_path.joinpath(*pure.parts)
    ensure_inside(root_path, candidate)
    return candidate


def ensure_inside(root: Path | str, path: Path | str) -> Path:
    """Return ``path`` if its resolved target lies inside the resolved ``root``.

    Used for files found by walking a folder: a symlink inside the dataset that points outside it
    is refused with :class:`UnsafePathError`.
    """
    root_resolved = Path(root).resolve()
    target = Path(path).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(
            f"{path} resolves to {target}, outside the dataset folder {root_resolved} (a symlink "
            "escapes it); copy the files into the dataset folder or choose a root that contains "
            "them"
        )
    return Path(path)
