"""Two processes (app replicas on one machine) sharing one VolumeCache folder: racing to build one
entry, one decodes and the other opens its result; writers replacing an entry while a third
process reads it never let the reader see a damaged or wrong volume."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.errors import CacheError
from spine_core.io.cache import VolumeCache, fingerprint_files
from spine_core.volume import Volume

UID = "1.2.826.0.1.3680043.8.498.1717"
SHAPE = (48, 64, 64)


def _volume() -> Volume:
    array = np.random.default_rng(17).integers(-1000, 2000, SHAPE, dtype=np.int16)
    return Volume(array, np.diag([0.8, 0.8, 1.0, 1.0]), {"series_uid": UID})


def _checksum(array: Any) -> int:
    return int(np.asarray(array, dtype=np.int64).sum())


def _build(root: str, source: str, loads: str, barrier: Any, out: Any) -> None:
    """One replica: open the volume through the cache; the loader is slow and leaves a mark."""
    cache = VolumeCache(root)

    def load() -> Volume:
        with open(loads, "a") as f:
            f.write("load\n")
        time.sleep(0.5)  # decoding takes a while: the other replica arrives meanwhile
        return _volume()

    barrier.wait()
    volume = cache.get_or_load(UID, [source], load)
    out.put(_checksum(volume.array))


def _write_many(root: str, fingerprint: str, barrier: Any, rounds: int) -> None:
    cache = VolumeCache(root)
    volume = _volume()
    barrier.wait()
    for _ in range(rounds):
        cache.put(UID, fingerprint, volume)


def _read_many(root: str, fingerprint: str, barrier: Any, out: Any, deadline_s: float) -> None:
    cache = VolumeCache(root)
    npy, side = cache._paths(UID, fingerprint)
    expected = _checksum(_volume().array)
    seen = damaged = wrong = 0
    barrier.wait()
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not side.exists():
            continue
        try:
            volume = cache._open(npy, side, UID)  # what get() reads, without its self-healing
        except CacheError:
            damaged += 1
            continue
        seen += 1
        wrong += _checksum(volume.array) != expected
    out.put((seen, damaged, wrong))


def test_two_replicas_racing_for_one_entry_build_it_once(tmp_path: Path) -> None:
    source = tmp_path / "source.dcm"
    source.write_bytes(b"the series' file")
    loads = tmp_path / "loads.txt"
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path / "cache"), str(source), str(loads),
                                              barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    expected = _checksum(_volume().array)
    assert [out.get(timeout=5), out.get(timeout=5)] == [expected, expected]
    assert loads.read_text() == "load\n"  # one decoded, the other waited and opened it
    cache = VolumeCache(tmp_path / "cache")
    fingerprint = fingerprint_files([source])
    assert cache.fingerprints(UID) == [fingerprint]
    cached = cache.get(UID, fingerprint)
    assert cached is not None and _checksum(cached.array) == expected
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_writers_replacing_an_entry_never_show_a_reader_half_of_it(tmp_path: Path) -> None:
    root, fingerprint = str(tmp_path / "cache"), "ab" * 16
    VolumeCache(root).put(UID, fingerprint, _volume())
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(root, fingerprint, barrier, 15))
             for _ in range(2)]
    procs.append(ctx.Process(target=_read_many, args=(root, fingerprint, barrier, out, 2.0)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    seen, damaged, wrong = out.get(timeout=5)
    assert seen > 0 and (damaged, wrong) == (0, 0)
    assert not list(Path(root).rglob("*.tmp"))
