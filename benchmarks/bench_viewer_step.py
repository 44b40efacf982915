"""Benchmark: the client-side viewer (spine_viewer) against the paint floor, in Debian's Chromium.

Starts a small Streamlit app on loopback, served through ``st.App`` with the volume route as
``server.py`` serves app.py (a signed-in browser fetches the chunks over ``/spine-volume/``; with
``--rerun-path`` the study is also opened without the session cookie: the old path, one rerun per
chunk), that mounts ``spine_viewer.workstation`` on a ``--shape`` study (default 300×512×512
int16 + uint8 labels, from ``spine_core.phantom``; or ``--synthetic`` NumPy noise), and prints side by side:

1. **paint floor**: a bare page whose canvas (shown at the viewer's size) swaps two precomputed
   512×512 images with ``putImageData`` on each keydown;
2. **viewer**: the new viewer, axial 512×512 shown at >= 700 px, ↑/↓ steps;
3. (``--server-path``) today's server-rendered viewer, by running benchmarks/bench_browser_step.py.

Per path: key press -> painted, by the Event Timing API (``PerformanceObserver`` type ``event``,
``durationThreshold`` 16: presses without an entry took < 16 ms and count as 16, an upper bound)
and by keydown -> second ``requestAnimationFrame`` (the frame with the change is complete); median
and p90, and the ratio viewer/floor. Then: window/level right-drag pointermove -> painted; presses
lost at 20/s and with a held key; opening the study (cold: chunks compressed on the fly, warm: from
the process's chunk cache): first slice on screen and whole volume ready, from navigation start;
and the JS heap (+ ArrayBuffer backing stores, after GC) above the same app without the viewer,
relative to the volume's int16 bytes. Opening is also measured as a reload in the same browser
(the chunks from its HTTP cache). Targets: median <= 16 ms and <= 1.2x the floor, p90 <= 33 ms;
first slice <= 1.0 s, whole volume <= 5 s; memory <= 2.5x. The machine load is printed: other work
on the same cores slows everything here.

Usage: ``.venv/bin/python benchmarks/bench_viewer_step.py [--shape 300x512x512] [--steps 50]
[--synthetic | --region cervical|thoracolumbar|whole] [--chunk-mb 16] [--rerun-path] [--server-path]``
(a whole spine: ``--region whole --shape 640x512x512``)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from app_server import free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SPINE_TEST_CHROMIUM", "/usr/bin/chromium")

APP = """
import os, sys
import numpy as np
import streamlit as st
sys.path.insert(0, {root!r})
from spine_core.volume import Volume
from spine_viewer import ViewerSource, workstation

st.set_page_config(page_title="bench", layout="wide")
print("BENCH_RUN", flush=True)
if st.query_params.get("noviewer") == "1":
    st.write("no viewer")
    st.stop()

@st.cache_resource
def source():
    image = np.load({image!r}, mmap_mode="r")
    mask = np.load({mask!r}, mmap_mode="r") if {mask!r} else None
    return ViewerSource(Volume(image, np.load({affine!r})), mask)

workstation(st.query_params.get("vid", "bench"), source(), key="viewer", window="bone",
            chunk_bytes=int({chunk_bytes}))
"""

#: The served app, as server.py serves app.py: the bench app plus the volume route (grants of
#: this process, one in-memory session whose token goes to ``token_file`` for the browser's cookie).
SERVER = """
import sys
sys.path.insert(0, {root!r})
import streamlit as st
from spine_core.signin_sessions import SessionTokens
from spine_viewer import grants
from spine_web import COOKIE
from spine_web.volume_routes import ROUTE, volume_routes

tokens = SessionTokens()
with open({token_file!r}, "w") as fh:
    fh.write(tokens.issue(1))
grants.serve_at(ROUTE, COOKIE)
app = st.App({app!r}, routes=volume_routes(tokens, grants.default_registry()))
"""

FLOOR = """<!doctype html><html><body style="margin:0;background:#000">
<canvas id="c" width="512" height="512" tabindex="0" style="width:{px}px;height:{px}px"></canvas>
<script>
const c = document.getElementById('c'), ctx = c.getContext('2d', {{alpha: false}});
const imgs = [0, 1].map(s => {{
  const d = ctx.createImageData(512, 512), u = new Uint32Array(d.data.buffer);
  for (let i = 0; i < u.length; i++) {{ const g = (i * 7 + s * 97 + (i >> 9) * 3) & 255;
    u[i] = 0xff000000 | (g << 16) | (g << 8) | g; }}
  return d; }});
let n = 0;
window.addEventListener('keydown', () => {{ n ^= 1; ctx.putImageData(imgs[n], 0, 0); }});
c.addEventListener('contextmenu', (e) => e.preventDefault());
c.addEventListener('pointermove', (e) => {{ if (e.buttons & 2) {{ n ^= 1; ctx.putImageData(imgs[n], 0, 0); }} }});
ctx.putImageData(imgs[0], 0, 0);
</script></body></html>"""

#: Installed once per page: Event Timing entries of keydowns, and keydown -> 2nd rAF times.
PROBE = """() => {
  if (window.__et) return;
  window.__et = []; window.__raf = []; window.__move = [];
  const take = (entries) => { for (const e of entries) if (e.name === 'keydown') window.__et.push(e.duration); };
  window.__obs = new PerformanceObserver((list) => take(list.getEntries()));
  window.__obs.observe({type: 'event', durationThreshold: 16, buffered: false});
  window.__flush = () => take(window.__obs.takeRecords());  // force delivery of pending entries
  window.addEventListener('keydown', (e) => {
    const t0 = e.timeStamp;
    requestAnimationFrame(() => requestAnimationFrame(() => window.__raf.push(performance.now() - t0)));
  }, {capture: true});
  window.addEventListener('pointermove', (e) => {
    if (!(e.buttons & 2)) return;
    const t0 = e.timeStamp;
    requestAnimationFrame(() => requestAnimationFrame(() => window.__move.push(performance.now() - t0)));
  }, {capture: true});
}"""

VIEWER = "[data-testid=sv-root]"


def _p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def make_study(folder: Path, shape: tuple[int, int, int], synthetic: bool,
               region: str = "cervical") -> tuple[Path, Path, Path]:
    """image.npy (int16), labels.npy (uint8) and affine.npy of a study, written to ``folder``
    (``region``: the cervical phantom, or the thoracolumbar / whole-spine one)."""
    image, labels, affine = folder / "image.npy", folder / "labels.npy", folder / "affine.npy"
    if synthetic:
        rng = np.random.default_rng(7)
        arr = np.lib.format.open_memmap(image, mode="w+", dtype=np.int16, shape=shape)
        lab = np.lib.format.open_memmap(labels, mode="w+", dtype=np.uint8, shape=shape)
        rr, cc = np.ogrid[: shape[1], : shape[2]]
        disc = (rr - shape[1] / 2) ** 2 + (cc - shape[2] / 2) ** 2 < (shape[1] / 3) ** 2
        for k in range(shape[0]):
            arr[k] = np.where(disc, 40, -1000) + rng.normal(0, 15, shape[1:]).astype(np.int16)
            lab[k] = np.where(disc, 1 + (k * 7) // shape[0], 0)
        arr.flush()
        lab.flush()
        np.save(affine, np.array([[0, 0, 0.4, 0], [0, 0.4, 0, 0], [0.7, 0, 0, 0], [0, 0, 0, 1.0]]))
    elif region != "cervical":
        from spine_core.phantom.spine_study import generate_spine_study

        whole = generate_spine_study(7, shape, region=region)
        np.save(image, np.asarray(whole.image.array))
        np.save(labels, np.asarray(whole.labels.array))
        np.save(affine, whole.image.affine)
    else:
        from spine_core.phantom import generate_study

        study = generate_study(7, shape)
        np.save(image, np.asarray(study.image.array))
        np.save(labels, np.asarray(study.labels.array))
        np.save(affine, study.image.affine)
    return image, labels, affine


def key_latencies(page: Any, steps: int, target: str | None) -> tuple[list[float], list[float]]:
    """(Event Timing per press, 16 for presses below the threshold; keydown -> 2nd rAF)."""
    page.evaluate(PROBE)
    if target:
        page.locator(target).focus()
    page.evaluate("() => { window.__et.length = 0; window.__raf.length = 0; }")
    for i in range(steps):
        page.keyboard.press("ArrowUp" if (i // 5) % 2 == 0 else "ArrowDown")
        page.wait_for_timeout(120)
    page.wait_for_timeout(300)
    et = [float(v) for v in page.evaluate("() => { window.__flush(); return window.__et; }")]
    raf = [float(v) for v in page.evaluate("() => window.__raf")]
    et = et + [16.0] * max(0, steps - len(et))
    return et, raf


def wl_drag(page: Any, box: dict[str, float]) -> list[float]:
    """Right-drag over ``box`` (40 moves, 40 ms apart): pointermove -> second rAF, per move."""
    page.evaluate("() => { window.__move.length = 0; }")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    for i in range(40):
        page.mouse.move(cx + 3 * i, cy + 2 * i)
        page.wait_for_timeout(40)
    page.mouse.up(button="right")
    page.wait_for_timeout(300)
    return [float(v) for v in page.evaluate("() => window.__move")]


def heap(page: Any) -> float:
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    time.sleep(0.5)
    cdp.send("HeapProfiler.collectGarbage")
    use = cdp.send("Runtime.getHeapUsage")
    cdp.detach()
    return float(use["usedSize"] + use.get("backingStorageSize", 0))


def shown_index(page: Any) -> int:
    return int(page.locator("[data-testid=sv-vp-axial] .sv-info").get_attribute("data-index"))


def new_context(browser: Any, cookie: str | None, url: str) -> Any:
    """A browser context, signed in (the session cookie the volume route checks) or not."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    if cookie:
        ctx.add_cookies([{"name": "spine_session", "value": cookie, "url": url}])
    return ctx


def _opened(page: Any) -> dict[str, Any]:
    page.locator(f"{VIEWER}[data-complete='1']").wait_for()
    return dict(page.locator(VIEWER).evaluate(
        "e => ({mount: +e.dataset.mountAt, first: +e.dataset.firstPaint, done: +e.dataset.completeAt,"
        " bytes: e.svTimeline.reduce((n, t) => n + t.bytes, 0), chunks: e.svTimeline.length,"
        " transport: e.dataset.transport, sent: e.svWorkstation.channel.sent,"
        " wait: e.svTimeline.map(t => t.asked ? t.arrived - t.asked : 0),"
        " decode: e.svTimeline.map(t => t.decoded - t.arrived)})"))


def open_study(browser: Any, url: str, cookie: str | None,
               reload: bool = False) -> dict[str, Any]:
    """Open ``url`` in a fresh context; with ``reload``, measure the reload that follows."""
    ctx = new_context(browser, cookie, url)
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    data = _opened(page)
    if reload:
        page.reload()
        data = _opened(page)
    ctx.close()
    return data


def run(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    shape = tuple(int(v) for v in args.shape.split("x"))
    int16_bytes = int(np.prod(shape)) * 2
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        t0 = time.perf_counter()
        image, labels, affine = make_study(Path(tmp), shape, args.synthetic,  # type: ignore[arg-type]
                                           args.region)
        print(f"study {args.shape} ({'synthetic' if args.synthetic else args.region + ' phantom'}): "
              f"{time.perf_counter() - t0:.1f} s to make; int16 {int16_bytes / 2**20:.0f} MiB")
        app = Path(tmp) / "bench_app.py"
        app.write_text(textwrap.dedent(APP.format(root=str(ROOT), image=str(image), mask=str(labels),
                                                  affine=str(affine),
                                                  chunk_bytes=int(args.chunk_mb * 2**20))))
        token_file = Path(tmp) / "token"
        server = Path(tmp) / "bench_server.py"
        server.write_text(textwrap.dedent(SERVER.format(root=str(ROOT), app=str(app),
                                                        token_file=str(token_file))))
        port = free_port()
        log = open(Path(tmp) / "streamlit.log", "wb")  # closed below
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(server), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {}
        try:
            wait_http(f"{url}/_stcore/health", proc)
            cookie = token_file.read_text()  # signed in: the volume travels over the route
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                # a server that has shown a study before (imports done, the component's bundle
                # served once), opening another study whose chunks it has never compressed
                # ("cold"), then that study again ("warm")
                warm_up_ctx = new_context(browser, cookie, url)
                warm_up = warm_up_ctx.new_page()
                warm_up.goto(f"{url}/?vid=warmup")
                warm_up.locator(f"{VIEWER}[data-complete='1']").wait_for(timeout=120_000)
                warm_up_ctx.close()
                # the floor of any Streamlit element: the same app's first text, without the viewer
                bare = browser.new_page()
                bare.goto(f"{url}/?noviewer=1")
                results["bare"] = float(bare.wait_for_function(
                    "() => document.body.innerText.includes('no viewer') && performance.now()",
                    polling="raf", timeout=120_000).json_value())
                bare.close()
                results["cold"] = open_study(browser, f"{url}/?vid=cold", cookie)
                results["warm"] = open_study(browser, f"{url}/?vid=cold", cookie)
                results["reload"] = open_study(browser, f"{url}/?vid=cold", cookie, reload=True)
                if args.rerun_path:
                    # no session cookie: no grant, the chunks come through one rerun each
                    results["rerun cold"] = open_study(browser, f"{url}/?vid=rerun", None)
                    results["rerun warm"] = open_study(browser, f"{url}/?vid=rerun", None)

                ctx = new_context(browser, cookie, url)
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                page.goto(f"{url}/?noviewer=1")
                page.get_by_text("no viewer").wait_for()
                page.wait_for_timeout(1000)
                results["heap_empty"] = heap(page)
                page.goto(f"{url}/?vid=cold")
                page.locator(f"{VIEWER}[data-complete='1']").wait_for()
                page.wait_for_timeout(1500)
                results["heap_viewer"] = heap(page)
                box = page.locator("[data-testid=sv-vp-axial] canvas.sv-img").bounding_box()
                results["shown_px"] = box["width"]
                et, raf = key_latencies(page, 5, VIEWER)  # warm-up
                et, raf = key_latencies(page, args.steps, VIEWER)
                results["viewer"] = (et, raf)
                results["wl"] = wl_drag(page, box)
                # presses at 20/s and a held key: none lost
                page.locator(VIEWER).focus()
                start = shown_index(page)
                for _ in range(20):
                    page.keyboard.press("ArrowUp")
                    page.wait_for_timeout(50)
                page.wait_for_timeout(300)
                results["lost20"] = 20 - (shown_index(page) - start)
                start = shown_index(page)
                for _ in range(30):
                    page.keyboard.down("ArrowDown")
                    page.wait_for_timeout(33)
                page.keyboard.up("ArrowDown")
                page.wait_for_timeout(300)
                results["lost_held"] = 30 - (start - shown_index(page))
                ctx.close()

                ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = ctx.new_page()
                page.set_content(FLOOR.format(px=int(round(results["shown_px"]))))
                page.wait_for_timeout(500)
                key_latencies(page, 5, "#c")
                results["floor"] = key_latencies(page, args.steps, "#c")
                results["wl_floor"] = wl_drag(page, page.locator("#c").bounding_box())
                ctx.close()
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    report(results, int16_bytes, args)
    if args.server_path:
        print("\n-- today's server-rendered viewer (benchmarks/bench_browser_step.py) --", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_browser_step.py"),
                        "--shape", "200x512x512", "--steps", str(min(args.steps, 20))], cwd=ROOT, check=False)
    print(f"load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


def report(r: dict[str, Any], int16_bytes: int, args: argparse.Namespace) -> None:
    f_et, f_raf = r["floor"]
    v_et, v_raf = r["viewer"]
    print(f"\nkey press -> painted, {args.steps} presses each (axial 512x512 shown at "
          f"{r['shown_px']:.0f} px; Event Timing: presses under 16 ms count as 16)")
    print(f"{'path':<14}{'ET median':>10}{'ET p90':>8}{'ET >=16':>9}{'2xrAF med':>11}{'2xrAF p90':>11}")
    for name, et, raf in (("paint floor", f_et, f_raf), ("viewer", v_et, v_raf)):
        over = sum(1 for v in et if v > 16)
        print(f"{name:<14}{statistics.median(et):>9.1f} {_p90(et):>7.1f} {over:>5}/{len(et):<3}"
              f"{statistics.median(raf):>10.1f} {_p90(raf):>10.1f}")
    print(f"ratio viewer/floor: Event Timing median {statistics.median(v_et) / statistics.median(f_et):.2f}, "
          f"2xrAF median {statistics.median(v_raf) / statistics.median(f_raf):.2f}  "
          f"(targets: median <= 16 ms, <= 1.2x floor, p90 <= 33 ms)")
    wl, wl_floor = r["wl"], r.get("wl_floor") or []
    if wl and wl_floor:
        print(f"window/level right-drag pointermove -> 2nd rAF: viewer median {statistics.median(wl):.1f} ms, "
              f"p90 {_p90(wl):.1f} ms over {len(wl)} moves; paint floor (swap on pointermove) median "
              f"{statistics.median(wl_floor):.1f} ms, p90 {_p90(wl_floor):.1f} ms; ratio "
              f"{statistics.median(wl) / statistics.median(wl_floor):.2f} (target <= 1.2x)")
    print(f"presses lost: 20 at 50 ms -> {r['lost20']}; held key (30 repeats at 33 ms) -> {r['lost_held']}")
    print(f"reference: the same Streamlit app without the viewer shows its first text "
          f"{r['bare'] / 1000:.2f} s after navigation (Streamlit's own start, a floor for any element)")
    what = {"cold": "compressed on the fly", "warm": "server's chunk cache",
            "reload": "a reload: the browser's HTTP cache"}
    for name in ("cold", "warm", "reload", "rerun cold", "rerun warm"):
        if name not in r:
            continue
        o = r[name]
        print(f"open {args.shape} ({name}: {what[name.split()[-1]]}; {o['transport']} path, "
              f"{o['sent']} messages to Python): "
              f"component mounted {o['mount'] / 1000:.2f} s, first slice {o['first'] / 1000:.2f} s, "
              f"whole volume {o['done'] / 1000:.2f} s after navigation; {o['chunks']} chunks, "
              f"{o['bytes'] / 2**20:.0f} MiB sent ({int16_bytes / max(o['bytes'], 1):.2f}x smaller than int16) "
              "(targets: first <= 1.0 s, whole <= 5 s)")
        print(f"  per chunk, asked -> frame arrived (server + transport) ms: "
              f"{' '.join(f'{v:.0f}' for v in o['wait'])}; arrived -> decoded ms: "
              f"{' '.join(f'{v:.0f}' for v in o['decode'])}")
    extra = r["heap_viewer"] - r["heap_empty"]
    print(f"JS heap + ArrayBuffers above the app without viewer: {extra / 2**20:.0f} MiB = "
          f"{extra / int16_bytes:.2f}x the int16 volume (includes the uint8 labels, 0.5x) (target <= 2.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="300x512x512", help="study SLICESxROWSxCOLS")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--synthetic", action="store_true", help="NumPy noise instead of the phantom")
    parser.add_argument("--region", default="cervical", choices=["cervical", "thoracolumbar", "whole"],
                        help="which phantom (default cervical; whole: a full-length spine)")
    parser.add_argument("--chunk-mb", type=float, default=16.0, help="raw MiB per streamed chunk")
    parser.add_argument("--rerun-path", action="store_true",
                        help="also open the study without a session cookie: the old path, one "
                             "Streamlit rerun per chunk (cold and warm)")
    parser.add_argument("--server-path", action="store_true",
                        help="also run benchmarks/bench_browser_step.py (today's server-rendered viewer)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
