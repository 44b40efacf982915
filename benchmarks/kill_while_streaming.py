"""A reader's server is SIGKILLed while their viewer is still streaming a volume; a fresh server
starts on the same address (a restart, or nginx's next replica). Prints how long after the kill
the viewer holds the whole volume again, how its chunks came (``fetch`` over the volume route or
``rerun`` through the page) and how many fragment reruns the new server dropped.

The run this was written for (issue 17): before server.py's ``run_whole_page_for_unknown_fragments``
the viewer stayed at "loading 16 %" for good, 11 dropped fragment reruns in 90 s.

Loopback only, a temporary data folder and SQLite. Usage:
``.venv/bin/python benchmarks/kill_while_streaming.py [--shape 400x512x512] [--kill-at 1]
[--down-s 2] [--wait-s 90]``
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backend_helpers import free_port  # noqa: E402
from tests.browser.conftest import _wait_http, open_page, sign_in  # noqa: E402
from tests.browser.test_annotate_workstation_e2e import ASSIGN  # noqa: E402

PY = sys.executable


def start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PY, "-m", "streamlit", "run", "server.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 120, proc, log)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="400x512x512", help="the study streamed (slices x rows x cols)")
    ap.add_argument("--kill-at", type=float, default=1, help="kill once this %% has arrived")
    ap.add_argument("--down-s", type=float, default=2, help="seconds with no server")
    ap.add_argument("--wait-s", type=float, default=90)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from spine_core.phantom.rsna_layout import write_rsna_dataset

    tmp = Path(tempfile.mkdtemp(prefix="kill-streaming-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({"SPINE_DATA_DIR": str(tmp / "data"), "SPINE_DEMO_STUDIES": "1",
                "SPINE_DEMO_SHAPE": "48x96x96", "SPINE_DEMO_UNREAD": "0", "SPINE_WORKERS": "1",
                "SPINE_VOLUME_SECRET": "one-secret-for-both-processes"})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([PY, "-m", "spine_cli.main", "bootstrap", "--no-progress"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        shape = tuple(int(v) for v in args.shape.split("x"))
        write_rsna_dataset(tmp / "rsna", n_studies=1, seed=77, shape=shape, workers=1, n_readers=0)
        subprocess.run([PY, "-m", "spine_cli.main", "import", str(tmp / "rsna"), "--no-progress"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        with (tmp / "rsna" / "train.csv").open(newline="") as fh:
            uid = next(csv.DictReader(fh))["StudyInstanceUID"]
        subprocess.run([PY, "-c", ASSIGN, uid], env=env, cwd=ROOT, check=True, capture_output=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        procs.append(start(env, port, tmp / "first.log"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            sign_in(page, url, "reader1")
            open_page(page, "Annotate")
            page.locator("[data-testid=stSidebar]").get_by_role("combobox").click()
            page.get_by_role("option", name=uid[-24:]).click()
            root = page.locator("[data-testid=sv-root]").first
            loading = page.locator("[data-testid=sv-loading]").first
            root.wait_for()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # streaming, and the page's run over
                pct = loading.get_attribute("data-pct")
                if (pct and float(pct) >= args.kill_at
                        and page.locator("[data-testid=stStatusWidget]").count() == 0):
                    break
                page.wait_for_timeout(50)
            at = loading.get_attribute("data-pct")
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            killed = time.monotonic()
            page.wait_for_timeout(args.down_s * 1000)
            procs.append(start(env, port, tmp / "second.log"))
            back = time.monotonic() - killed
            done = None
            while time.monotonic() - killed < args.wait_s:
                page.wait_for_timeout(250)
                if root.get_attribute("data-complete") == "1":
                    done = time.monotonic() - killed
                    break
            state = root.evaluate("r => [r.svWorkstation.streamer.mode, r.svWorkstation.vol.loadedCount,"
                                  " r.svWorkstation.vol.shape[0], r.svWorkstation.channel.sent]")
            browser.close()
        dropped = (tmp / "second.log").read_text(errors="replace").count("does not exist anymore")
        print(f"study {args.shape}: killed at {at} % loaded, new server up {back:.1f} s after the kill")
        print("whole volume " + (f"{done:.1f} s after the kill" if done is not None else
                                 f"NOT reached in {args.wait_s:g} s ({state[1]}/{state[2]} slices)")
              + f"; chunks now by {state[0]}; messages to the page {state[3]}; fragment reruns "
              f"dropped by the new server {dropped}")
        return 0 if done is not None else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
