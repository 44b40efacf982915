"""The box-event route in a process of its own, for a team behind nginx: ``python -m spine_web``.

In ``server.py`` the route shares its process with Streamlit: every page rerun of every reader on
that replica holds the interpreter while a box save waits for it. Behind nginx
(``deploy/nginx-team.conf``, ``scripts/serve-team.sh``) ``POST /spine-box-events`` goes to this
server instead: the same route (:func:`spine_web.box_routes.box_routes`) on the same database
and sign-in tokens (the rows every replica shares), served by uvicorn and nothing else. A single
app (``scripts/start.sh``) keeps the route inside ``server.py``; nothing changes for it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from db.workspace import Workspace, open_workspace
from spine_core.config import Settings, load_settings
from spine_web.box_routes import box_routes

#: Path of the health check (the deployment waits for it).
HEALTH = "/spine-routes/health"


async def _health(_request: Request) -> Response:
    return PlainTextResponse("ok")


def routes_app(ws: Workspace) -> Starlette:
    """The box-event route and a health check, on ``ws``'s database and sign-in tokens."""
    return Starlette(routes=[*box_routes(ws, ws.signin.tokens), Route(HEALTH, _health)])


def app_from_settings(settings: Settings | None = None) -> Starlette:
    return routes_app(open_workspace(settings or load_settings()))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spine_web [--host H] [--port P]``: serve the route until stopped."""
    import uvicorn

    ap = argparse.ArgumentParser(prog="python -m spine_web", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    ap.add_argument("--port", type=int, default=8700)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app_from_settings(), host=args.host, port=args.port, log_level="warning",
                access_log=False)
    return 0
