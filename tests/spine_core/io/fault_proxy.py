"""A fault-injecting HTTP proxy on loopback, in front of the real Orthanc.

Requests pass through to Orthanc unchanged (credentials included) except those about one study,
which get the fault set for it: an HTTP status, garbage, an answer cut off halfway, a thousand
series, or the study deleted from Orthanc halfway through its transfer. It plays a broken PACS
for the import's bad-input tests without mocking the client library: dicomweb-client talks real
HTTP to it.

Faults apply at one stage of a study's retrieval:

* ``series``: the QIDO-RS search for the study's series (``/studies/UID/series?...``);
* ``wado``: the WADO-RS retrieval of a series (``/studies/UID/series/UID``);
* ``search``: the QIDO-RS search for studies (``GET .../studies?...``), whatever the study;
* ``stow``: a STOW-RS store (``POST .../studies``), whatever the study (``study_uid`` is ignored);
  the first ``after`` stores pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

import requests

Stage = Literal["search", "series", "wado", "stow"]
#: An HTTP status, or: "garbage" (200 with an HTML page or broken JSON), "cut" (the answer stops
#: halfway, the connection closes), "thousand" (the series search lists 1000 series),
#: "vanish" (half the answer is sent, then the study is deleted from Orthanc and the answer stops),
#: "hang" (no answer for HANG_S seconds, then the connection closes).
Fault = int | Literal["garbage", "cut", "thousand", "vanish", "hang"]
HANG_S = 6.0


@dataclass
class Rule:
    study_uid: str
    stage: Stage
    fault: Fault
    after: int = 0  # "stow": how many stores pass before the fault


def _stage(path: str, study_uid: str) -> Stage | None:
    parts = [p for p in urlsplit(path).path.split("/") if p]
    try:
        at = parts.index("studies")
    except ValueError:
        return None
    rest = parts[at + 1:]
    if not rest or rest[0] != study_uid:
        return None
    if rest[1:] == ["series"]:
        return "series"
    if len(rest) >= 3 and rest[1] == "series":
        return "wado"
    return None


def thousand_series(study_uid: str, n: int = 1000) -> bytes:
    """A DICOM JSON series list of ``n`` CT series (valid UIDs) for ``study_uid``."""
    items = [{"0020000D": {"vr": "UI", "Value": [study_uid]},
              "0020000E": {"vr": "UI", "Value": [f"{study_uid}.{i + 1}"]},
              "00080060": {"vr": "CS", "Value": ["CT"]},
              "00201209": {"vr": "IS", "Value": [1]}} for i in range(n)]
    return json.dumps(items).encode()


class FaultProxy:
    """The proxy's address and its rules (set them between imports with :meth:`fault`)."""

    def __init__(self, upstream: str, upstream_auth: tuple[str, str]) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:PORT (Orthanc's root)
        self.upstream_auth = upstream_auth  # for deleting a study ("vanish") only
        self.rules: list[Rule] = []
        self.hits: list[tuple[str, Stage]] = []  # (study, stage) of each fault served
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    def fault(self, study_uid: str, stage: Stage, fault: Fault, after: int = 0) -> None:
        self.rules = [Rule(study_uid, stage, fault, after)]

    def _rule(self, method: str, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.stage == "stow":
                if method == "POST" and urlsplit(path).path.rstrip("/").endswith("/studies"):
                    if rule.after > 0:
                        rule.after -= 1
                        return None
                    return rule
            elif rule.stage == "search":
                if method == "GET" and urlsplit(path).path.rstrip("/").endswith("/studies"):
                    return rule
            elif _stage(path, rule.study_uid) == rule.stage:
                return rule
        return None

    def _delete(self, study_uid: str) -> None:
        found = requests.post(f"{self.upstream}/tools/lookup", data=study_uid, auth=self.upstream_auth,
                              timeout=30).json()
        for hit in found:
            requests.delete(f"{self.upstream}/studies/{hit['ID']}", auth=self.upstream_auth,
                            timeout=30).raise_for_status()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

            def _send(self, status: int, body: bytes, content_type: str, *, send: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if send is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body if send is None else body[:send])
                self.wfile.flush()
                if send is not None:
                    self.close_connection = True

            def _forward(self) -> requests.Response:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "accept", "content-type")}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                return requests.request(self.command, proxy.upstream + self.path, headers=headers,
                                        data=body, timeout=60)

            def _handle(self) -> None:
                rule = proxy._rule(self.command, self.path)
                if rule is None:
                    answer = self._forward()
                    self._send(answer.status_code, answer.content,
                               answer.headers.get("Content-Type", "application/octet-stream"))
                    return
                proxy.hits.append((rule.study_uid, rule.stage))
                fault = rule.fault
                if isinstance(fault, int):
                    self._send(fault, b'{"error": "injected"}', "application/json")
                elif fault == "garbage" and rule.stage in ("search", "series"):
                    self._send(200, b'[{"0020000E": {"vr": "UI", "Value": ["1.2.3"', "application/dicom+json")
                elif fault == "garbage":
                    self._send(200, b"<html><body>Proxy error: upstream said hello</body></html>",
                               "text/html")
                elif fault == "hang":
                    time.sleep(HANG_S)
                    self.close_connection = True
                elif fault == "thousand":
                    self._send(200, thousand_series(rule.study_uid), "application/dicom+json")
                else:  # "cut" or "vanish": half of the real answer, then the connection closes
                    answer = self._forward()
                    if fault == "vanish":
                        proxy._delete(rule.study_uid)
                    self._send(answer.status_code, answer.content,
                               answer.headers.get("Content-Type", "application/octet-stream"),
                               send=len(answer.content) // 2)

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815 - http.server's names

        return Handler


@contextmanager
def fault_proxy(upstream: str, upstream_auth: tuple[str, str]) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` in front of ``upstream``; stopped on exit."""
    proxy = FaultProxy(upstream, upstream_auth)
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
