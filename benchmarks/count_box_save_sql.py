"""SQL statements per box save on ``POST /spine-box-events`` (issue 17), on SQLite and PostgreSQL.

One reader saves boxes through the route (Starlette's TestClient, the study and mask of
``tests/spine_web/test_box_routes.py``); a ``before_cursor_execute`` listener on the workspace's
engine counts every statement the request sends: the sign-in token check (its own transaction)
and the save's transaction (``spine_web.box_routes._apply``), BEGIN/COMMIT not included.

Scenarios: a create of a box on its own (the common save), a create that joins a fracture (its
interpolated boxes recomputed), the same create sent again (replay by ``client_key``), a change
and a delete.

Usage: ``.venv/bin/python benchmarks/count_box_save_sql.py [--pg URL] [--show]``
(``--pg`` defaults to ``$SPINE_TEST_PG_URL``; without either only SQLite is counted).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.study_grid import forget_grids  # noqa: E402
from db.workspace import Workspace  # noqa: E402
from spine_core.config import Settings  # noqa: E402
from spine_web import COOKIE  # noqa: E402
from spine_web.box_routes import ROUTE, box_routes  # noqa: E402
from tests.annotation_helpers import setup_people  # noqa: E402
from tests.db_fixtures import PG_URL_ENV, fresh_database  # noqa: E402
from tests.spine_web.test_box_routes import _study  # noqa: E402


class Counter:
    """Statements sent on an engine while :meth:`counting` (BEGIN/COMMIT/SAVEPOINT not included:
    they are not ``before_cursor_execute`` events except where the dialect sends them as SQL)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if self.on:
            self.statements.append(" ".join(statement.split()))

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        self.on = True
        try:
            yield self.statements
        finally:
            self.on = False


def _event(study: int, **kw: Any) -> dict[str, Any]:
    body = {"study": study, "type": "created", "id": "new-1", "base_version": None, "slice": 4,
            "x0": 12.0, "y0": 12.0, "width": 12.0, "height": 18.0, "fracture": None,
            "base_study_version": None}
    return {**body, **kw}


def count(url: str, tmp: Path, show: bool) -> dict[str, int]:
    """Statements per scenario on the database at ``url`` (migrated here)."""
    upgrade(url)
    forget_grids()
    ws = Workspace(Settings(data_dir=tmp / "var", db_url=url, workers=1))
    out: dict[str, int] = {}
    try:
        ids = setup_people(ws.sessions)
        study = _study(ws, tmp, ids["admin"], [ids["reader1"]])
        counter = Counter(ws.sessions.kw["bind"])
        with TestClient(Starlette(routes=box_routes(ws, ws.signin.tokens)),
                        base_url="http://testserver") as client:
            client.cookies.set(COOKIE, ws.signin.tokens.issue(ids["reader1"]))

            def post(name: str, body: dict[str, Any]) -> dict[str, Any]:
                with counter.counting() as seen:
                    r = client.post(ROUTE, json=body)
                assert r.status_code == 200, r.text
                out[name] = len(seen)
                if show:
                    print(f"-- {name}: {len(seen)}")
                    for s in seen:
                        print(f"   {s[:160]}")
                return dict(r.json())

            post("create (first box: level call made)", _event(study, client_key="k0", slice=1))
            made = post("create (plain box)", _event(study, client_key="k1", x0=14.0))
            post("create (same client_key again)", _event(study, client_key="k1", x0=14.0))
            post("create (fracture F1, first key)", _event(study, client_key="k2", slice=2,
                                                           fracture="F1"))
            post("create (fracture F1, second key)", _event(study, client_key="k3", slice=8,
                                                            fracture="F1"))
            moved = post("change", _event(study, type="changed", id=str(made["box_id"]),
                                          base_version=1, x0=16.0))
            post("delete", _event(study, type="deleted", id=str(made["box_id"]),
                                  base_version=moved["box_version"]))
        # the token check alone, for reference (it runs before the save's transaction)
        with counter.counting() as seen:
            ws.signin.tokens.resolve(client.cookies.get(COOKIE))
        out["(of each: sign-in token check)"] = len(seen)
    finally:
        forget_grids()
        ws.sessions.kw["bind"].dispose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", default=os.environ.get(PG_URL_ENV), help="PostgreSQL server URL")
    ap.add_argument("--show", action="store_true", help="print each statement")
    args = ap.parse_args()
    backends = ["sqlite"] + (["postgresql"] if args.pg else [])
    if args.pg:
        os.environ[PG_URL_ENV] = args.pg
    results: dict[str, dict[str, int]] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="count-box-sql-") as d, \
                fresh_database(backend, Path(d)) as url:
            results[backend] = count(url, Path(d), args.show)
    names = list(results["sqlite"])
    print(f"{'statements per request':42}" + "".join(f"{b:>12}" for b in backends))
    for name in names:
        print(f"{name:42}" + "".join(f"{results[b][name]:>12}" for b in backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
