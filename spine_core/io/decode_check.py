"""Decode untrusted compressed pixel data where a native crash cannot take the caller down.

A damaged JPEG 2000 slice can make a codec abort the whole process ("terminate called after
throwing ...", exit 134), which no ``try`` catches. :func:`check_pixels_decode` therefore decodes
every file of a series in child processes (``python -m spine_core.io.decode_check``), each file
announced before it is decoded, so a child that dies names the file it died on. The importer runs
it on every series with compressed pixel data (native pixel data is read by plain copies and needs
no child), and :mod:`db.studies` decodes compressed series for the cache in a child process too.

Child protocol: a text file of paths, one a line, named as the argument; for each, ``start N``,
``frames N K`` once its header is read, then ``ok N`` or ``bad N<TAB>reason`` on standard
output. The parent reads the lines as they come
and gives each file ``SPINE_DECODE_TIMEOUT_S`` from its ``start``: a child past it is killed and
the file named as one the decoder hangs on.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spine_core.errors import DicomError

#: Seconds a child may take to start (import its modules) before its first file; a loaded machine
#: needs a few, so this is generous and separate from the per-file timeout.
START_UP_S = 30.0
#: A multi-frame file gets the per-file timeout for every this many frames (at least once).
FRAMES_PER_TIMEOUT = 100
#: Test hook, honoured by the child only: when it has read the header of the file of this name
#: (no folder) it stops there for good, as a decoder that hangs would, so tests can prove the
#: timeout for real.
HANG_HOOK_ENV = "SPINE_DECODE_CHECK_TEST_HANG"


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _chunks(paths: Sequence[Path], n: int) -> list[list[Path]]:
    n = max(1, min(n, len(paths)))
    size = -(-len(paths) // n)
    return [list(paths[i:i + size]) for i in range(0, len(paths), size)]


def _configured_timeout() -> float:
    from spine_core.config import load_settings

    return float(load_settings().decode_timeout_s)


def check_pixels_decode(paths: Sequence[Path | str], *, label: str = "",
                        processes: int | None = None, timeout_s: float | None = None) -> None:
    """Decode every file's pixel data in child processes; raise :class:`DicomError` naming the
    first file (in the given order) that cannot be decoded, crashed the decoder or hung.

    ``label`` starts the message (e.g. the series); ``processes`` (default: CPUs, at most 4) run
    side by side over contiguous parts of ``paths``. ``timeout_s`` (default
    ``Settings.decode_timeout_s``, ``SPINE_DECODE_TIMEOUT_S``) is how long one file may take from
    the moment its child starts it (once per :data:`FRAMES_PER_TIMEOUT` frames of a multi-frame
    file); a child past it is killed and the file named as hung.
    """
    files = [Path(p) for p in paths]
    if not files:
        return
    per_file_s = _configured_timeout() if timeout_s is None else float(timeout_s)
    if not per_file_s > 0:
        raise ValueError(f"SPINE_DECODE_TIMEOUT_S must be positive, got {per_file_s:g}")
    workers = processes or max(1, min(4, os.cpu_count() or 1))
    parts = _chunks(files, workers)
    # the child imports spine_core from where this process found it, installed or not
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    with tempfile.TemporaryDirectory(prefix="spine-decode-") as tmp:
        runs: list[_Run] = []
        try:
            for n, part in enumerate(parts):
                listing = Path(tmp) / f"{n}.txt"
                listing.write_text("".join(f"{p}\n" for p in part), encoding="utf-8")
                child = subprocess.Popen(
                    [sys.executable, "-m", "spine_core.io.decode_check", str(listing)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env)
                runs.append(_Run(child, part, sum(len(r.part) for r in runs), time.monotonic()))
            _watch(runs, per_file_s)
        finally:
            for run in runs:  # never leave a child behind, whatever happened here
                if run.child.poll() is None:
                    run.child.kill()
                run.child.wait()
                for stream in (run.child.stdout, run.child.stderr):
                    if stream is not None:
                        stream.close()
        problems = [problem for run in runs for problem in _problems(run)]
    if problems:
        problems.sort()
        more = f" (and {len(problems) - 1} more damaged files)" if len(problems) > 1 else ""
        raise DicomError(f"{label}{': ' if label else ''}{problems[0][1]}{more}")


@dataclass
class _Run:
    """One child and what it said so far."""

    child: subprocess.Popen[bytes]
    part: list[Path]
    offset: int  # position of part[0] in the caller's list
    spawned: float
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    current: int | None = None  # the file the child last started
    current_since: float = 0.0
    current_budget: float = 0.0  # seconds the current file may take (more for many frames)
    hung: bool = False  # killed for taking too long (on ``current``, or before any file)


#: Most bytes of a child's standard error kept (for the message of a failed child).
_ERR_KEPT = 65536


def _watch(runs: list[_Run], per_file_s: float) -> None:
    """Read the children's output until all have ended; kill a child whose current file has
    taken more than ``per_file_s`` (or that started no file within :data:`START_UP_S`)."""
    selector = selectors.DefaultSelector()
    try:
        for run in runs:
            assert run.child.stdout is not None and run.child.stderr is not None
            selector.register(run.child.stdout, selectors.EVENT_READ, (run, True))
            selector.register(run.child.stderr, selectors.EVENT_READ, (run, False))
        while selector.get_map():
            now = time.monotonic()
            for run in runs:
                if run.hung or run.child.poll() is not None:
                    continue
                if run.current is None:
                    late = now - run.spawned > START_UP_S
                else:
                    late = now - run.current_since > run.current_budget
                if late:
                    run.hung = True
                    run.child.kill()
            for key, _ in selector.select(timeout=0.1):
                run, is_out = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                if not is_out:
                    if len(run.err) < _ERR_KEPT:
                        run.err += data
                    continue
                lines_before = run.out.count(b"\n")
                run.out += data
                if run.out.count(b"\n") > lines_before:
                    _follow(run, per_file_s)
    finally:
        selector.close()


def _follow(run: _Run, per_file_s: float) -> None:
    """Note the file the child started last, and its time budget (its frames, once announced)."""
    complete = run.out[:run.out.rfind(b"\n") + 1]  # whole lines only
    at = complete.rfind(b"\nstart ") + 1  # a line's start, never text inside a reason
    if at == 0 and not complete.startswith(b"start "):
        return
    tail = complete[at:].decode("utf-8", "replace").splitlines()  # the last file's lines only
    words = tail[0].split()
    if len(words) != 2 or not words[1].isdigit():
        return
    last = int(words[1])
    if last != run.current:
        run.current, run.current_since, run.current_budget = last, time.monotonic(), per_file_s
    for line in tail[1:]:
        said = line.split()
        if len(said) == 3 and said[0] == "frames" and said[2].isdigit():
            run.current_budget = per_file_s * max(1.0, int(said[2]) / FRAMES_PER_TIMEOUT)


def _problems(run: _Run) -> list[tuple[int, str]]:
    """(position, reason) of every file this child could not decode."""
    out = run.out.decode("utf-8", "replace")
    part, offset = run.part, run.offset
    if run.hung:
        if run.current is None:
            return [(offset, f"{part[0].name}: the decoding process did not start within "
                             f"{START_UP_S:.0f} s; the machine is overloaded or the DICOM codecs "
                             "are broken — try the import again")]
        return [(offset + run.current,
                 f"{part[run.current].name}: decoding its pixel data did not finish in "
                 f"{run.current_budget:g} s (SPINE_DECODE_TIMEOUT_S), the decoder hangs on it; the file "
                 "is damaged — re-export or remove it (or raise the limit if it is that large)")]
    problems: list[tuple[int, str]] = []
    for line in out.splitlines():
        if line.startswith("bad "):
            index_text, _, reason = line[4:].partition("\t")
            index = int(index_text)
            problems.append((offset + index, f"{part[index].name}: {reason}"))
    returncode = run.child.returncode
    if returncode != 0:
        last = _last_started(out)
        done = {int(line[3:]) for line in out.splitlines() if line.startswith("ok ")}
        if last is not None and last not in done:
            problems.append((offset + last, (
                f"{part[last].name}: its pixel data crashed the decoder "
                f"({_signal_name(returncode)}); the file is damaged — re-export or "
                "remove it")))
        elif not problems:
            err = run.err.decode("utf-8", "replace")
            problems.append((offset, f"the decoding process failed ({_signal_name(returncode)}: "
                                     f"{_short(err)}); check the installation of the DICOM codecs"))
    return problems


def _last_started(out: str) -> int | None:
    started = [int(line[6:]) for line in out.splitlines() if line.startswith("start ")]
    return started[-1] if started else None


def _short(err: str) -> str:
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= 120 else text[:117] + "..."


def _child() -> int:
    """The child's loop (see the module docstring)."""
    from spine_core.io.dicom_pixels import _decode_pydicom
    from spine_core.io.dicom_scan import read_header

    listing = Path(sys.argv[1]).read_text(encoding="utf-8")
    hang_on = os.environ.get(HANG_HOOK_ENV, "")
    for index, line in enumerate(listing.splitlines()):
        print(f"start {index}", flush=True)
        path = Path(line)
        try:
            header = read_header(path)
            print(f"frames {index} {header.n_frames}", flush=True)
            while hang_on and path.name == hang_on:  # the test hook (see HANG_HOOK_ENV)
                time.sleep(3600)
            if header.pixel_offset is None:  # compressed (native data is a plain copy)
                _decode_pydicom(header)
        except DicomError as exc:
            reason = str(exc).removeprefix(f"{path}: ").replace("\n", " ").replace("\t", " ")
            print(f"bad {index}\t{reason}", flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 - anything a codec raises is this file's fault
            said = " ".join(str(exc).split())  # one line: the protocol is line-based
            print(f"bad {index}\tpixel data cannot be decoded ({type(exc).__name__}: {said}); "
                  "the file may be damaged — re-export it", flush=True)
            continue
        print(f"ok {index}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
