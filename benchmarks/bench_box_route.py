"""Box saves of many readers at once against the route server (``python -m spine_web``), over
HTTP on loopback, on PostgreSQL: the server's side of issue 17's "p95 box save <= 300 ms".

``bench_team_load.py`` drives readers in Chromium; on 2 cores ten SwiftShader viewers at once
take most of the machine, so its round trips measure the browsers as much as the server. Here
each reader is a thread with its own session cookie (a sign-in row, as a replica issues) that
saves ``--boxes`` boxes on its assigned study, one every ``--think-s`` seconds (jittered), as
the viewer's saver posts them: same JSON, same cookie, same Origin check. One route server
process serves them all, as ``scripts/serve-team.sh`` starts it.

Reference, in the same run: the same saves by one reader alone. Printed: p50/p95/max of the
round trip per save, errors, and the rows in the database (each box exactly once).

Usage: ``.venv/bin/python benchmarks/bench_box_route.py [--readers 30] [--boxes 20]
[--think-s 1.0] [--pg postgresql://postgres@127.0.0.1:5432]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from db import models as m  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.session import unit_of_work  # noqa: E402
from db.workspace import Workspace  # noqa: E402
from spine_core.config import Settings  # noqa: E402
from spine_web import COOKIE  # noqa: E402
from spine_web.box_routes import ROUTE  # noqa: E402
from spine_web.route_server import HEALTH  # noqa: E402
from tests.annotation_helpers import setup_people  # noqa: E402
from tests.backend_helpers import free_port  # noqa: E402
from tests.spine_web.test_box_routes import SHAPE, _study  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def fmt(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {pct(values, .5):.0f} ms, p95 {pct(values, .95):.0f} ms, max {max(values):.0f} ms (n={len(values)})"


def save(base: str, cookie: str, study: int, key: str, slice_index: int, x: float) -> tuple[float, int]:
    body = {"study": study, "type": "created", "id": f"new-{key}", "base_version": None,
            "slice": slice_index, "x0": x, "y0": 12.0, "width": 10.0, "height": 14.0,
            "fracture": None, "base_study_version": None, "client_key": key}
    req = urllib.request.Request(base + ROUTE, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Origin": base,
                                          "Cookie": f"{COOKIE}={cookie}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        status = err.code
    return (time.perf_counter() - t0) * 1000, status


def reader(base: str, cookie: str, study: int, name: str, n: int, think_s: float,
           out: list[float], errors: list[str], seed: int) -> None:
    rng = random.Random(seed)
    time.sleep(rng.uniform(0, think_s))  # readers do not start in step
    for i in range(n):
        ms, status = save(base, cookie, study, f"{name}-{i}", i % SHAPE[0], 10.0 + (i % 7))
        if status == 200:
            out.append(ms)
        else:
            errors.append(f"{name} box {i}: HTTP {status}")
        time.sleep(think_s * rng.uniform(0.5, 1.5))


def run(base: str, cookies: list[tuple[str, str]], study: int, boxes: int, think_s: float,
        tag: str) -> tuple[list[float], list[str], float]:
    out: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=reader, args=(base, c, study, f"{tag}{name}", boxes, think_s,
                                                     out, errors, i))
               for i, (name, c) in enumerate(cookies)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, errors, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=30)
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--think-s", type=float, default=1.0, help="mean pause between a reader's saves")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = ap.parse_args()

    dbname = f"bench_box_route_{os.getpid()}"
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{dbname}"')
    url = f"{args.pg}/{dbname}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-box-route-"))
    proc = None
    try:
        upgrade(url)
        ws = Workspace(Settings(data_dir=tmp / "var", db_url=url, workers=1))
        ids = setup_people(ws.sessions, n_readers=args.readers)
        names = [f"reader{i}" for i in range(1, args.readers + 1)]
        study = _study(ws, tmp, ids["admin"], [ids[n] for n in names])
        cookies = [(n, ws.signin.tokens.issue(ids[n])) for n in names]

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        env.update({"SPINE_DB_URL": url, "SPINE_DATA_DIR": str(tmp / "var")})
        log = (tmp / "routes.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "spine_web", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + HEALTH, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the route server did not start: " + (tmp / "routes.log").read_text()) from None
                time.sleep(0.2)

        ref, ref_err, _ = run(base, cookies[:1], study, args.boxes, args.think_s, "ref-")
        load, errors, wall = run(base, cookies, study, args.boxes, args.think_s, "")
        with unit_of_work(ws.sessions, readonly=True) as s:
            rows = s.execute(select(m.Box.client_key, func.count()).where(m.Box.client_key.is_not(None))
                             .group_by(m.Box.client_key)).all()
        stored = {k: n for k, n in rows}
        expected = {f"{n}-{i}" for n in names for i in range(args.boxes)}
        expected |= {f"ref-{names[0]}-{i}" for i in range(args.boxes)}
        lost = len(expected - set(stored))
        doubled = sum(1 for n in stored.values() if n > 1)

        print(f"== box saves against one route server (python -m spine_web) on PostgreSQL, "
              f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
        print(f"reference, 1 reader alone: {fmt(ref)}{' errors ' + str(ref_err) if ref_err else ''}")
        print(f"{args.readers} readers at once, {args.boxes} boxes each, a save every ~{args.think_s} s "
              f"per reader ({len(load) / wall:.1f} saves/s over {wall:.0f} s): {fmt(load)}")
        print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
        print(f"database: boxes lost {lost}, doubled {doubled}")
        ratio = pct(load, .5) / pct(ref, .5) if ref else float("nan")
        print(f"ratio under load / alone (p50): {ratio:.1f}x")
        ok = bool(load) and pct(load, .95) <= 300 and not errors and lost == doubled == 0
        print(f"{'PASS' if ok else 'MISS'} p95 box save <= 300 ms with 0 lost or doubled "
              f"({pct(load, .95):.0f} ms)")
        ws.sessions.kw["bind"].dispose()
        return 0 if ok else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
