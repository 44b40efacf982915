"""A process racing others to claim queued jobs, for tests/db/test_job_worker_processes.py.

    python -m tests.db.job_claim_child URL

Prints ``ready``, waits for a line on standard input (so that every racer starts at once), then
claims queued jobs with :func:`db.job_queue.claim_next` until none is left and prints the ids it
got as one JSON list.
"""

from __future__ import annotations

import json
import sys

from db import job_queue
from db.session import make_sessionmaker


def main(url: str) -> None:
    sessions = make_sessionmaker(url)
    print("ready", flush=True)
    sys.stdin.readline()
    claimed: list[int] = []
    while (row := job_queue.claim_next(sessions)) is not None:
        claimed.append(int(row.id))
    print(json.dumps(claimed), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
