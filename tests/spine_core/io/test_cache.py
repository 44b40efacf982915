"""VolumeCache: memory-mapped entries keyed by series UID + source fingerprint, atomic, self-healing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spine_core.errors import CacheError, InputError
from spine_core.io.cache import VolumeCache, fingerprint_files
from spine_core.io.dicom import load_series
from spine_core.volume import Volume
from tests.dicom_fixtures import hu_array, stack_affine, write_ct

UID = "1.2.826.0.1.3680043.8.498.4242"


def make_volume(seed: int = 0) -> Volume:
    meta = {"series_uid": UID, "instance_numbers": [3, 2, 1, None], "warnings": ["w"],
            "np_value": np.float32(1.5), "path": Path("/x/y")}
    return Volume(hu_array((4, 10, 12), seed=seed), stack_affine((1.5, 0.5, 0.25)), meta)


def test_put_then_get_returns_a_read_only_memory_map(tmp_path: Path) -> None:
    cache = VolumeCache(tmp_path / "cache")
    vol = make_volume()
    fp = "ab" * 16
    stored = cache.put(UID, fp, vol)
    got = cache.get(UID, fp)
    for v in (stored, got):
        assert v is not None
        assert isinstance(v.array, np.memmap) and not v.array.flags.writeable
        np.testing.assert_array_equal(v.array, vol.array)
        assert v.array.dtype == np.int16
        np.testing.assert_array_equal(v.affine, vol.affine)
        assert v.meta["instance_numbers"] == [3, 2, 1, None]
        assert v.meta["np_value"] == 1.5 and v.meta["path"] == "/x/y"
    with pytest.raises(ValueError):
        got.array[0, 0, 0] = 1  # type: ignore[union-attr]
    assert cache.get(UID, "cd" * 16) is None
    assert cache.get("1.2.3.999", fp) is None


def test_fingerprint_follows_paths_sizes_and_mtimes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    first = fingerprint_files([a, b])
    assert fingerprint_files([str(b), str(a)]) == first  # order does not matter
    assert fingerprint_files([a]) != first
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = fingerprint_files([a, b])
    assert touched != first
    a.write_bytes(b"12345")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert fingerprint_files([a, b]) not in (first, touched)
    with pytest.raises(InputError, match="does not exist"):
        fingerprint_files([tmp_path / "gone"])


def test_get_or_load_loads_once_then_hits_and_reloads_when_sources_change(
    tmp_path: Path, small_ct: Volume
) -> None:
    files = write_ct(tmp_path / "series", small_ct, "cached")
    cache = VolumeCache(tmp_path / "cache", durable=False)
    calls: list[int] = []

    def loader() -> Volume:
        calls.append(1)
        return load_series(files)

    first = cache.get_or_load(UID, files, loader)
    second = cache.get_or_load(UID, files, loader)
    assert len(calls) == 1
    np.testing.assert_array_equal(second.array, small_ct.array)
    assert second.meta["files"] == first.meta["files"]
    assert isinstance(second.array, np.memmap)

    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    cache.get_or_load(UID, files, loader)
    assert len(calls) == 2
    assert cache.fingerprints(UID) == [fingerprint_files(files)]  # the stale entry is gone


@pytest.mark.parametrize("damage", ["truncate_npy", "garbage_json", "wrong_shape", "no_npy"])
def test_damaged_entry_is_a_miss_and_is_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = VolumeCache(tmp_path)
    vol = make_volume()
    fp = "0f" * 16
    cache.put(UID, fp, vol)
    npy, side = tmp_path / UID / f"{fp}.npy", tmp_path / UID / f"{fp}.json"
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:500])
    elif damage == "garbage_json":
        side.write_text('{"format": 1, "shape": [4, 10')
    elif damage == "wrong_shape":
        info = json.loads(side.read_text())
        info["shape"] = [4, 12, 10]
        side.write_text(json.dumps(info))
    else:
        npy.unlink()

    assert cache.get(UID, fp) is None
    assert not side.exists() and not npy.exists()  # the damaged entry was removed

    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    rebuilt = cache.get_or_load(UID, [src], lambda: vol)
    np.testing.assert_array_equal(rebuilt.array, vol.array)


def test_meta_that_is_not_json_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    vol = Volume(hu_array((2, 4, 4)), stack_affine(), {"bad": object()})
    cache = VolumeCache(tmp_path)
    with pytest.raises(CacheError, match="cannot be cached"):
        cache.put(UID, "aa" * 16, vol)
    assert list(tmp_path.rglob("*")) == []


def test_keys_are_safe_folder_names(tmp_path: Path) -> None:
    cache = VolumeCache(tmp_path / "c")
    vol = make_volume()
    cache.put("../../etc/evil uid", "12" * 16, vol)
    assert [p.parent.name for p in (tmp_path / "c").rglob("*.npy")][0].startswith("h-")
    assert cache.get("../../etc/evil uid", "12" * 16) is not None
    with pytest.raises(InputError, match="not a hex digest"):
        cache.get(UID, "../x")


def test_a_crash_before_the_rename_leaves_no_entry(tmp_path: Path) -> None:
    # A real writer process dies (os._exit) right after the .npy temp file is complete, before
    # os.replace moves it into place: no entry may appear, and the next writer succeeds.
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        import numpy as np
        from spine_core.io.cache import VolumeCache
        from spine_core.volume import Volume
        os.replace = lambda *a, **k: os._exit(3)
        vol = Volume(np.ones((3, 64, 64), np.int16), np.diag([2.0, 1.0, 1.0, 1.0]))
        VolumeCache({str(tmp_path)!r}).put({UID!r}, "ee" * 16, vol)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()
    leftovers = [p.name for p in (tmp_path / UID).iterdir()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # only the temp file

    cache = VolumeCache(tmp_path)
    assert cache.get(UID, "ee" * 16) is None and cache.fingerprints(UID) == []
    again = cache.put(UID, "ee" * 16, make_volume())
    assert again.shape == (4, 10, 12)
