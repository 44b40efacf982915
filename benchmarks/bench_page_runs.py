"""What one run of the Annotate page costs the server: a whole page run and the viewer's fragment
run (the slice a reader settled on), with the project's Streamlit settings against a reference run
with Streamlit's default ``runner.postScriptGC = true`` (a full ``gc.collect(2)`` after every run).

Both servers (``streamlit run server.py``) run one after the other on the same fresh SQLite demo
workspace (``spine bootstrap``, small studies). A reader is driven over Streamlit's websocket
(``streamlit_wire``, no browser): sign in, open Annotate, then ``--runs`` times a whole page run
and a slice commit. Prints p50/p95 of each and the ratio reference / project, plus the server's
resident memory after the runs (the GC setting must not let it grow).

Usage: ``.venv/bin/python benchmarks/bench_page_runs.py [--runs 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_server import free_port, wait_http  # noqa: E402
from streamlit_wire import WireSession, component_state, widget  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def drive(url: str, runs: int) -> dict[str, list[float]]:
    """Sign in as reader1, open Annotate, then time ``runs`` whole-page and fragment runs."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await http.get("/")
        s = WireSession(url, dict(http.cookies))
        await s.connect()
        run = await s.rerun(page="")
        ids = [run.find("text_input", "User name")[0].proto.id,
               run.find("text_input", "Password")[0].proto.id, run.find("button", "Sign in")[0].proto.id]
        run = await s.rerun([widget(ids[0], string_value="reader1"),
                             widget(ids[1], string_value="reader1"), widget(ids[2], trigger_value=True)])
        handover = run.component("session_cookie")
        if handover is None:
            raise SystemExit("not signed in")
        ticket = json.loads(handover.proto.json)["ticket"]
        await http.post("/spine-session", json={"ticket": ticket}, headers={"Origin": url})
        s.cookies = dict(http.cookies)
        await s.rerun([component_state(handover.proto.id, {"result": "ok"})])
        run = await s.rerun(page="annotate")
        viewer = run.component("workstation")
        if viewer is None:
            raise SystemExit("no viewer on Annotate")
        out: dict[str, list[float]] = {"page": [], "fragment": []}
        for i in range(runs + 5):  # the first 5 warm up
            t0 = time.perf_counter()
            await s.rerun()
            page = time.perf_counter() - t0
            k = 30 + i % 20
            t0 = time.perf_counter()
            await s.rerun([component_state(viewer.proto.id, {"slice": {
                "plane": "axial", "index": k, "cursor": [k, 80, 80]}})], fragment_id=viewer.fragment_id)
            if i >= 5:
                out["page"].append(page * 1000)
                out["fragment"].append((time.perf_counter() - t0) * 1000)
        await s.close()
        return out


def measure(env: dict[str, str], extra: list[str], runs: int) -> tuple[dict[str, list[float]], int]:
    port = free_port()
    proc = subprocess.Popen([str(VENV / "streamlit"), "run", "server.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc)
        times = asyncio.run(drive(f"http://127.0.0.1:{port}", runs))
        rss_kib = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        return times, rss_kib
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-page-runs-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        env.update({"SPINE_DATA_DIR": tmp, "SPINE_DB_URL": f"sqlite:///{tmp}/spine.db",
                    "SPINE_DEMO_STUDIES": "3", "SPINE_DEMO_SHAPE": "96x160x160"})
        subprocess.run([str(VENV / "spine"), "bootstrap", "--no-progress"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=600)
        ref, ref_rss = measure(env, ["--runner.postScriptGC", "true"], args.runs)
        ours, our_rss = measure(env, [], args.runs)
    print(f"Annotate, {args.runs} runs each, one reader over the websocket, SQLite")
    for kind in ("page", "fragment"):
        r50, o50 = pct(ref[kind], 0.5), pct(ours[kind], 0.5)
        print(f"  {kind:8s} run: reference (postScriptGC) p50 {r50:.0f} ms, p95 "
              f"{pct(ref[kind], .95):.0f} ms; project settings p50 {o50:.0f} ms, p95 "
              f"{pct(ours[kind], .95):.0f} ms; {r50 / o50:.1f}x faster")
    print(f"  server memory after the runs (RSS): reference {ref_rss / 1024:.0f} MiB, project "
          f"{our_rss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
