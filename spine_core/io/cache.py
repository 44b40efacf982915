"""Memory-mapped cache of decoded volumes, keyed by series UID + a fingerprint of the sources.

Layout under ``cache_dir``::

    <series key>/<fingerprint>.npy    the voxels (plain NumPy .npy, opened with mmap_mode="r")
    <series key>/<fingerprint>.json   sidecar: affine, meta, shape, dtype, size of the .npy

The series key is the SeriesInstanceUID when it is a plain UID, else a hash of it. The fingerprint
(:func:`fingerprint_files`) changes whenever a source file is added, removed, replaced or touched,
so a stale entry is never returned; :meth:`VolumeCache.put` removes the older entries of the series.

Both files are written to a temporary name in the same folder, flushed to disk and moved into place
with ``os.replace``; the sidecar goes last and is the commit mark, so a crash leaves either a whole
entry or none. An entry that is nevertheless damaged (truncated .npy, unreadable sidecar,
mismatching shape) is **treated as a miss**: :meth:`VolumeCache.get` deletes it and returns None,
and :meth:`VolumeCache.get_or_load` rebuilds it from the sources. Opening an entry reads only the
small sidecar and the .npy header, so it costs well under a millisecond whatever the volume size.

Several processes (app replicas on one machine) may share one cache folder. Readers keep their
memory map of a file that a writer replaces (``os.replace`` swaps the name, not the bytes), so
nobody ever sees half an entry. :meth:`VolumeCache.get_or_load` builds a missing entry under an
exclusive ``flock`` on ``<fingerprint>.lock`` (POSIX), so when two replicas ask for the same new
volume at once, one decodes it and the other waits and opens the result; the lock is released
by the kernel if its holder dies. Without ``fcntl`` (Windows) both build, harmlessly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no build lock, concurrent builds stay safe
    fcntl = None  # type: ignore[assignment]

import numpy as np

from spine_core.errors import CacheError, InputError
from spine_core.volume import Volume

log = logging.getLogger(__name__)

#: The sidecar's format; an entry of another format is a miss and is rebuilt from the sources.
#: 2: a radiograph's meta carries its PatientOrientation (the viewer letters the film's edges).
_FORMAT = 2
_SAFE_KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
_FINGERPRINT = re.compile(r"[0-9a-f]{8,128}")


def fingerprint_files(paths: Iterable[Path | str]) -> str:
    """A short hex digest of the files' resolved paths, sizes and modification times.

    Order does not matter; any change to the set of files or to one file's size/mtime changes
    the digest. Raises InputError naming a file that does not exist.
    """
    entries = []
    for p in paths:
        path = Path(p)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise InputError(f"cannot fingerprint {path}: the file does not exist") from exc
        entries.append(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode())
    return digest.hexdigest()[:32]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class VolumeCache:
    """Decoded volumes on disk as read-only memory maps.

    Args:
        cache_dir: folder of the cache (created when first written).
        durable: fsync files before they are moved into place, so an entry survives a power
            loss as well as a crash of the process (slower on some disks).
    """

    def __init__(self, cache_dir: Path | str, *, durable: bool = True) -> None:
        self.root = Path(cache_dir)
        self.durable = durable

    # -- paths --------------------------------------------------------------------------------

    def _series_dir(self, series_uid: str) -> Path:
        if _SAFE_KEY.fullmatch(series_uid) and ".." not in series_uid:
            key = series_uid
        else:
            key = "h-" + hashlib.sha256(series_uid.encode()).hexdigest()[:32]
        return self.root / key

    def _paths(self, series_uid: str, fingerprint: str) -> tuple[Path, Path]:
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise InputError(
                f"cache fingerprint {fingerprint!r} is not a hex digest; use fingerprint_files()"
            )
        folder = self._series_dir(series_uid)
        return folder / f"{fingerprint}.npy", folder / f"{fingerprint}.json"

    # -- reading ------------------------------------------------------------------------------

    def get(self, series_uid: str, fingerprint: str) -> Volume | None:
        """The cached volume (array memory-mapped read-only), or None on a miss.

        A damaged entry is logged, deleted and reported as a miss.
        """
        npy, side = self._paths(series_uid, fingerprint)
        if not side.exists():
            return None
        try:
            return self._open(npy, side, series_uid)
        except CacheError as exc:
            log.warning("dropping damaged cache entry: %s", exc)
            self._remove(npy, side)
            return None

    def _open(self, npy: Path, side: Path, series_uid: str) -> Volume:
        try:
            info = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CacheError(f"{side}: unreadable cache sidecar ({exc})") from exc
        if not isinstance(info, dict) or info.get("format") != _FORMAT:
            raise CacheError(f"{side}: unknown cache sidecar format")
        try:
            if npy.stat().st_size != info["npy_bytes"]:
                raise CacheError(
                    f"{npy}: {npy.stat().st_size} bytes, the sidecar expects {info['npy_bytes']}"
                )
            array = np.load(npy, mmap_mode="r", allow_pickle=False)
            if list(array.shape) != info["shape"] or str(array.dtype) != info["dtype"]:
                raise CacheError(f"{npy}: shape/dtype {array.shape} {array.dtype} differ from "
                                 f"the sidecar's {info['shape']} {info['dtype']}")
            if info.get("series_uid") != series_uid:
                raise CacheError(f"{side}: written for series {info.get('series_uid')}")
            return Volume(array, np.asarray(info["affine"], dtype=np.float64), info["meta"])
        except CacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{npy}: damaged cache entry ({type(exc).__name__}: {exc})") from exc

    def fingerprints(self, series_uid: str) -> list[str]:
        """Fingerprints of the complete entries stored for ``series_uid``."""
        folder = self._series_dir(series_uid)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if _FINGERPRINT.fullmatch(p.stem))

    # -- writing ------------------------------------------------------------------------------

    def put(self, series_uid: str, fingerprint: str, volume: Volume) -> Volume:
        """Store ``volume`` atomically and return it re-opened from the cache (memory-mapped).

        Older entries of the same series are removed. Raises CacheError when ``volume.meta``
        cannot be written as JSON or the disk write fails.
        """
        npy, side = self._paths(series_uid, fingerprint)
        try:
            meta = json.loads(json.dumps(volume.meta, default=_json_default))
        except (TypeError, ValueError) as exc:
            raise CacheError(f"Volume.meta of series {series_uid} cannot be cached: {exc}") from exc
        npy.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps(npy.parent)
        try:
            self._atomic_write(npy, lambda f: np.save(f, np.ascontiguousarray(volume.array),
                                                      allow_pickle=False))
            sidecar = {
                "format": _FORMAT,
                "series_uid": series_uid,
                "fingerprint": fingerprint,
                "shape": list(volume.array.shape),
                "dtype": str(volume.array.dtype),
                "npy_bytes": npy.stat().st_size,
                "affine": volume.affine.tolist(),
                "meta": meta,
            }
            text = json.dumps(sidecar)
            self._atomic_write(side, lambda f: f.write(text.encode("utf-8")))
        except OSError as exc:
            raise CacheError(f"cannot write the cache entry for series {series_uid} under "
                             f"{npy.parent}: {exc}") from exc
        for old in self.fingerprints(series_uid):
            if old != fingerprint:
                self._remove(*self._paths(series_uid, old))
        cached = self.get(series_uid, fingerprint)
        if cached is None:
            raise CacheError(f"cache entry for series {series_uid} vanished right after writing")
        return cached

    def get_or_load(
        self,
        series_uid: str,
        files: Sequence[Path | str],
        loader: Callable[[], Volume],
    ) -> Volume:
        """The cached volume of these source files, else ``loader()`` stored and re-opened.

        Example: ``cache.get_or_load(uid, files, lambda: load_series(files))``.
        """
        fingerprint = fingerprint_files(files)
        cached = self.get(series_uid, fingerprint)
        if cached is not None:
            return cached
        with self._build_lock(series_uid, fingerprint):
            cached = self.get(series_uid, fingerprint)  # another process built it meanwhile
            if cached is not None:
                return cached
            return self.put(series_uid, fingerprint, loader())

    @contextmanager
    def _build_lock(self, series_uid: str, fingerprint: str) -> Iterator[None]:
        """Exclusive, across processes, for building one entry (see the module docstring)."""
        npy, _ = self._paths(series_uid, fingerprint)
        if fcntl is None:
            yield
            return
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            handle = open(npy.with_suffix(".lock"), "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            log.warning("building %s without a lock: %s", npy, exc)
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # closing releases the lock

    def evict(self, series_uid: str) -> None:
        """Remove every entry of ``series_uid``."""
        for fp in self.fingerprints(series_uid):
            self._remove(*self._paths(series_uid, fp))

    # -- helpers ------------------------------------------------------------------------------

    def _atomic_write(self, target: Path, write: Callable[[Any], Any]) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    @staticmethod
    def _remove_stale_temps(folder: Path, max_age_s: float = 3600.0) -> None:
        """Delete temporary files left by writers that crashed (older than ``max_age_s``)."""
        now = time.time()
        for tmp in folder.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > max_age_s:
                    tmp.unlink()
            except OSError:
                pass

    @staticmethod
    def _remove(npy: Path, side: Path) -> None:
        # Sidecar first: without it the entry is a miss even if deleting the .npy fails. The
        # .lock file goes too (a process still waiting on it at worst builds once more).
        for path in (side, npy, npy.with_suffix(".lock")):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove cache file %s: %s", path, exc)
