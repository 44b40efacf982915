"""Whether the worker of a background job is still alive: the rules, without a database.

A worker (an app replica's thread, or a ``spine worker`` process) names itself with
:func:`worker_id` (``host:pid:nonce``) and beats a heartbeat every :data:`HEARTBEAT_S` while
its job runs. :func:`dead_reason` says why a running job's worker is dead, or None: its process
on this machine is gone (or is this very process after a restart, which does not run it), or it
has not beaten for :data:`STALE_AFTER_S` (a worker on another machine, or one that hangs).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable

#: Seconds between two heartbeats of a running job.
HEARTBEAT_S = 5.0
#: Seconds without a heartbeat after which a running job's worker counts as dead.
STALE_AFTER_S = 30.0

_NONCE = secrets.token_hex(4)


def worker_id() -> str:
    """This process as a job's worker: ``host:pid:nonce`` (the nonce tells a restarted process
    that got the same pid from its predecessor)."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{_NONCE}"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def dead_reason(worker: str, seconds_since_heartbeat: float, *,
                stale_after_s: float = STALE_AFTER_S, me: str | None = None,
                alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why the worker of a running job is dead, or None while it may be alive.

    ``worker`` is the job's :func:`worker_id`; ``me`` this process's (default
    :func:`worker_id`).
    """
    me = me if me is not None else worker_id()
    host, _, rest = worker.partition(":")
    pid_text, _, nonce = rest.partition(":")
    my_host, _, my_rest = me.partition(":")
    my_pid, _, my_nonce = my_rest.partition(":")
    if host == my_host and pid_text.isdigit():
        if pid_text == my_pid and nonce != my_nonce:
            return (f"the worker process {pid_text} on {host} was restarted and no longer runs "
                    "this job")
        if pid_text != my_pid and not alive(int(pid_text)):
            return f"the worker process {pid_text} on {host} is gone"
    if seconds_since_heartbeat > stale_after_s:
        return (f"the worker {host}:{pid_text or '?'} stopped answering (no heartbeat for "
                f"{seconds_since_heartbeat:.0f} s)")
    return None
