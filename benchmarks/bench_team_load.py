"""Load test of the team deployment (issue 17): two app replicas behind Debian's nginx on one
PostgreSQL, N simulated readers in Debian's Chromium, one replica SIGKILLed halfway.

Loopback only, bounded in count and time. What it starts (all stopped at the end, also on Ctrl-C,
SIGTERM or a failure): a fresh PostgreSQL database ``bench_team_<pid>`` (dropped at the end) on
``--pg`` (default postgresql://postgres@127.0.0.1:5432), bootstrapped with the demo data
(``spine bootstrap``, ``--studies`` small demo studies) plus ``--readers`` reader accounts, each
assigned one study; the inference backend (``spine serve``), one ``spine worker``
(SPINE_WORKER=external), two replicas (``streamlit run server.py``) and nginx with
deploy/nginx-team.conf, as scripts/serve-team.sh does. The pieces are started here, not by
serve-team.sh, because that script stops the whole team when one process ends, and this test kills
one replica on purpose.

Readers: headless browser contexts (each its own cookies and Streamlit session) in ONE Chromium
(Debian's /usr/bin/chromium), driven by Playwright's async API. 30 viewers at once are too heavy for
2 cores, so the readers run in waves: at most ``--concurrency`` (default 10) at a time; a reader
signs in through nginx, opens their study on Annotate (the client-side viewer), and for each of
``--boxes`` boxes steps a slice or more (keys) and draws a box on a slice it has not used, by mouse
drag with the box tool, in the corner of the image (off the vertebra: the box gets no level, so
the ``--calls`` level calls on the Levels panel, spread among the boxes, are never disabled by a
box). Meanwhile adjudicator1 casts a vote on the first dispute (Adjudication page) and the admin
clicks "Predict all" on the Models page (the worker runs the batch).

``--wire-readers N``: N of the readers (the last ones) have no browser: they are driven over
Streamlit's websocket (``streamlit_wire``), all at once, each doing what the page and its viewer
would: sign in (and hand the sign-in ticket to the session route for the cookie), open Annotate
(and fetch the volume's chunks), and per box commit a fresh slice (the viewer's fragment run),
pause ``--wire-think-s`` (±50 %), post the box to the box route as the viewer does (timed: the box
save), run the page when the answer asks for it, and the level calls. When their replica dies
they connect again through nginx every 0.5 s and run the page (signed in by the cookie); the
browser readers measure Streamlit's own front end doing that.

Box save round trip: from the pointerup of the drag to the viewer's count of confirmed saves going
up by one: the viewer posts the box to ``/spine-box-events`` (no Streamlit rerun) and, when the
server answers, sets ``data-saved`` (the count) and ``data-saved-at`` (its performance.now()) on
its root. Both ends are timed in the page by performance.now() (a pointerup listener, the
viewer's stamp). A level call: click to its toast ("C3: Unsure").

Halfway (when half of all boxes are confirmed) one replica is SIGKILLed. Its readers (found from
nginx's access log: the replica that served their ``spine_route`` cookie) wait for Streamlit's own
reconnect (through nginx to the other replica, the sign-in cookie being a database row); when the
page is not back within ``--reload-after-s`` they reload it. "Back at work" (the target): from the
kill to the later of the reader's next confirmed box save (the box route is a server of its own,
so it may confirm boxes while the page is gone) and the page following the viewer again (its box
panel shows the slice of that box: the page runs on the other replica); also shown: to the viewer
being complete again.

At the end the database is queried: per reader, drawn boxes and level calls against what was
confirmed to them (a confirmed one missing = lost; the same box twice = doubled; one stored without
its confirmation is listed as unconfirmed, not lost). PASS/MISS against the targets: 0 lost or
doubled writes, p95 box save <= 300 ms, back at work <= 10 s. Reference, in the same process: the
box save p50 of 1 reader alone on the same team before the load.

Usage: ``.venv/bin/python benchmarks/bench_team_load.py [--readers 30] [--boxes 20] [--calls 7]
[--concurrency 10] [--time-limit-s 900]`` (a first try: ``--readers 4 --boxes 3 --calls 2``)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"
CHROMIUM = os.environ.get("SPINE_TEST_CHROMIUM", "/usr/bin/chromium")
READER_PASSWORD = "bench-reader-pass"  # every bench reader's (loopback, a throwaway database)

SETUP = """
import sys
from sqlalchemy import select
from db import annotations as ann, models as m
from db.session import unit_of_work
from db.users import create_user
from db.workspace import open_workspace
from spine_core.config import load_settings
n, password = int(sys.argv[1]), sys.argv[2]
ws = open_workspace(load_settings())
with unit_of_work(ws.sessions) as s:
    admin = s.scalars(select(m.User).where(m.User.username == "admin")).one()
    studies = [st.id for st in s.scalars(select(m.Study).order_by(m.Study.id))]
    users = []
    for i in range(1, n + 1):
        users.append(create_user(s, f"bench{i:02d}", password, "annotator", actor="bench",
                                 display_name=f"Bench reader {i}"))
    s.flush()
    for i, u in enumerate(users):
        ann.assign(s, admin, studies[i % len(studies)], [u.id])
print(len(studies))
"""

# In every page: pointerups and Streamlit toasts, timed by performance.now().
PROBE = r"""
(() => {
  const b = window.__bench = {up: [], down: [], toasts: [], fetches: []};
  // each box save's request as the browser's network stack timed it (Resource Timing)
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name.includes('/spine-box-events')) b.fetches.push(e.responseEnd - e.startTime);
    }
  }).observe({type: 'resource', buffered: true});
  document.addEventListener('pointerup', () => b.up.push(performance.now()), true);
  // whether each pointerdown landed on the axial view (a drag off it draws nothing)
  document.addEventListener('pointerdown', (e) => b.down.push(e.composedPath().some(
    (el) => el.dataset && el.dataset.testid === 'sv-vp-axial')), true);
  const scan = () => {
    for (const el of document.querySelectorAll('[data-testid=stToast]')) {
      if (el.dataset.benchSeen) continue;
      const text = (el.textContent || '').trim();
      if (!text) continue;
      el.dataset.benchSeen = '1';
      b.toasts.push([performance.now(), text]);
    }
  };
  new MutationObserver(scan).observe(document, {childList: true, subtree: true,
                                                characterData: true});
})();
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def fmt(values: list[float], unit: str = "ms", scale: float = 1.0) -> str:
    if not values:
        return "none"
    return (f"p50 {pct(values, 0.5) * scale:.0f} {unit}, p95 {pct(values, 0.95) * scale:.0f} {unit}, "
            f"max {max(values) * scale:.0f} {unit} (n={len(values)})")


# --- the team ------------------------------------------------------------------------------------


class Team:
    """Database, backend, worker, replicas and nginx; :meth:`stop` ends all of it."""

    def __init__(self, pg: str, studies: int, shape: str, n_readers: int,
                 route_server: bool = True) -> None:
        self.pg = pg.rstrip("/")
        self.dbname = f"bench_team_{os.getpid()}"
        self.db_url = f"{self.pg}/{self.dbname}"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-team-"))
        self.tmp.chmod(0o755)  # started as root, nginx's workers (nobody) write its cache here
        self.run = self.tmp / "team"
        self.keep_logs = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.db_created = False
        self.studies, self.shape, self.n_readers = studies, shape, n_readers
        self.route_server = route_server
        self.replica_ports: list[int] = []
        self.port = 0
        self.env: dict[str, str] = {}

    def admin_conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"{self.pg}/postgres", autocommit=True)

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.db_url, autocommit=True)

    def start(self) -> None:
        with self.admin_conn() as con:
            con.execute(f'CREATE DATABASE "{self.dbname}"')
        self.db_created = True
        (self.run / "tmp").mkdir(parents=True)
        (self.run / "cache").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        backend_port = free_port()
        env.update({
            "SPINE_DB_URL": self.db_url, "SPINE_DATA_DIR": str(self.tmp / "data"),
            "SPINE_DEMO_STUDIES": str(self.studies), "SPINE_DEMO_SHAPE": self.shape,
            "SPINE_WORKERS": "2", "SPINE_BACKEND_TOKEN": secrets.token_urlsafe(32),
            "SPINE_BACKEND_URL": f"http://127.0.0.1:{backend_port}", "SPINE_WORKER": "external",
        })
        self.env = env
        t0 = time.monotonic()
        subprocess.run([str(VENV / "spine"), "bootstrap", "--no-progress"], env=env, cwd=ROOT,
                       check=True, capture_output=True, timeout=900)
        out = subprocess.run([str(VENV / "python"), "-c", SETUP, str(self.n_readers), READER_PASSWORD],
                             env=env, cwd=ROOT, check=True, capture_output=True, timeout=600, text=True)
        print(f"database {self.dbname}: demo data ({out.stdout.strip()} studies, {self.shape}) and "
              f"{self.n_readers} readers in {time.monotonic() - t0:.0f} s", flush=True)
        self._spawn("backend", [str(VENV / "spine"), "serve", "--port", str(backend_port)])
        self._spawn("worker", [str(VENV / "spine"), "worker"])
        servers = ""
        for i in range(2):
            port = free_port()
            self.replica_ports.append(port)
            self._spawn(f"replica-{i}", [
                str(VENV / "streamlit"), "run", "server.py", "--server.headless", "true",
                "--server.address", "127.0.0.1", "--server.port", str(port),
                "--browser.gatherUsageStats", "false"])
            servers += f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n"
        if self.route_server:  # as serve-team.sh: box saves to `python -m spine_web`
            route_port = free_port()
            self._spawn("routes", [str(VENV / "python"), "-m", "spine_web", "--port", str(route_port)])
            routes = f"        server 127.0.0.1:{route_port};\n"
        else:  # the route inside the replicas (server.py), as before the route server
            routes = "".join(f"        server 127.0.0.1:{p};\n" for p in self.replica_ports)
        self.port = free_port()
        conf = (ROOT / "deploy" / "nginx-team.conf").read_text()
        conf = conf.replace("@RUN@", str(self.run)).replace("@LISTEN@", f"127.0.0.1:{self.port}")
        conf = conf.replace("@SERVERS@\n", servers).replace("@ROUTES@\n", routes)
        (self.run / "nginx.conf").write_text(conf)
        nginx = "/usr/sbin/nginx"
        subprocess.run([nginx, "-t", "-q", "-c", str(self.run / "nginx.conf"), "-p", str(self.run)],
                       check=True, capture_output=True)
        self._spawn("nginx", [nginx, "-c", str(self.run / "nginx.conf"), "-p", str(self.run),
                              "-g", "daemon off;"])
        for i, port in enumerate(self.replica_ports):
            self._wait(f"http://127.0.0.1:{port}/_stcore/health", f"replica-{i}")
        if self.route_server:
            self._wait(f"http://127.0.0.1:{route_port}/spine-routes/health", "routes")
        self._wait(f"{self.url}/_stcore/health", "nginx")
        self._wait(f"{self.env['SPINE_BACKEND_URL']}/health", "backend", need_200=False)
        print(f"team up: nginx {self.url} -> replicas {self.replica_ports}, backend, worker "
              f"({time.monotonic() - t0:.0f} s)", flush=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.run / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _wait(self, url: str, name: str, timeout_s: float = 180, need_200: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}: see {self.run / name}.log")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError:
                if not need_200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{name} did not answer at {url} within {timeout_s} s")

    def kill_replica(self, i: int) -> None:
        self.procs[f"replica-{i}"].send_signal(signal.SIGKILL)

    def routes(self) -> dict[str, int]:
        """spine_route cookie -> the replica port that served it last (nginx's access log; box
        saves go to the route server, not to a replica, and are skipped)."""
        out: dict[str, int] = {}
        log = self.run / "nginx-access.log"
        if not log.exists():
            return out
        replicas = set(self.replica_ports)
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r"upstream=127\.0\.0\.1:(\d+)\S* route=(\S+)", line)
            if m and int(m.group(1)) in replicas:
                out[m.group(2)] = int(m.group(1))
        return out

    def box_route_ms(self) -> dict[str, list[float]]:
        """Each answered ``POST /spine-box-events`` in nginx's log, in ms: ``nginx`` its request
        time (the server's part of a box save: proxy, route, database), ``upstream`` the app's
        answer time as nginx saw it, and from the route's Server-Timing header ``auth`` (the
        sign-in check) and ``save`` (the transaction, from its worker thread's start)."""
        log = self.run / "nginx-access.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        out: dict[str, list[float]] = {"nginx": [], "upstream": [], "auth": [], "save": []}
        for m in re.finditer(r'"POST /spine-box-events [^"]*" 200 .* rt=([\d.]+)'
                             r'(?: urt=([\d.]+))?(?: st="([^"]*)")?', text):
            out["nginx"].append(float(m.group(1)) * 1000)
            if m.group(2):
                out["upstream"].append(float(m.group(2)) * 1000)
            for name, dur in re.findall(r"(\w+);dur=([\d.]+)", m.group(3) or ""):
                if name in out:
                    out[name].append(float(dur))
        return out

    def stop(self) -> None:
        for _name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self.db_created:
            try:
                with self.admin_conn() as con:
                    con.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"could not drop database {self.dbname}: {exc}", file=sys.stderr)
        if self.keep_logs:  # the processes' logs and nginx's, for a look afterwards
            subprocess.run(["cp", "-r", str(self.run), self.keep_logs], check=False)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


# --- a reader ------------------------------------------------------------------------------------


@dataclass
class Reader:
    username: str
    boxes_confirmed: list[int] = field(default_factory=list)  # slice index of each confirmed box
    boxes_tried: list[int] = field(default_factory=list)
    calls_confirmed: dict[str, str] = field(default_factory=dict)  # level -> last confirmed call
    calls_tried: int = 0
    #: levels whose call shows chosen but whose toast never came
    calls_reclicked: int = 0  #: clicks given again: no toast and the option still not chosen
    calls_untoasted: list[str] = field(default_factory=list)
    box_ms: list[float] = field(default_factory=list)
    box_after_kill: list[float] = field(default_factory=list)
    box_fetch_ms: list[float] = field(default_factory=list)  # Resource Timing of each save's POST
    call_ms: list[float] = field(default_factory=list)
    sign_in_s: float | None = None
    errors: list[str] = field(default_factory=list)
    route: str = ""
    affected: bool = False
    back_ready_s: float | None = None
    back_saved_s: float | None = None
    back_page_s: float | None = None  # kill -> the page follows the viewer's slice again
    reloaded: bool = False
    drag_misses: int = 0  # drags that began off the axial view (made again)
    box_events: dict[str, int] = field(default_factory=dict)  # posted box events by type
    done: bool = False
    kind: str = "browser"  # or "wire": driven over Streamlit's websocket, no browser


@dataclass
class Shared:
    total_boxes: int
    confirmed: int = 0
    kill_at: float | None = None  # monotonic time of the SIGKILL
    killed_port: int | None = None
    started: int = 0


class Lost(Exception):
    """The page lost its server (the op was not confirmed in time)."""


async def settle(page: Any, pause: float = 0.4, timeout: float = 60_000) -> None:
    await asyncio.sleep(pause)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout)


async def n_toasts(page: Any, pattern: str) -> int:
    return int(await page.evaluate(
        "p => window.__bench.toasts.filter(t => new RegExp(p).test(t[1])).length", pattern))


async def wait_toast(page: Any, pattern: str, before: int, timeout_s: float,
                     shared: Shared | None = None, reader: Reader | None = None) -> tuple[float, str]:
    """Wait for a new toast matching ``pattern``; (its performance.now(), its text). Raises Lost
    when not confirmed in time (sooner for a reader whose replica was killed)."""
    deadline = time.monotonic() + timeout_s
    js = ("([p, n]) => { const t = window.__bench.toasts.filter(t => new RegExp(p).test(t[1]));"
          " return t.length > n ? t[n] : null; }")
    while True:
        left = deadline - time.monotonic()
        if reader is not None and shared is not None and reader.affected and shared.kill_at \
                and reader.back_ready_s is None:
            left = min(left, 3.0)  # its server is gone: go and see whether the page is back
        if left <= 0:
            raise Lost(f"no toast /{pattern}/ within {timeout_s:.0f} s")
        try:
            handle = await page.wait_for_function(js, arg=[pattern, before], polling=50,
                                                   timeout=min(left, 2.0) * 1000)
            t, text = await handle.json_value()
            return float(t), str(text)
        except Exception as exc:  # noqa: BLE001 - a Playwright timeout: look again
            if "Timeout" not in type(exc).__name__ and "Timeout" not in str(exc):
                raise
            await check_errors(page)


SHOTS: list[str] = []


async def shot(page: Any, name: str) -> None:
    """A screenshot of a failure (the first 12) under --shots, when given."""
    if not ARGS_SHOTS or len(SHOTS) >= 12:
        return
    path = Path(ARGS_SHOTS[0]) / f"{len(SHOTS):02d}-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    SHOTS.append(str(path))
    try:
        await page.screenshot(path=str(path))
    except Exception:  # noqa: BLE001
        pass


ARGS_SHOTS: list[str] = []


async def saved_count(page: Any) -> int:
    """The viewer's count of box saves the server confirmed (``data-saved``)."""
    value = await page.locator("[data-testid=sv-root]").first.get_attribute("data-saved")
    return int(value) if value and value.isdigit() else 0


async def wait_box(page: Any, n: int, t_up: float, timeout_s: float, shared: Shared,
                   reader: Reader) -> float:
    """Wait until the viewer counts ``n`` confirmed saves after the pointerup; when it confirmed
    the last one (its performance.now())."""
    deadline = time.monotonic() + timeout_s
    root = page.locator(f"[data-testid=sv-root][data-saved='{n}']").first
    while True:
        left = deadline - time.monotonic()
        if reader.affected and shared.kill_at and reader.back_saved_s is None:
            left = min(left, 3.0)  # its server is gone: go and see whether the page is back
        if left <= 0:
            said = await page.locator("[data-testid=sv-root]").first.evaluate(
                "r => [r.dataset.saved, r.dataset.saveFailed, "
                "r.querySelector('[data-testid=sv-save]')?.textContent]")
            raise Lost(f"no confirmed save {n} within {timeout_s:.0f} s (viewer: {said})")
        try:
            await root.wait_for(timeout=min(left, 2.0) * 1000)
            at = float(await root.get_attribute("data-saved-at") or "nan")
            if at > t_up:
                return at
            raise Lost(f"save {n} was confirmed before its pointerup")
        except Lost:
            raise
        except Exception as exc:  # noqa: BLE001 - a Playwright timeout: look again
            if "Timeout" not in type(exc).__name__ and "Timeout" not in str(exc):
                raise
            await check_errors(page)


async def check_errors(page: Any) -> None:
    alert = page.locator("[data-testid=stAlert]").filter(has_text=re.compile("Not saved|changed in"))
    if await alert.count():
        raise RuntimeError((await alert.first.inner_text())[:200])


async def sign_in(page: Any, url: str, username: str, password: str) -> float:
    await page.goto(url)
    await page.get_by_label("User name", exact=True).wait_for()
    await page.get_by_label("User name", exact=True).fill(username)
    await page.get_by_role("textbox", name="Password").fill(password)
    t0 = time.monotonic()
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Sign out").wait_for()
    took = time.monotonic() - t0
    await settle(page)
    deadline = time.monotonic() + 30  # the session cookie (a reload stays signed in from here on)
    while not any(c["name"] == "spine_session" for c in await page.context.cookies()):
        if time.monotonic() > deadline:
            raise RuntimeError("the app never set the session cookie")
        await asyncio.sleep(0.2)
    return took


async def open_annotate(page: Any) -> None:
    await page.get_by_role("link", name="Annotate").click()
    await wait_viewer(page)


async def wait_viewer(page: Any, timeout_s: float = 120) -> None:
    await page.locator("[data-testid=sv-root][data-complete='1']").wait_for(timeout=timeout_s * 1000)
    await settle(page, 0.3)


async def axial_index(page: Any) -> int:
    return int(await page.locator("[data-testid=sv-vp-axial] .sv-info").first.get_attribute(
        "data-index"))


async def key(page: Any, name: str) -> None:
    await page.locator("[data-testid=sv-root]").first.focus()
    await page.keyboard.press(name)


async def fresh_slice(page: Any, used: set[int], direction: list[str]) -> int:
    """Step one slice at a time (ArrowUp; ArrowDown once the end is reached) until the viewer shows
    a slice without a box of this reader."""
    for _ in range(600):
        was = await axial_index(page)
        await key(page, direction[0])
        await page.wait_for_timeout(40)
        k = await axial_index(page)
        if k == was:  # the end of the volume: turn round
            direction[0] = "ArrowDown" if direction[0] == "ArrowUp" else "ArrowUp"
            continue
        if k not in used:
            return k
    raise RuntimeError("no free slice")


#: Scroll the image's scrolling ancestor (across the viewer's shadow root) so that the image's top
#: is in the window; answers the image's top after it.
SHOW_IMAGE_TOP = """c => {
  const r = c.getBoundingClientRect();
  if (r.top >= 0 && r.top + 0.25 * r.height <= innerHeight) return r.top;
  for (let el = c.parentNode || c.host; el; el = el.parentNode || el.host) {
    if (el.nodeType === 1 && el.scrollHeight > el.clientHeight
        && /(auto|scroll)/.test(getComputedStyle(el).overflowY)) {
      el.scrollTop += r.top - 40;
      break;
    }
  }
  return c.getBoundingClientRect().top;
}"""


async def draw_box(page: Any, k: int, n: int, reader: Reader) -> None:
    """Drag a box in the image's top-left corner. A level call, or the page run again, may have
    scrolled the image's top out of the window, or shift it between the look and the drag: such a
    drag begins off the view and draws nothing; it is counted (``reader.drag_misses``) and made
    again, at most 3 times."""
    root = page.locator("[data-testid=sv-root]").first
    await root.focus()
    if await root.get_attribute("data-tool") != "box":
        await page.keyboard.press("b")
    canvas = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").first
    fx0, fy0 = 0.04 + 0.01 * (n % 5), 0.04 + 0.01 * (n % 3)
    for _ in range(3):
        await canvas.evaluate(SHOW_IMAGE_TOP)
        bb = await canvas.bounding_box()
        for _ in range(12):  # a scroll may be animated: wait until the image stands still
            await page.wait_for_timeout(80)
            now = await canvas.bounding_box()
            if now == bb:
                break
            bb = now
        await page.mouse.move(bb["x"] + bb["width"] * fx0, bb["y"] + bb["height"] * fy0)
        await page.mouse.down()
        await page.mouse.move(bb["x"] + bb["width"] * (fx0 + 0.08),
                              bb["y"] + bb["height"] * (fy0 + 0.07), steps=5)
        posted = sum(reader.box_events.values())
        await page.mouse.up()
        if await page.evaluate("window.__bench.down.at(-1)"):
            return
        # the probe saw the pointerdown elsewhere; a drag the viewer took all the same has
        # posted its box by now (drawing again there would move that box)
        await page.wait_for_timeout(500)
        if sum(reader.box_events.values()) > posted:
            return
        reader.drag_misses += 1
    raise RuntimeError("3 drags began off the axial view (the bench's misses, not lost saves)")


async def page_follows(page: Any, reader: Reader, shared: Shared, url: str, k: int,
                       args: argparse.Namespace) -> None:
    """A reader of the killed replica: the box route (its own server) may confirm boxes while
    the page is still gone; the reader is back at work once the page runs again, which shows
    when its box panel follows the viewer to slice ``k`` ("· axial k+1"). Not within
    ``--reload-after-s`` more seconds: the page is reloaded (as a reader would) and waited for."""
    assert shared.kill_at is not None
    shown = page.get_by_text(re.compile(rf"· axial {k + 1}\b")).first
    try:
        await shown.wait_for(timeout=args.reload_after_s * 1000)
    except Exception:  # noqa: BLE001 - not back by itself: the reader reloads the page
        reader.reloaded = True
        reader.errors.append(f"the page did not follow the viewer within {args.reload_after_s:g} s "
                             "of the box after the kill: reloaded")
        await page.goto(page.url if "/annotate" in page.url else f"{url}/annotate", timeout=60_000)
        await page.get_by_role("button", name="Sign out").wait_for(timeout=30_000)
        await wait_viewer(page)
    reader.back_page_s = time.monotonic() - shared.kill_at


async def recover(page: Any, reader: Reader, shared: Shared, url: str, reload_after_s: float) -> None:
    """The page lost its replica: wait for Streamlit's reconnect, else reload; then the viewer."""
    t0 = time.monotonic()
    try:
        await page.get_by_role("button", name="Sign out").wait_for(timeout=reload_after_s * 1000)
        await wait_viewer(page, reload_after_s)
    except Exception:  # noqa: BLE001 - not back by itself: reload, as a reader would
        reader.reloaded = True
        await page.goto(page.url if "/annotate" in page.url else f"{url}/annotate", timeout=60_000)
        sign_out = page.get_by_role("button", name="Sign out")
        await sign_out.wait_for(timeout=30_000)
        await wait_viewer(page)
    if shared.kill_at is not None and reader.affected and reader.back_ready_s is None:
        reader.back_ready_s = time.monotonic() - shared.kill_at
    del t0


async def reader_run(browser: Any, reader: Reader, shared: Shared, url: str, args: argparse.Namespace,
                     on_box: Any) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    await context.add_init_script(PROBE)
    page = await context.new_page()
    page.set_default_timeout(60_000)

    def sent(request: Any) -> None:  # the type of each box event the viewer posts
        if request.method == "POST" and request.url.endswith("/spine-box-events"):
            try:
                kind = str(json.loads(request.post_data or "{}").get("type"))
            except ValueError:
                kind = "?"
            reader.box_events[kind] = reader.box_events.get(kind, 0) + 1

    page.on("request", sent)
    try:
        reader.sign_in_s = await sign_in(page, url, reader.username, READER_PASSWORD)
        for c in await context.cookies():
            if c["name"] == "spine_route":
                reader.route = c["value"]
        await open_annotate(page)
        used: set[int] = set()
        direction = ["ArrowUp"]
        call_every = max(1, args.boxes // max(1, args.calls)) if args.calls else 0
        call_i = 0
        b = 0
        attempts = 0
        while b < args.boxes and attempts < args.boxes * 3:
            attempts += 1
            try:
                k = await fresh_slice(page, used, direction)
                used.add(k)
                shown = await saved_count(page)
                ups = int(await page.evaluate("window.__bench.up.length"))
                reader.boxes_tried.append(k)
                await draw_box(page, k, b, reader)
                up = await page.evaluate("n => window.__bench.up.slice(n)", ups)
                t_up = float(up[-1]) if up else 0.0
                t_saved = await wait_box(page, shown + 1, t_up, args.confirm_timeout_s, shared,
                                         reader)
                rtt = t_saved - t_up
                reader.boxes_confirmed.append(k)
                (reader.box_after_kill if shared.kill_at else reader.box_ms).append(rtt)
                if shared.kill_at is not None and reader.affected and reader.back_saved_s is None:
                    reader.back_saved_s = time.monotonic() - shared.kill_at
                    if reader.back_ready_s is None:
                        reader.back_ready_s = reader.back_saved_s
                if shared.kill_at is not None and reader.affected and reader.back_page_s is None:
                    await page_follows(page, reader, shared, url, k, args)
                b += 1
                on_box()
                await settle(page, 0.1)
                if call_every and b % call_every == 0 and call_i < args.calls:
                    await level_call(page, reader, call_i, shared, args)
                    call_i += 1
            except Lost as exc:
                reader.errors.append(f"box {b + 1}: {exc}")
                await shot(page, f"{reader.username}-lost")
                await recover(page, reader, shared, url, args.reload_after_s)
            except Exception as exc:  # noqa: BLE001 - counted, the reader goes on
                reader.errors.append(f"box {b + 1}: {type(exc).__name__}: {str(exc)[:160]}")
                await shot(page, f"{reader.username}-error")
                if shared.kill_at is not None:
                    await recover(page, reader, shared, url, args.reload_after_s)
        while call_i < args.calls:
            try:
                await level_call(page, reader, call_i, shared, args)
            except Exception as exc:  # noqa: BLE001
                reader.errors.append(f"call {call_i + 1}: {type(exc).__name__}: {str(exc)[:160]}")
            call_i += 1
        reader.done = True
    except Exception as exc:  # noqa: BLE001
        reader.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    try:  # a reload started the page's record anew: only the last page's saves are in it
        reader.box_fetch_ms = [float(v) for v in await page.evaluate("window.__bench.fetches")]
    except Exception:  # noqa: BLE001 - the page is gone
        pass
        await shot(page, f"{reader.username}-gave-up")
    finally:
        await context.close()


# --- a reader over Streamlit's websocket (no browser) -------------------------------------------


class WireReader:
    """A reader driven over Streamlit's websocket (:mod:`streamlit_wire`), doing what the
    browser would: the page's runs (sign-in, Annotate, the slice the reader settles on, the
    level calls, the page rerun a box save asks for) over the websocket, the viewer's box posts
    and the volume's chunks over HTTP with the same cookies."""

    def __init__(self, reader: Reader, url: str, http: Any) -> None:
        self.r, self.url, self.http = reader, url, http
        self.s: Any = None
        self.viewer: Any = None  # the viewer's element in the last run that had it
        self.header: dict[str, Any] = {}
        self.levels: list[Any] = []  # the enabled level controls of the last full run
        self.study_version: int | None = None
        self.page_version: Any = "unset"
        self.refreshes = 0

    async def connect(self) -> None:
        from streamlit_wire import WireSession

        self.s = WireSession(self.url, dict(self.http.cookies))
        await self.s.connect()

    def _saw(self, run: Any) -> None:
        from streamlit_wire import viewer_header

        v = run.component("workstation")
        if v is not None:
            self.viewer, self.header = v, viewer_header(v)
            post = self.header["view"].get("box_post") or {}
            if post.get("base_study_version") != self.page_version:  # as the viewer's saver
                self.page_version = post.get("base_study_version")
                self.study_version = self.page_version
        if run.status == 0:  # a full run: its level controls
            self.levels = [e for e in run.find("button_group") if not e.proto.disabled]

    async def run(self, widgets: list[Any] | None = None, **kw: Any) -> Any:
        run = await self.s.rerun(widgets, **kw)
        self._saw(run)
        return run

    async def sign_in(self, password: str) -> float:
        from streamlit_wire import component_state, widget

        await self.http.get("/")  # nginx's spine_route cookie
        self.r.route = self.http.cookies.get("spine_route", "")
        # nginx logs the websocket only when it closes: one request with the cookie now puts this
        # reader's replica in its log for the killer (the first one went to any replica)
        await self.http.get("/_stcore/health")
        await self.connect()
        run = await self.run(page="")
        ids = [run.find("text_input", "User name")[0].proto.id,
               run.find("text_input", "Password")[0].proto.id, run.find("button", "Sign in")[0].proto.id]
        t0 = time.monotonic()
        run = await self.run([widget(ids[0], string_value=self.r.username),
                              widget(ids[1], string_value=password), widget(ids[2], trigger_value=True)])
        if not run.find("button", "Sign out"):
            raise RuntimeError(f"not signed in: {run.texts()[:3]}")
        took = time.monotonic() - t0
        handover = run.component("session_cookie")
        data = json.loads(handover.proto.json)
        answer = await self.http.post(f"/{data['path']}", json={"ticket": data["ticket"]},
                                      headers={"Origin": self.url})
        if answer.status_code >= 300 or "spine_session" not in self.http.cookies:
            raise RuntimeError(f"the session route answered {answer.status_code}")
        self.s.cookies = dict(self.http.cookies)
        await self.run([component_state(handover.proto.id, {"result": "ok"})])
        return took

    async def open_annotate(self) -> None:
        await self.run(page="annotate")
        if self.viewer is None:
            raise RuntimeError("no viewer on Annotate")
        vol = self.header["volume"]
        if vol.get("chunk_url"):  # the browser fetches the volume's chunks once
            for a, b in vol["plan"]:
                await self.http.get(f"/{vol['chunk_url']}{a}-{b}")

    async def settle_on(self, k: int) -> Any:
        """The reader stopped stepping at axial slice ``k``: the viewer commits it (the
        viewer's fragment runs)."""
        from streamlit_wire import component_state

        shape = self.header["volume"]["shape"]
        cursor = [k, shape[1] // 2, shape[2] // 2]
        return await self.run([component_state(self.viewer.proto.id, {"slice": {
            "plane": "axial", "index": k, "cursor": cursor}})], fragment_id=self.viewer.fragment_id)

    async def post_box(self, k: int, n: int) -> tuple[float, dict[str, Any]]:
        """Draw a box in the image's top-left corner of slice ``k`` (off the vertebra): the
        viewer's POST, timed; (ms, its answer)."""
        post = self.header["view"]["box_post"]
        shape = self.header["volume"]["shape"]
        x0, y0 = shape[2] * (0.04 + 0.01 * (n % 5)), shape[1] * (0.04 + 0.01 * (n % 3))
        key = f"wire-{self.r.username}-{n}"
        body = {"study": post["study"], "type": "created", "id": f"new-{n}", "base_version": None,
                "slice": k, "x0": x0, "y0": y0, "width": shape[2] * 0.08, "height": shape[1] * 0.07,
                "fracture": post["fracture"], "base_study_version": self.study_version,
                "client_key": key}
        t0 = time.monotonic()
        for wait in (0.25, 0.5, 1.0, 2.0, 4.0, None):  # as the viewer's saver, while no app answers
            answer = await self.http.post(f"/{post['url']}", json=body, headers={"Origin": self.url})
            no_app = answer.status_code in (502, 503, 504) and "json" not in answer.headers.get(
                "content-type", "")
            if not no_app or wait is None:
                break
            await asyncio.sleep(wait)
        ms = (time.monotonic() - t0) * 1000
        reply = answer.json()
        self.r.box_events["created"] = self.r.box_events.get("created", 0) + 1
        if answer.status_code != 200:
            raise RuntimeError(f"box refused {answer.status_code}: {reply.get('message')}")
        self.study_version = reply["study_version"]
        return ms, reply

    async def refresh(self, reply: dict[str, Any]) -> Any:
        """The save changed what the page shows: the viewer asks the page to run again."""
        from streamlit_wire import component_trigger

        self.refreshes += 1
        return await self.run([component_trigger(self.viewer.proto.id, "msg", {
            "client": f"wire-{self.r.username}", "volume": self.header["volume"]["id"],
            "need": None, "events": [], "refresh": {
                "message": reply["message"], "kind": "toast", "ask_levels": reply["ask_levels"],
                "n": self.refreshes}})], fragment_id=self.viewer.fragment_id)

    async def level_call(self, i: int) -> None:
        from streamlit_wire import widget

        value = CALLS[(i // 7) % len(CALLS)]
        free = [e for e in self.levels if e.proto.label not in self.r.calls_confirmed]
        if not free:
            raise RuntimeError("no level to call")
        level = free[i % len(free)].proto
        self.r.calls_tried += 1
        run = await self.run([widget(level.id, string_array_value=[value])])
        want = f"{level.label}: {value}"
        if want not in run.toasts:
            shown = [e.proto for e in run.find("button_group", level.label)]
            if shown and [shown[0].options[i].content for i in shown[0].default] == [value]:
                # stored already (its run was cut short by the kill): shown chosen, no toast
                self.r.calls_untoasted.append(level.label)
                self.r.calls_confirmed[level.label] = value
                return
            raise RuntimeError(f"no toast {want!r} (toasts: {run.toasts})")
        self.r.call_ms.append((run.toast_s or run.seconds) * 1000)
        self.r.calls_confirmed[level.label] = value

    async def back(self, shared: Shared, k: int) -> None:
        """The websocket closed (the replica was killed): connect again through nginx, as the
        frontend does, every 0.5 s, and run the page (signed in by the cookie)."""
        for _ in range(120):
            try:
                await self.connect()
                await self.run(page="annotate")
                run = await self.settle_on(k)
                if any(f"· axial {k + 1}" in t for t in run.texts()):
                    break
            except Exception:  # noqa: BLE001 - not yet: the proxy still tries the dead one
                await asyncio.sleep(0.5)
        if shared.kill_at is not None and self.r.affected and self.r.back_page_s is None:
            self.r.back_page_s = time.monotonic() - shared.kill_at


async def wire_reader_run(reader: Reader, shared: Shared, url: str, args: argparse.Namespace,
                          on_box: Any) -> None:
    """One reader over the websocket: sign in, open Annotate, then per box settle on a fresh
    slice, think (``--wire-think-s``, ±50 %), post the box and run the page when it asks; the level
    calls spread among the boxes, as the browser readers'."""
    import random

    import httpx
    from streamlit_wire import Disconnected

    reader.kind = "wire"
    rng = random.Random(reader.username)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        w = WireReader(reader, url, http)
        try:
            reader.sign_in_s = await w.sign_in(READER_PASSWORD)
            await w.open_annotate()
            n_slices = w.header["volume"]["shape"][0]
            k = w.header["view"]["cursor"][0]
            call_every = max(1, args.boxes // max(1, args.calls)) if args.calls else 0
            call_i = b = attempts = 0
            while b < args.boxes and attempts < args.boxes * 3:
                attempts += 1
                k = (k + 1) % n_slices
                try:
                    await w.settle_on(k)
                    await asyncio.sleep(args.wire_think_s * rng.uniform(0.5, 1.5))
                    reader.boxes_tried.append(k)
                    ms, reply = await w.post_box(k, b)
                    reader.boxes_confirmed.append(k)
                    reader.box_fetch_ms.append(ms)
                    (reader.box_after_kill if shared.kill_at else reader.box_ms).append(ms)
                    if shared.kill_at is not None and reader.affected and reader.back_saved_s is None:
                        reader.back_saved_s = time.monotonic() - shared.kill_at
                    b += 1
                    on_box()
                    if reply.get("refresh"):
                        asked = time.monotonic()
                        await w.refresh(reply)
                        if shared.kill_at is not None and asked > shared.kill_at and reader.affected \
                                and reader.back_page_s is None:  # the page ran on the other replica
                            reader.back_page_s = time.monotonic() - shared.kill_at
                    if call_every and b % call_every == 0 and call_i < args.calls:
                        await w.level_call(call_i)
                        call_i += 1
                except Disconnected:
                    reader.errors.append(f"box {b + 1}: the websocket closed; connecting again")
                    await w.back(shared, k)
                    if reader.back_ready_s is None and shared.kill_at is not None and reader.affected:
                        reader.back_ready_s = time.monotonic() - shared.kill_at
            while call_i < args.calls:
                try:
                    await w.level_call(call_i)
                except Exception as exc:  # noqa: BLE001
                    reader.errors.append(f"call {call_i + 1}: {type(exc).__name__}: {str(exc)[:160]}")
                call_i += 1
            reader.done = True
        except Exception as exc:  # noqa: BLE001
            reader.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            if w.s is not None:
                await w.s.close()


CALLS = ["Not fractured", "Unsure", "Fractured"]


#: A level's call option not chosen yet on a level that takes calls (a boxed level's are
#: disabled: its box marks it), and the chosen one (Streamlit's segmented control).
OPTION = ("[data-testid=stButtonGroup] [role=radiogroup]:not([aria-disabled=true]) "
          "button[role=radio][aria-checked=false]:not([disabled])")
CHOSEN = "[data-testid=stButtonGroup] button[role=radio][aria-checked=true]"
#: Seconds a reader waits for a level call's toast before clicking again.
CALL_RETRY_S = 8.0


async def level_call(page: Any, reader: Reader, i: int, shared: Shared, args: argparse.Namespace) -> None:
    """Call a level not called ``value`` yet (clicking a chosen option would clear it) and wait
    for its toast. A call whose toast never came but whose option shows chosen is counted as
    saved without a toast (the reader saw it chosen), not as lost."""
    value = CALLS[(i // 7) % len(CALLS)]
    buttons = page.locator(OPTION).filter(has_text=re.compile(rf"^{re.escape(value)}$"))
    try:  # the Levels panel may be between two runs of the page
        await buttons.first.wait_for(state="attached", timeout=10_000)
    except Exception:  # noqa: BLE001 - none came: said below
        pass
    n = await buttons.count()
    if n == 0:
        raise RuntimeError("no level to call")
    group = buttons.nth(i % n).locator("xpath=ancestor::*[@role='radiogroup'][1]")
    level = str(await group.get_attribute("aria-label"))
    # from here on, this level's own control (the page redraws; a list position would move)
    group = page.locator(f"[data-testid=stButtonGroup] [role=radiogroup][aria-label='{level}']")
    exact = re.compile(rf"^{re.escape(value)}$")
    option = group.locator("button[role=radio]").filter(has_text=exact)
    chosen = group.locator("button[role=radio][aria-checked=true]").filter(has_text=exact)
    before = await n_toasts(page, f"^{level}: ")
    reader.calls_tried += 1
    t0 = await page.evaluate("performance.now()")
    for attempt in range(3):  # a click a redraw swallowed shows nothing: the reader clicks again
        await option.click()
        try:
            t_toast, text = await wait_toast(page, f"^{level}: ", before, args.confirm_timeout_s
                                             if attempt == 2 else CALL_RETRY_S, shared, reader)
            break
        except Lost:
            await settle(page, 0.3)
            if await chosen.count():  # saved, shown chosen; its toast never came
                reader.calls_untoasted.append(level)
                reader.calls_confirmed[level] = value
                return
            if attempt == 2:
                raise
            reader.calls_reclicked += 1
    reader.call_ms.append(t_toast - t0)
    reader.calls_confirmed[level] = text.split(": ", 1)[1].strip()
    await settle(page, 0.1)


async def committee(browser: Any, url: str, out: dict[str, Any]) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(60_000)
    try:
        await sign_in(page, url, "adjudicator1", "adjudicator1")
        await page.get_by_role("link", name="Adjudication").click()
        await settle(page, 1.0)
        form = page.locator("[data-testid=stForm]").filter(
            has=page.get_by_role("button", name="Cast vote"))
        await form.wait_for(timeout=60_000)
        out["dispute"] = (await page.get_by_role("heading").filter(
            has_text=re.compile(" · study ")).first.inner_text()).strip()
        await form.locator("label").filter(has_text=re.compile(r"^Fractured$")).click()
        await form.get_by_label("Rationale (required)").fill("Load test: endplate step on two slices.")
        t0 = time.monotonic()
        await form.get_by_role("button", name="Cast vote").click()
        await page.get_by_text(re.compile(r"Vote recorded|already voted")).first.wait_for(
            timeout=60_000)
        out["vote_s"] = time.monotonic() - t0
        out["voted"] = True
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        await context.close()


async def admin_predict(browser: Any, url: str, out: dict[str, Any]) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(60_000)
    try:
        await sign_in(page, url, "admin", "admin")
        await page.get_by_role("link", name="Models").click()
        await settle(page, 1.0)
        button = page.get_by_role("button", name=re.compile(r"^Predict all \d+ studies$"))
        await button.click()
        out["clicked"] = True
        await page.locator("[data-testid=stProgress]").first.wait_for(timeout=60_000)
        out["progress_shown"] = True
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        await context.close()


# --- the run -------------------------------------------------------------------------------------


async def one_reader_reference(browser: Any, team: Team, args: argparse.Namespace) -> list[float]:
    shared = Shared(total_boxes=args.boxes)
    r = Reader("bench01")
    ref_args = argparse.Namespace(**{**vars(args), "calls": 0})
    await reader_run(browser, r, shared, team.url, ref_args, lambda: None)
    if r.errors:
        print(f"reference reader errors: {r.errors}", flush=True)
    return r.box_ms


async def one_wire_reader_reference(team: Team, args: argparse.Namespace) -> list[float]:
    """The same reader alone over the websocket (its boxes on other slices of its study)."""
    shared = Shared(total_boxes=args.boxes)
    r = Reader("bench01")
    ref_args = argparse.Namespace(**{**vars(args), "calls": 0, "wire_think_s": 0.5})
    await wire_reader_run(r, shared, team.url, ref_args, lambda: None)
    if r.errors:
        print(f"websocket reference reader errors: {r.errors}", flush=True)
    return r.box_ms


async def load(browser: Any, team: Team, args: argparse.Namespace, first: int) -> dict[str, Any]:
    readers = [Reader(f"bench{i:02d}") for i in range(first, first + args.readers)]
    shared = Shared(total_boxes=len(readers) * args.boxes)
    side: dict[str, dict[str, Any]] = {"committee": {}, "admin": {}}
    sem = asyncio.Semaphore(args.concurrency)
    kill_event = asyncio.Event()

    def on_box() -> None:
        shared.confirmed += 1
        if shared.kill_at is None and shared.confirmed >= shared.total_boxes // 2:
            kill_event.set()

    n_browsers = len(readers) - args.wire_readers

    async def run_one(r: Reader, i: int) -> None:
        if i >= n_browsers:  # over the websocket: light enough to run all at once
            shared.started += 1
            await wire_reader_run(r, shared, team.url, args, on_box)
            return
        async with sem:
            shared.started += 1
            await reader_run(browser, r, shared, team.url, args, on_box)

    async def killer() -> None:
        await kill_event.wait()
        routes = team.routes()
        active = [r for r in readers if r.route and not r.done]

        def served(i: int) -> list[Reader]:
            return [r for r in active if routes.get(r.route) == team.replica_ports[i]]

        # the replica that serves readers now; of two, the one with more readers in Chromium
        # (Streamlit's own front end reconnecting is what a reader sees)
        victim = max((0, 1), key=lambda i: (sum(r.kind == "browser" for r in served(i)),
                                           len(served(i))))
        port = team.replica_ports[victim]
        on_victim = served(victim)
        for r in on_victim:
            r.affected = True
        shared.killed_port = port
        shared.kill_at = time.monotonic()
        team.kill_replica(victim)
        print(f"SIGKILL replica {victim} (port {port}) after {shared.confirmed} confirmed boxes; "
              f"{len(on_victim)} active readers on it: {[r.username for r in on_victim]}", flush=True)

    t0 = time.monotonic()
    tasks = [asyncio.create_task(run_one(r, i)) for i, r in enumerate(readers)]
    kill_task = asyncio.create_task(killer())
    await asyncio.sleep(2)
    side_tasks = [asyncio.create_task(committee(browser, team.url, side["committee"])),
                  asyncio.create_task(admin_predict(browser, team.url, side["admin"]))]
    done, pending = await asyncio.wait([*tasks, *side_tasks], timeout=args.time_limit_s)
    timed_out = bool(pending)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    kill_task.cancel()
    return {"readers": readers, "shared": shared, "side": side, "wall_s": time.monotonic() - t0,
            "timed_out": timed_out}


def db_check(team: Team, readers: list[Reader]) -> dict[str, Any]:
    lost = doubled = unconfirmed = calls_lost = calls_doubled = 0
    notes: list[str] = []
    with team.db() as con:
        for r in readers:
            rows = con.execute(
                "SELECT b.slice_index, b.x, b.y, b.width, b.height FROM boxes b JOIN users u "
                "ON u.id = b.reader_id WHERE u.username = %s AND b.deleted_at IS NULL "
                "AND b.source = 'drawn'", (r.username,)).fetchall()
            geoms: dict[tuple[Any, ...], int] = {}
            for row in rows:
                geoms[tuple(row)] = geoms.get(tuple(row), 0) + 1
            # a doubled write is the same box (slice and geometry) stored twice; two boxes on one
            # slice are two boxes (a drag can land on a slice the viewer had not settled on yet)
            dup = sum(n - 1 for n in geoms.values() if n > 1)
            doubled += dup
            # a confirmed save that moved or deleted a box (a drag that began on one) is no new box
            conf = len(r.boxes_confirmed) - r.box_events.get("changed", 0) \
                - r.box_events.get("deleted", 0)
            if len(rows) - dup < conf:
                lost += conf - (len(rows) - dup)
                notes.append(f"{r.username}: {conf} boxes confirmed, {len(rows)} stored; box "
                             f"events it posted: {r.box_events}")
            elif len(rows) - dup > conf:
                unconfirmed += len(rows) - dup - conf
            if dup:
                notes.append(f"{r.username}: {dup} doubled box(es)")
            calls = con.execute(
                "SELECT l.level, l.call FROM level_labels l JOIN users u ON u.id = l.reader_id "
                "WHERE u.username = %s", (r.username,)).fetchall()
            stored: dict[str, list[str]] = {}
            for level, call in calls:
                stored.setdefault(level, []).append(call)
            for level, value in r.calls_confirmed.items():
                got = stored.get(level, [])
                if len(got) > 1:
                    calls_doubled += len(got) - 1
                    notes.append(f"{r.username}: level {level} stored {len(got)} times")
                want = value.lower().replace(" ", "_")
                if not got or got[-1] != want:
                    calls_lost += 1
                    notes.append(f"{r.username}: level {level} confirmed {want}, stored {got}")
        votes = con.execute(
            "SELECT v.dispute_id, count(*) FROM votes v JOIN users u ON u.id = v.voter_id "
            "WHERE u.username = 'adjudicator1' GROUP BY v.dispute_id").fetchall()
        jobs = con.execute("SELECT kind, status, total, done, predicted, failures, error "
                           "FROM prediction_jobs ORDER BY id").fetchall()
    return {"lost": lost, "doubled": doubled, "unconfirmed": unconfirmed, "calls_lost": calls_lost,
            "calls_doubled": calls_doubled, "notes": notes, "votes": votes, "jobs": jobs}


def wait_job(team: Team, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with team.db() as con:
            row = con.execute(
                "SELECT count(*) FROM prediction_jobs WHERE status = 'running'").fetchone()
            running = row[0] if row else 0
        if not running:
            return
        time.sleep(2)


def niced_chromium(nice: int, folder: Path) -> str:
    """The Chromium to launch: Debian's, or a wrapper that starts it in a scheduler autogroup of
    niceness ``nice``. A process's own niceness would not do: Chromium (as root) sets its
    processes' own, and it counts only inside an autogroup (the team's servers run in sessions,
    so autogroups, of their own)."""
    if nice <= 0:
        return CHROMIUM
    wrapper = folder / "chromium-niced"
    wrapper.write_text("#!/bin/sh\n"
                       f"[ -w /proc/self/autogroup ] && echo {nice} > /proc/self/autogroup\n"
                       f'exec {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def machine_cpu() -> dict[str, float]:
    """The machine's CPU seconds so far (/proc/stat): ``busy``, ``iowait`` and ``idle``."""
    tick = os.sysconf("SC_CLK_TCK")
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {"busy": (sum(v) - v[3] - v[4]) / tick, "iowait": v[4] / tick, "idle": v[3] / tick}


def cpu_seconds_by_kind(team_pids: set[int]) -> dict[str, float]:
    """CPU seconds (user + system, with the children each reaped) used so far by this machine's
    live processes: ``browser`` (Chromium), ``team`` (the processes of ``team_pids`` and their
    descendants, PostgreSQL, nginx) and ``other`` (this script, Playwright's driver, the rest)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(proc.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick, cmd)

    def in_team(pid: int) -> bool:
        for _ in range(64):
            if pid in team_pids:
                return True
            if pid not in procs or pid <= 1:
                return False
            pid = procs[pid][0]
        return False

    out = {"browser": 0.0, "team": 0.0, "other": 0.0}
    for pid, (_ppid, used, cmd) in procs.items():
        if "chrom" in cmd:
            out["browser"] += used
        elif in_team(pid) or cmd.startswith(("postgres", "nginx", "/usr/lib/postgresql")):
            out["team"] += used
        else:
            out["other"] += used
    return out


async def main_async(args: argparse.Namespace, team: Team) -> int:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=niced_chromium(args.browser_nice, team.tmp),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            ref = await one_reader_reference(browser, team, args)
            print(f"reference, 1 reader alone (bench01): box save {fmt(ref)}", flush=True)
            alone = team.box_route_ms()
            print(f"  of it the server: {fmt(alone['nginx'])}; the route's sign-in check "
                  f"{fmt(alone['auth'])}; its transaction {fmt(alone['save'])}", flush=True)
            wire_ref: list[float] = []
            if args.wire_readers:
                wire_ref = await one_wire_reader_reference(team, args)
                print(f"reference, 1 reader alone over the websocket (bench01): box save "
                      f"{fmt(wire_ref)}", flush=True)
                alone = team.box_route_ms()
            pids = {p.pid for p in team.procs.values()}
            cpu0, m0 = cpu_seconds_by_kind(pids), machine_cpu()
            res = await load(browser, team, args, first=2)
            res["alone"] = alone
            cpu1, m1 = cpu_seconds_by_kind(pids), machine_cpu()
        finally:
            await browser.close()
    readers: list[Reader] = res["readers"]
    shared: Shared = res["shared"]
    wait_job(team, 60)
    check = db_check(team, readers)

    before = [v for r in readers for v in r.box_ms]
    after = [v for r in readers for v in r.box_after_kill]
    every = before + after
    calls = [v for r in readers for v in r.call_ms]
    signs = [r.sign_in_s for r in readers if r.sign_in_s is not None]
    errors = [(r.username, e) for r in readers for e in r.errors]
    affected = [r for r in readers if r.affected]
    ready = [r.back_ready_s for r in affected if r.back_ready_s is not None]
    saved = [r.back_saved_s for r in affected if r.back_saved_s is not None]
    paged = [r.back_page_s for r in affected if r.back_page_s is not None]
    n_conf = sum(len(r.boxes_confirmed) for r in readers)
    print()
    print(f"box saves served by: {'a route server (python -m spine_web)' if team.route_server else 'the replicas'}")
    print(f"== team load: {len(readers)} readers: {len(readers) - args.wire_readers} in Chromium "
          f"(waves of at most {args.concurrency} browser contexts in one Chromium), "
          f"{args.wire_readers} over the websocket (all at once, ~{args.wire_think_s:g} s on a "
          f"slice before each box); {args.boxes} boxes + {args.calls} level calls each; "
          f"{res['wall_s']:.0f} s{' (TIME LIMIT hit)' if res['timed_out'] else ''}; "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    used = {k: cpu1[k] - cpu0[k] for k in cpu0}
    print(f"CPU seconds in the load phase: browsers {used['browser']:.0f} (at niceness "
          f"{args.browser_nice}), team {used['team']:.0f}, other processes {used['other']:.0f}; "
          f"the machine: busy {m1['busy'] - m0['busy']:.0f}, waiting on I/O "
          f"{m1['iowait'] - m0['iowait']:.0f}, idle {m1['idle'] - m0['idle']:.0f}")
    print(f"readers finished: {sum(r.done for r in readers)}/{len(readers)}; boxes confirmed "
          f"{n_conf}/{len(readers) * args.boxes}; calls confirmed "
          f"{sum(len(r.calls_confirmed) for r in readers)} levels")
    print(f"sign-in (click -> first page): {fmt(signs, 's', 1.0)}"
          if not signs else f"sign-in (click -> first page): p50 {pct(signs, .5):.2f} s, "
          f"p95 {pct(signs, .95):.2f} s, max {max(signs):.2f} s (n={len(signs)})")
    print(f"box save, all readers: {fmt(every)}")
    for kind, what in (("browser", "in Chromium: pointerup -> the viewer's confirmed saves N+1"),
                       ("wire", "over the websocket: the viewer's POST -> its answer")):
        of = [r for r in readers if r.kind == kind]
        if of:
            print(f"  {len(of)} readers {what}: {fmt([v for r in of for v in r.box_ms + r.box_after_kill])}")
    print(f"  before the kill: {fmt(before)}")
    print(f"  after the kill (one replica left): {fmt(after)}")
    server = {k: v[len(res["alone"][k]):] for k, v in team.box_route_ms().items()}
    print(f"  of it the request, as the browser's network stack timed it (Resource Timing, "
          f"start -> response end): "
          f"{fmt([v for r in readers if r.kind == 'browser' for v in r.box_fetch_ms])}")
    print(f"  of it the server (nginx: POST /spine-box-events): "
          f"{fmt(server['nginx'])}")
    print(f"    the app's answer (nginx's upstream time): {fmt(server['upstream'])}")
    print(f"    in it, the route's sign-in check: {fmt(server['auth'])}; its transaction: "
          f"{fmt(server['save'])}")
    print(f"level call (click -> toast): {fmt(calls)}")
    untoasted = [f"{r.username} {lvl}" for r in readers for lvl in r.calls_untoasted]
    print(f"  saved and shown chosen, but no toast seen: {len(untoasted)}"
          + (f" ({', '.join(untoasted)})" if untoasted else "")
          + f"; clicked again (no toast, not chosen after {CALL_RETRY_S:g} s): "
          f"{sum(r.calls_reclicked for r in readers)}")
    print(f"killed replica port {shared.killed_port}; its active readers: {len(affected)} "
          f"({sum(r.kind == 'wire' for r in affected)} over the websocket); reloaded by hand: "
          f"{sum(r.reloaded for r in affected)}")
    for r in affected:
        print(f"  {r.username} ({r.kind}): next confirmed box {r.back_saved_s or float('nan'):.1f} s, "
              f"page follows {r.back_page_s or float('nan'):.1f} s after the kill")
    print("  back at work (kill -> viewer ready, signed in): "
          + (f"p50 {pct(ready, .5):.1f} s, max {max(ready):.1f} s" if ready else "none measured"))
    print("  kill -> next confirmed box: "
          + (f"p50 {pct(saved, .5):.1f} s, max {max(saved):.1f} s" if saved else "none measured"))
    print("  kill -> the page follows the viewer again (its box panel shows the slice): "
          + (f"p50 {pct(paged, .5):.1f} s, max {max(paged):.1f} s" if paged else "none measured"))
    print(f"committee: {res['side']['committee']}; votes in db (dispute, count): {check['votes']}")
    print(f"admin predict all: {res['side']['admin']}; jobs in db: {check['jobs']}")
    kinds: dict[str, int] = {}
    for r in readers:
        for kind, n in r.box_events.items():
            kinds[kind] = kinds.get(kind, 0) + n
    print(f"box events the viewers posted, by type: {kinds} (a drag that began on a box moves it)")
    print(f"drags the bench made again (they began off the axial view: the page had scrolled or "
          f"shifted): {sum(r.drag_misses for r in readers)}")
    print(f"errors: {len(errors)}")
    for who, e in errors[:20]:
        print(f"  {who}: {e}")
    print(f"database: boxes lost {check['lost']}, doubled {check['doubled']}, stored unconfirmed "
          f"{check['unconfirmed']}; level calls lost {check['calls_lost']}, doubled "
          f"{check['calls_doubled']}")
    for n in check["notes"][:20]:
        print(f"  {n}")
    ref_p50 = pct(ref, 0.5) if ref else float("nan")
    print(f"reference: box save p50 with 1 reader alone {ref_p50:.0f} ms; under load p50 "
          f"{pct(every, .5):.0f} ms ({pct(every, .5) / ref_p50:.1f}x)")
    if wire_ref:
        wired = [v for r in readers if r.kind == "wire" for v in r.box_ms + r.box_after_kill]
        print(f"reference over the websocket: box save p50 alone {pct(wire_ref, .5):.0f} ms; under "
              f"load p50 {pct(wired, .5):.0f} ms ({pct(wired, .5) / pct(wire_ref, .5):.1f}x)")
    vote_ok = all(c == 1 for _, c in check["votes"]) and len(check["votes"]) == (
        1 if res["side"]["committee"].get("voted") else 0)
    writes_ok = (check["lost"] + check["doubled"] + check["calls_lost"] + check["calls_doubled"] == 0
                 and vote_ok)
    p95_ok = bool(every) and pct(every, 0.95) <= 300
    back = [max(r.back_saved_s, r.back_page_s)
            if r.back_saved_s is not None and r.back_page_s is not None else float("inf")
            for r in affected]
    back_ok = bool(affected) and max(back) <= 10
    print(f"{'PASS' if writes_ok else 'MISS'} 0 lost or doubled writes (boxes, calls, vote)")
    print(f"{'PASS' if p95_ok else 'MISS'} p95 box save <= 300 ms ({pct(every, .95):.0f} ms)")
    print(f"{'PASS' if back_ok else 'MISS'} killed replica's readers back at work (kill -> next "
          "confirmed box and the page following again) <= 10 s "
          f"({f'max {max(back):.1f} s' if affected else 'no reader was on it'})")
    return 0 if writes_ok and p95_ok and back_ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=30)
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--calls", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=10, help="browser contexts at once")
    ap.add_argument("--time-limit-s", type=float, default=900, help="for the load phase")
    ap.add_argument("--studies", type=int, default=3)
    ap.add_argument("--shape", default="96x160x160")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--confirm-timeout-s", type=float, default=30)
    ap.add_argument("--reload-after-s", type=float, default=6)
    ap.add_argument("--shots", default="", help="folder for screenshots of failures")
    ap.add_argument("--keep-logs", default="", help="copy the team's logs here at the end")
    ap.add_argument("--browser-nice", type=int, default=0,
                    help="start Chromium at this niceness (e.g. 19): the readers' browsers, "
                         "which on a real team run on their own machines, yield the CPU to the "
                         "servers")
    ap.add_argument("--wire-readers", type=int, default=0,
                    help="of --readers, this many driven over Streamlit's websocket without a "
                         "browser (benchmarks/streamlit_wire.py); the rest in Chromium")
    ap.add_argument("--wire-think-s", type=float, default=4.0,
                    help="a websocket reader's pause on a slice before drawing its box (mean; "
                         "drawn from 0.5x to 1.5x)")
    ap.add_argument("--routes-in-replicas", action="store_true",
                    help="box saves served inside the replicas (server.py), not by a route server")
    args = ap.parse_args()
    if args.shots:
        ARGS_SHOTS.append(args.shots)
    team = Team(args.pg, args.studies, args.shape, args.readers + 1,
                 route_server=not args.routes_in_replicas)
    team.keep_logs = args.keep_logs

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        team.start()
        return asyncio.run(main_async(args, team))
    except KeyboardInterrupt:
        print("interrupted: stopping the team", file=sys.stderr)
        return 130
    finally:
        team.stop()


if __name__ == "__main__":
    sys.exit(main())
