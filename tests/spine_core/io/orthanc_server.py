"""A real Orthanc for the PACS tests (Debian's package, started by scripts/start-orthanc.sh).

``orthanc`` (module-scoped) starts one on a free loopback port with storage in a temporary folder
and HTTP basic authentication, and stops it afterwards. If the binary is missing and cannot be
installed (scripts/ensure-orthanc.sh), the tests skip with that reason; never a mock.

Import the fixture into a test module with ``from tests.spine_core.io.orthanc_server import orthanc``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
USER = "spine"
PASSWORD = "pacs-test-secret"


@dataclass
class Orthanc:
    base: str  # http://127.0.0.1:PORT
    storage: Path
    process: subprocess.Popen[bytes]

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, PASSWORD)

    def get(self, path: str) -> requests.Response:
        answer = requests.get(f"{self.base}{path}", auth=self.auth, timeout=30)
        answer.raise_for_status()
        return answer

    def upload(self, files: list[Path]) -> None:
        with requests.Session() as session:
            session.auth = self.auth
            for path in files:
                answer = session.post(f"{self.base}/instances", data=path.read_bytes(), timeout=30)
                answer.raise_for_status()

    def clear(self) -> None:
        for study in self.get("/studies").json():
            requests.delete(f"{self.base}/studies/{study}", auth=self.auth, timeout=30).raise_for_status()

    def settings_env(self) -> dict[str, str]:
        return {"SPINE_DICOMWEB_URL": self.dicomweb, "SPINE_DICOMWEB_USER": USER,
                "SPINE_DICOMWEB_PASSWORD": PASSWORD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str | None:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    if found and os.path.exists("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"):
        return found
    return None


def ensure_orthanc() -> str | None:
    """None when Orthanc is there (installing it if missing), else why not."""
    if _binary():
        return None
    try:
        subprocess.run([str(ROOT / "scripts" / "ensure-orthanc.sh")], check=True, capture_output=True,
                       timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Orthanc is not installed and scripts/ensure-orthanc.sh failed: {exc}"
    return None if _binary() else "Orthanc is not installed (scripts/ensure-orthanc.sh installed nothing)"


def start_orthanc(folder: Path) -> Orthanc:
    port = free_port()
    env = {**os.environ, "ORTHANC_HTTP_PORT": str(port), "ORTHANC_USER": USER,
           "ORTHANC_PASSWORD": PASSWORD}
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process's life
    process = subprocess.Popen([str(ROOT / "scripts" / "start-orthanc.sh"), str(folder)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Orthanc(f"http://127.0.0.1:{port}", folder, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{server.base}/system", auth=server.auth, timeout=2).ok:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_orthanc(server)
    raise RuntimeError("Orthanc did not answer within 60 s")


def stop_orthanc(server: Orthanc) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    reason = ensure_orthanc()
    if reason:
        pytest.skip(reason)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        stop_orthanc(server)
