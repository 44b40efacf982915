"""One "app replica" for tests/db/test_shared_state_processes.py: a separate Python process that
opens the database by URL and does one thing with the shared state, printing JSON.

    python -m tests.db.shared_state_child URL issue USER_ID
    python -m tests.db.shared_state_child URL redeem TICKET      (through spine_web's real routes)
    python -m tests.db.shared_state_child URL resolve TOKEN
    python -m tests.db.shared_state_child URL revoke TOKEN
    python -m tests.db.shared_state_child URL fail N KEY...
    python -m tests.db.shared_state_child URL failures KEY
    python -m tests.db.shared_state_child URL hang-batch DATA_DIR STUDY_ID...
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from db.session import make_sessionmaker
from db.signin_state import SignInState
from spine_core.config import Settings

_SAY = threading.Lock()


def say(obj: object) -> None:
    """One JSON line on stdout, whole even when the worker thread and the main thread both print."""
    with _SAY:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class HangingPredictor:
    """A predictor whose models never finish loading: the batch stays running until killed."""

    def info(self) -> object:
        say({"started": True})
        while True:
            time.sleep(60)


def main(argv: list[str]) -> None:
    url, action, *args = argv
    state = SignInState(make_sessionmaker(url))
    out: dict[str, object]
    if action == "issue":
        token = state.tokens.issue(int(args[0]))
        out = {"token": token, "ticket": state.tickets.issue(token)}
    elif action == "redeem":
        from starlette.applications import Starlette
        from starlette.testclient import TestClient

        from spine_web import COOKIE, session_routes

        app = Starlette(routes=session_routes(state.tokens, state.tickets))
        with TestClient(app, base_url="http://testserver") as client:
            r = client.post("/spine-session", json={"ticket": args[0]})
        out = {"status": r.status_code, "cookie": r.cookies.get(COOKIE)}
    elif action == "resolve":
        out = {"user_id": state.tokens.resolve(args[0])}
    elif action == "revoke":
        state.tokens.revoke(args[0])
        out = {}
    elif action == "fail":
        for _ in range(int(args[0])):
            state.throttle.failed(*args[1:])
        out = {}
    elif action == "failures":
        out = {"failures": state.throttle.failures(args[0])}
    elif action == "hang-batch":
        from db.prediction_jobs import JOBS, PredictionJob
        from db.workspace import Workspace

        ws = Workspace(Settings(data_dir=Path(args[0]), db_url=url, workers=1))
        job = JOBS.start(url, PredictionJob(ws, HangingPredictor(),  # type: ignore[arg-type]
                                            [int(i) for i in args[1:]], actor="replica-a"))
        say({"job_id": job.job_id})
        job.wait()
        return
    else:
        raise SystemExit(f"unknown action {action!r}")
    say(out)


if __name__ == "__main__":
    main(sys.argv[1:])
