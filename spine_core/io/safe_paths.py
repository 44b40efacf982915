"""Join names taken from data (CSV cells, file lists, JSON) onto a dataset root, safely.

A dataset folder is untrusted input: a CSV may name ``../../etc/passwd`` and a folder may hold a
symlink to somewhere else. Every path the layouts build from such names goes through
:func:`safe_join`, which refuses anything that would land outside the root. Every file a command
writes is named through :func:`inside` (each part one checked name, the result proven inside the
output folder), in a folder made by :func:`output_folder`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from spine_core.errors import InputError, UnsafePathError


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
    root_resolved = resolved(root)
    target = resolved(path)
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(
            f"{path} resolves to {target}, outside the dataset folder {root_resolved} (a symlink "
            "escapes it); copy the files into the dataset folder or choose a root that contains "
            "them"
        )
    return Path(path)


def resolved(path: Path | str) -> Path:
    """``Path(path).resolve()``, with a symlink loop refused as :class:`UnsafePathError` naming
    the path (Python raises a bare ``RuntimeError: Symlink loop``)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:
        raise UnsafePathError(f"{path}: symbolic links form a loop ({exc}); remove the link "
                              "and try again") from None


def inside(root: Path | str, *parts: str, what: str = "name") -> Path:
    """``root / part / ...`` for writing, proven to lie inside ``root``.

    Every part is one file or folder name: it may come from the data (a StudyInstanceUID, a
    reader's name, a subject), so a part that is empty, ``.`` or ``..``, or holds ``/``, ``\\``
    or a NUL byte is refused with :class:`UnsafePathError` naming it (``what`` says what it is:
    "StudyInstanceUID", "reader name"...). The resolved result (symlinks followed, also one
    already sitting in the output folder) must lie inside the resolved ``root``. The returned
    path is not resolved and need not exist.
    """
    root_path = Path(root)
    for part in parts:
        text = str(part)
        if text in ("", ".", "..") or any(c in text for c in ("/", "\\", "\x00")):
            shown = repr(text if len(text) <= 80 else text[:77] + "...")
            raise UnsafePathError(
                f"{what} {shown} cannot name a file inside {root_path}: it is empty, '.' or "
                "'..', or holds '/', '\\' or NUL; nothing was written — correct it at its source "
                "(re-import the study from fixed files) and export again")
    target = root_path.joinpath(*parts)
    resolved_root = resolved(root_path)
    final = resolved(target)
    if final != resolved_root and resolved_root not in final.parents:
        raise UnsafePathError(
            f"{target} resolves to {final}, outside the output folder {resolved_root} (a "
            "symlink in it points elsewhere); nothing was written there — remove the link or "
            "choose another output folder")
    return target


def output_folder(path: Path | str) -> Path:
    """Create the output folder ``path`` (and its parents) if needed and return it.

    Refused with :class:`~spine_core.errors.InputError` (one line, no ``[Errno 17]``): a path that
    is an existing file, or whose parent is a file, or that cannot be created.
    """
    folder = Path(path)
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "exists and" if blocker == folder else f"cannot be made: {blocker}"
        raise InputError(f"output folder {folder} {where} is a file, not a folder; choose "
                         "another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder} ({exc.strerror or exc}); "
                         "choose a folder you may write to") from None
    return folder
