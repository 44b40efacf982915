"""server.py turns Streamlit's old pages-folder mode off before any session runs.

Until a process's first ``st.navigation`` call, Streamlit treats the ``pages/`` folder beside the
script as the old multipage layout. A replica whose first session is a reconnect (a reader of a
killed replica, through nginx) names the Annotate page, and Streamlit then ran pages/annotate.py
bare instead of app.py: an ImportError page, and the flag stayed on for that whole process
(found by benchmarks/bench_team_load.py: every reader of the killed replica got the error page).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import server
from streamlit.runtime.pages_manager import PagesManager
print("uses_pages_directory", PagesManager.uses_pages_directory)
"""


def test_server_turns_the_pages_folder_mode_off(tmp_path: Path) -> None:
    assert (ROOT / "pages").is_dir()  # what would switch the old mode on
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env["SPINE_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "uses_pages_directory False" in out.stdout.splitlines()
