"""How fast the case browser opens on a 10,000-study catalogue, on SQLite and PostgreSQL.

Fills a fresh database (10,000 studies with one series each, assignments for 3 readers, reports,
some disputes and predictions), then times :func:`db.catalogue.list_cases` for the first page and a
few filters, searches and sorts: the median over repeats, each in its own read-only unit of work,
including building the rows in Python. The reference is the plainest possible page,
``SELECT * FROM studies LIMIT 50``; the target is 200 ms or less per query.

    .venv/bin/python benchmarks/bench_case_list.py [--studies 10000] [--repeats 15]

PostgreSQL is used when ``SPINE_TEST_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test)
answers; the data goes into a temporary schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, insert, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from db import models as m  # noqa: E402
from db.catalogue import list_cases, next_case_for  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.session import make_engine, make_sessionmaker, normalize_url, unit_of_work  # noqa: E402

TARGET_MS = 200.0
LEVELS = [f"C{i}" for i in range(1, 8)]


def fill(engine: Engine, n_studies: int, seed: int = 7) -> dict[str, int]:
    """Bulk-insert the synthetic catalogue; returns the reader ids."""
    rng = random.Random(seed)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    datasets = ["rsna", "rsna", "rsna", "verse", "ctspine1k"]
    statuses = [s.value for s in m.StudyStatus]
    sessions = make_sessionmaker(engine)
    with unit_of_work(sessions) as s:
        readers = [m.User(username=f"reader{i}", role="annotator") for i in (1, 2, 3)]
        s.add_all(readers)
        model = m.ModelVersion(name="bench", version="1")
        s.add(model)
        s.flush()
        reader_ids = {u.username: u.id for u in readers}
        model_id = model.id
        studies = [
            {"id": i + 1, "study_uid": f"1.2.826.0.1.3680043.{i}", "dataset": rng.choice(datasets),
             "patient_id": f"PAT{i:06d}", "description": "CT cervical spine" if i % 7 else "trauma",
             "status": rng.choice(statuses), "n_slices": rng.randint(150, 800),
             "has_mask": rng.random() < 0.3, "imported_at": t0 + dt.timedelta(seconds=i),
             "warnings": []}
            for i in range(n_studies)
        ]
        s.execute(insert(m.Study), studies)
        s.execute(insert(m.Series), [
            {"study_id": i + 1, "series_uid": f"1.2.826.0.1.3680043.{i}.1", "source_format": "dicom",
             "source_dir": f"train_images/{i}", "files": [], "shape": [300, 512, 512],
             "affine": [[0.0] * 4] * 4, "instance_numbers": [], "fingerprint": f"{i:016x}",
             "warnings": []}
            for i in range(n_studies)
        ])
        s.execute(insert(m.Assignment), [
            {"study_id": i + 1, "reader_id": rid, "assigned_at": t0 + dt.timedelta(seconds=i),
             "status": rng.choice(["assigned", "in_progress", "submitted", "submitted"])}
            for i in range(n_studies) for rid in reader_ids.values()
        ])
        s.execute(insert(m.Report), [
            {"study_id": i + 1, "labels": {lv: rng.random() < 0.1 for lv in LEVELS},
             "patient_overall": None}
            for i in range(n_studies) if i % 2 == 0
        ])
        disputes = []
        for i in range(n_studies):
            if rng.random() < 0.1:
                for lv in rng.sample(LEVELS, rng.randint(1, 3)):
                    disputes.append({"study_id": i + 1, "level": lv, "kind": "readers_disagree",
                                     "status": rng.choice(["open", "decided"]), "details": {}})
        s.execute(insert(m.Dispute), disputes)
        s.execute(insert(m.Prediction), [
            {"study_id": i + 1, "model_version_id": model_id, "level_probabilities": {},
             "boxes": [], "timings": {}}
            for i in range(n_studies) if rng.random() < 0.2
        ])
    if engine.dialect.name == "postgresql":
        # Explicit ids above do not move the sequences; ANALYZE stands in for autovacuum.
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT setval('studies_id_seq', (SELECT max(id) FROM studies))")
            conn.exec_driver_sql("ANALYZE")
    return reader_ids


def median_ms(sessions: sessionmaker[Session], work: Callable[[Session], Any],
              repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with unit_of_work(sessions, readonly=True) as session:
            work(session)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(url: str, n_studies: int, repeats: int) -> bool:
    upgrade(url)
    engine = make_engine(url)
    try:
        start = time.perf_counter()
        readers = fill(engine, n_studies)
        print(f"  filled {n_studies} studies in {time.perf_counter() - start:.1f} s")
        sessions = make_sessionmaker(engine)
        r1 = readers["reader1"]
        cases: list[tuple[str, Callable[[Session], Any]]] = [
            ("first page (newest first)", lambda s: list_cases(s)),
            ("dataset = verse", lambda s: list_cases(s, dataset="verse")),
            ("open disputes", lambda s: list_cases(s, has_disputes=True)),
            ("mask, no prediction", lambda s: list_cases(s, has_mask=True, has_predictions=False)),
            ("search 'PAT00123'", lambda s: list_cases(s, search="PAT00123")),
            ("search, no match", lambda s: list_cases(s, search="no such thing")),
            ("reader1, status final", lambda s: list_cases(s, reader_id=r1, status="final")),
            ("sort by open disputes", lambda s: list_cases(s, sort="open_disputes")),
            ("sort by slices, last page", lambda s: list_cases(s, sort="n_slices", page=199)),
            ("next case for reader1", lambda s: next_case_for(s, r1)),
        ]
        reference = median_ms(
            sessions, lambda s: s.execute(select(m.Study.__table__).limit(50)).all(), repeats)
        print(f"  {'reference SELECT * FROM studies LIMIT 50':42s} {reference:8.2f} ms")
        ok = True
        for name, work in cases:
            ms = median_ms(sessions, work, repeats)
            verdict = "ok" if ms <= TARGET_MS else f"OVER {TARGET_MS:.0f} ms"
            ok &= ms <= TARGET_MS
            print(f"  {name:42s} {ms:8.2f} ms  x{ms / reference:6.1f} reference  {verdict}")
        return ok
    finally:
        engine.dispose()


@contextmanager
def pg_schema() -> Iterator[str | None]:
    """A URL on a temporary PostgreSQL schema, or None when the server does not answer."""
    import psycopg

    raw = os.environ.get("SPINE_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    server = normalize_url(raw)
    libpq = server.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(libpq, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"PostgreSQL not reachable ({exc}); skipped")
        yield None
        return
    schema = f"spine_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        print(f"SQLite ({args.studies} studies)")
        ok &= run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.studies, args.repeats)
    with pg_schema() as url:
        if url is not None:
            print(f"PostgreSQL ({args.studies} studies)")
            ok &= run(url, args.studies, args.repeats)
    print("all within target" if ok else f"some queries exceed {TARGET_MS:.0f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
