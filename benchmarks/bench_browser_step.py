"""Benchmark: one slice step in the viewer, from the key press to the new image on screen.

Starts the app on a fresh workspace (demo studies of ``--shape``, bootstrapped as
``scripts/start.sh`` does), signs in with Playwright in Debian's Chromium, opens the first case and
then, ``--steps`` times each:

* keyboard — ↑/↓ (the viewer's shortcut buttons, the fragment reruns);
* slider   — → / ← on the focused axial slider thumb;

timing in the page from the ``keydown`` event to the new axial image decoded and painted (the
next animation frame after ``img.decode()``). Prints median and 90th percentile per way of
stepping, and the median against the 250 ms target (ratio < 1 meets it).

Usage: ``.venv/bin/python benchmarks/bench_browser_step.py [--shape 200x512x512] [--steps 20]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app_server import free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SPINE_TEST_CHROMIUM", "/usr/bin/chromium")
TARGET_MS = 250.0

#: Installed on the axial image before a step; resolves with the milliseconds from the next
#: keydown to the changed image being decoded and painted.
ARM = """(img) => {
  const old = img.getAttribute('src');
  window.__step = new Promise((resolve, reject) => {
    let t0 = null;
    window.addEventListener('keydown', () => { t0 = performance.now(); },
                            { capture: true, once: true });
    const obs = new MutationObserver(() => {
      if (img.getAttribute('src') === old) return;
      obs.disconnect();
      img.decode().then(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
    });
    obs.observe(img, { attributes: true, attributeFilter: ['src'] });
    setTimeout(() => reject(new Error('no new image within 10 s')), 10000);
  });
}"""


def _measure(page: Any, steps: int, keys: tuple[str, str]) -> list[float]:
    img = page.locator(".sv[data-plane=axial] .sv-img")
    times = []
    for i in range(steps):
        img.evaluate(ARM)
        page.keyboard.press(keys[(i // 5) % 2])  # five up, five down...: stays inside the volume
        times.append(float(page.evaluate("() => window.__step")))
        page.wait_for_timeout(50)
    return times


def _report(name: str, times: list[float]) -> float:
    med = statistics.median(times)
    p90 = sorted(times)[max(0, int(round(0.9 * len(times))) - 1)]
    print(f"{name:<9} step -> new image: median {med:6.1f} ms, p90 {p90:6.1f} ms, "
          f"min {min(times):6.1f} ms over {len(times)} steps; target {TARGET_MS:.0f} ms, "
          f"ratio median/target {med / TARGET_MS:.2f}")
    return med


def run(shape: str, steps: int, studies: int) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
        env.update({"SPINE_DATA_DIR": str(Path(tmp) / "data"), "SPINE_DEMO_STUDIES": str(studies),
                    "SPINE_DEMO_SHAPE": shape, "SPINE_WORKERS": "2",
                    # the server-rendered slices: the path the client-side viewer replaced
                    "SPINE_VIEWER_MAX_BROWSER_MB": "0"})
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spine_cli.main", "bootstrap", "--no-progress"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        print(f"bootstrap ({studies} demo studies, {shape}): {time.perf_counter() - t0:.1f} s")
        port = free_port()
        log = open(Path(tmp) / "streamlit.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "server.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/_stcore/health", proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.get_by_label("User name", exact=True).fill("admin")
                page.get_by_label("Password", exact=True).fill("admin")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("button", name="Open in viewer").click()
                page.locator(".sv[data-plane=coronal] .sv-img").wait_for()
                page.wait_for_timeout(1000)
                _measure(page, 3, ("ArrowUp", "ArrowDown"))  # warm-up
                keyboard = _measure(page, steps, ("ArrowUp", "ArrowDown"))
                page.locator("[data-testid=stSlider]").filter(
                    has=page.get_by_role("slider", name="Axial slice")
                ).get_by_role("slider").focus()
                slider = _measure(page, steps, ("ArrowRight", "ArrowLeft"))
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    _report("keyboard", keyboard)
    _report("slider", slider)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="200x512x512", help="demo study SLICESxROWSxCOLS")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--studies", type=int, default=1)
    args = parser.parse_args()
    run(args.shape, args.steps, args.studies)


if __name__ == "__main__":
    main()
