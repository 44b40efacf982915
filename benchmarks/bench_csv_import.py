"""How fast a 100,000-row readers' boxes CSV imports, on SQLite and PostgreSQL.

Fills a fresh database with a few synthetic studies (one 300-slice 512×512 series each) and five
annotators, writes a readers' boxes CSV of distinct boxes over them (a share of them key boxes of
two-key fractures, interpolated after the file), then times:

* ``spine import FILE`` as the CLI runs it (:func:`db.importer.import_path`: the file in one
  transaction, then reading status and disputes), and :func:`db.csv_import.import_csv` alone;
* the same file imported again, unchanged (nothing is added);
* the reference: a plain row-by-row ORM insert of the same rows (``session.add(Box)``, its audit
  entry, ``flush()`` per row, one transaction), on the first ``--reference-rows`` rows.

Targets (issue 16): ≤ 10 s on SQLite and ≤ 15 s on PostgreSQL for 100,000 rows, ≤ 5 s to
re-import the unchanged file.

    .venv/bin/python benchmarks/bench_csv_import.py [--rows 100000] [--studies 5]
        [--fracture-share 0.02] [--reference-rows 10000]

PostgreSQL is used when ``SPINE_TEST_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test)
answers; the data goes into a temporary schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_case_list import pg_schema  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

import db.box_events  # noqa: E402,F401,I001  (loaded before timing: scipy alone takes seconds)
from db import models as m  # noqa: E402
from db.csv_import import import_csv  # noqa: E402
from db.importer import import_path  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.session import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from db.workspace import Workspace  # noqa: E402
from spine_core.config import Settings  # noqa: E402

SHAPE = (300, 512, 512)
READERS = [f"reader{i}" for i in range(1, 6)]
LEVELS = [f"C{i}" for i in range(1, 8)]
TARGET_S = {"sqlite": 10.0, "postgresql": 15.0}
REIMPORT_TARGET_S = 5.0


def fill(sessions: sessionmaker[Session], n_studies: int) -> list[str]:
    """Studies, series and readers; returns the StudyInstanceUIDs."""
    uids = [f"1.2.826.0.1.3680043.99.{i}" for i in range(n_studies)]
    with unit_of_work(sessions) as s:
        s.execute(insert(m.User), [{"username": r, "role": "annotator"} for r in READERS])
        s.execute(insert(m.Study), [{"id": i + 1, "study_uid": uid, "dataset": "rsna",
                                     "n_slices": SHAPE[0], "warnings": []}
                                    for i, uid in enumerate(uids)])
        s.execute(insert(m.Series), [
            {"study_id": i + 1, "series_uid": f"{uid}.1", "source_format": "dicom",
             "source_dir": f"train_images/{uid}", "files": [], "shape": list(SHAPE),
             "affine": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]],
             "instance_numbers": list(range(1, SHAPE[0] + 1)), "fingerprint": f"{i:016x}",
             "warnings": []} for i, uid in enumerate(uids)])
    if sessions.kw["bind"].dialect.name == "postgresql":
        with sessions.kw["bind"].begin() as conn:
            conn.exec_driver_sql("SELECT setval('studies_id_seq', (SELECT max(id) FROM studies))")
    return uids


def write_csv(path: Path, uids: list[str], n_rows: int, fracture_share: float, seed: int = 3) -> int:
    """Distinct readers' boxes; returns the number of fracture key rows among them."""
    rng = random.Random(seed)
    seen: set[tuple[object, ...]] = set()
    rows: list[list[object]] = []
    n_fracture = int(n_rows * fracture_share) // 2 * 2
    fracture = 0
    while len(rows) < n_fracture:  # two keys 4 slices apart: 3 boxes interpolated between them
        uid, reader, number = rng.choice(uids), rng.choice(READERS), rng.randrange(1, SHAPE[0] - 4)
        x, y = rng.randrange(400), rng.randrange(400)
        fracture += 1
        for step in (0, 4):
            rows.append([uid, number + step, x + step, y, 40, 30, reader, rng.choice(LEVELS), "",
                         f"F{fracture}", 1])
            seen.add((uid, number + step, x + step, y, 40, 30, reader))
    while len(rows) < n_rows:
        box = (rng.choice(uids), rng.randrange(1, SHAPE[0] + 1), rng.randrange(450),
               rng.randrange(450), rng.randrange(5, 60), rng.randrange(5, 60), rng.choice(READERS))
        if box in seen:
            continue
        seen.add(box)
        rows.append([*box, rng.choice(LEVELS), "", "", ""])
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader",
                         "level", "note", "fracture", "key"])
        writer.writerows(rows)
    return n_fracture


def reference(sessions: sessionmaker[Session], path: Path, n_rows: int) -> float:
    """Seconds for a plain row-by-row ORM insert of the first ``n_rows`` rows (and their audit
    entries), rolled back afterwards."""
    with path.open(newline="") as fh:
        rows = [r for _, r in zip(range(n_rows), csv.DictReader(fh), strict=False)]
    session = sessions()
    try:
        studies = dict(session.execute(select(m.Study.study_uid, m.Study.id)).all())
        series = dict(session.execute(select(m.Series.study_id, m.Series.id)).all())
        users = dict(session.execute(select(m.User.username, m.User.id)).all())
        start = time.perf_counter()
        for r in rows:
            study_id = studies[r["StudyInstanceUID"]]
            box = m.Box(study_id=study_id, series_id=series[study_id], reader_id=users[r["reader"]],
                        slice_index=int(r["slice_number"]) - 1, instance_number=int(r["slice_number"]),
                        x=float(r["x"]), y=float(r["y"]), width=float(r["width"]),
                        height=float(r["height"]), level=r["level"] or None, note=r["note"],
                        source="imported", fracture=r["fracture"] or None)
            session.add(box)
            session.flush()
            session.add(m.AuditEntry(actor="bench", action="box.import", entity="box",
                                     entity_id=str(box.id), after=dict(r)))
            session.flush()
        return time.perf_counter() - start
    finally:
        session.rollback()
        session.close()


def run(url: str, work: Path, args: argparse.Namespace) -> bool:
    upgrade(url)
    engine = make_engine(url)
    backend = engine.dialect.name
    try:
        sessions = make_sessionmaker(engine)
        uids = fill(sessions, args.studies)
        path = work / "readers_boxes.csv"
        n_fracture = write_csv(path, uids, args.rows, args.fracture_share)
        print(f"  {args.rows} rows over {args.studies} studies, {len(READERS)} readers, "
              f"{n_fracture} fracture key rows")
        ws = Workspace(Settings(data_dir=work / "var", db_url=url, workers=1))
        ws.__dict__["sessions"] = sessions

        ref_s = reference(sessions, path, args.reference_rows)
        ref_rate = args.reference_rows / ref_s
        print(f"  {'reference: row-by-row ORM insert':40s} {ref_s:8.2f} s for {args.reference_rows} "
              f"rows  {ref_rate:9.0f} rows/s")

        start = time.perf_counter()
        report = import_path(path, ws, actor="bench", progress=False)
        first = time.perf_counter() - start
        assert report.csv_rows_imported == args.rows, report.summary()
        with unit_of_work(sessions, readonly=True) as s:
            boxes = s.scalar(select(func.count()).select_from(m.Box).where(m.Box.source == "imported"))
            audit = s.scalar(select(func.count()).select_from(m.AuditEntry)
                             .where(m.AuditEntry.action == "box.import"))
        assert boxes == audit == args.rows, (boxes, audit)

        start = time.perf_counter()
        again = import_path(path, ws, actor="bench", progress=False)
        second = time.perf_counter() - start
        assert again.csv_rows_imported == 0 and again.csv_rows_unchanged == args.rows, again.summary()

        start = time.perf_counter()
        with unit_of_work(sessions) as s:
            alone = import_csv(s, path, "bench")
        alone_s = time.perf_counter() - start
        assert alone.imported == 0

        target = TARGET_S[backend]
        ok = first <= target and second <= REIMPORT_TARGET_S
        for name, seconds, limit, rows in [
            ("spine import (file + reading status)", first, target, args.rows),
            ("spine import again, unchanged", second, REIMPORT_TARGET_S, args.rows),
            ("import_csv alone, unchanged", alone_s, None, args.rows),
        ]:
            rate = rows / seconds
            verdict = "" if limit is None else ("ok" if seconds <= limit else f"OVER {limit:.0f} s")
            print(f"  {name:40s} {seconds:8.2f} s  {rate:9.0f} rows/s  x{rate / ref_rate:6.1f} "
                  f"reference  {verdict}")
        return ok
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--fracture-share", type=float, default=0.02)
    parser.add_argument("--reference-rows", type=int, default=10_000)
    args = parser.parse_args()
    print(f"started {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        ok &= run(f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp), args)
    with pg_schema() as url, tempfile.TemporaryDirectory() as tmp:
        if url is not None:
            print("PostgreSQL")
            ok &= run(url, Path(tmp), args)
    print("all within target" if ok else "some imports exceed their target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
