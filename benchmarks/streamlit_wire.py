"""A Streamlit session driven over its websocket, as the browser's frontend drives it, for the
team load test (``bench_team_load.py --wire-readers``): no browser, so 30 readers fit on 2 cores
beside the servers.

It speaks Streamlit's own protocol (``streamlit.proto``): a ``BackMsg.rerun_script`` with the
page, the query string, the widget values a reader changed and, for a fragment's run, its id; the
server answers with ``ForwardMsg`` deltas (elements, toasts) until ``script_finished``. What a
browser would do besides (the session cookie's hand-over, the viewer's box posts) the caller does
over HTTP with the same cookies. Only what the load test needs is understood.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = {ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY,
            ForwardMsg.ScriptFinishedStatus.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
            ForwardMsg.ScriptFinishedStatus.FINISHED_WITH_COMPILE_ERROR}


class Disconnected(Exception):
    """The websocket closed (the replica was killed): connect again."""


@dataclass
class Element:
    kind: str  # the Element oneof: "text_input", "button", "button_group", "bidi_component", ...
    proto: Any
    fragment_id: str

    @property
    def text(self) -> str:
        """Markdown, caption, alert or toast text ("" for a widget)."""
        body = getattr(self.proto, "body", None)
        return body if isinstance(body, str) else ""


@dataclass
class Run:
    """What one rerun request brought: every element and toast, in order, and how it ended."""
    elements: list[Element] = field(default_factory=list)
    toasts: list[str] = field(default_factory=list)
    status: int = -1
    seconds: float = 0.0
    toast_s: float | None = None  # from the request to the first toast

    def find(self, kind: str, label: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.kind == kind
                and (label is None or getattr(e.proto, "label", None) == label)]

    def texts(self) -> list[str]:
        return [e.text for e in self.elements if e.text]

    def component(self, name_part: str) -> Element | None:
        found = [e for e in self.elements if e.kind == "bidi_component"
                 and name_part in e.proto.component_name]
        return found[-1] if found else None


def widget(wid: str, **value: Any) -> WidgetState:
    """A widget's value: ``string_value=``, ``trigger_value=``, ``json_value=``, ..."""
    state = WidgetState(id=wid)
    for name, v in value.items():
        if name == "string_array_value":
            state.string_array_value.data.extend(v)
        else:
            setattr(state, name, v)
    return state


def viewer_header(element: Element) -> dict[str, Any]:
    """The JSON header of the viewer's frame (``"SPV1" | uint32 LE length | JSON | payload``)."""
    data = element.proto.bytes
    if data[:4] != b"SPV1":
        raise ValueError("not a viewer frame")
    (n,) = struct.unpack("<I", data[4:8])
    return dict(json.loads(data[8:8 + n].decode()))


class WireSession:
    """One Streamlit session over ``ws(s)://…/_stcore/stream``; :meth:`rerun` runs the page once."""

    def __init__(self, base_url: str, cookies: dict[str, str]) -> None:
        self.base = base_url.rstrip("/")
        self.cookies = cookies
        self.ws: Any = None
        self.page_hash = ""
        self.page_name = ""
        self.query = ""
        self.pages: dict[str, str] = {}  # url path -> page script hash

    async def connect(self) -> None:
        url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.ws = await websockets.connect(
            url, subprotocols=[websockets.Subprotocol("streamlit")], max_size=None, open_timeout=10,
            additional_headers={"Cookie": cookie, "Origin": self.base})

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def rerun(self, widgets: list[WidgetState] | None = None, *, page: str | None = None,
                    query: str | None = None, fragment_id: str = "",
                    timeout_s: float = 60) -> Run:
        """Ask for a run (the current page unless ``page``, a url path, is given) and collect
        its messages until it finishes (a run cut short by ``st.rerun()`` goes on to the next)."""
        if page is not None:
            self.page_name, self.page_hash = page, self.pages.get(page, "")
        if query is not None:
            self.query = query
        msg = BackMsg()
        rs = msg.rerun_script
        rs.query_string = self.query
        rs.page_script_hash = self.page_hash
        rs.page_name = self.page_name if not self.page_hash else ""
        rs.fragment_id = fragment_id
        rs.widget_states.widgets.extend(widgets or [])
        t0 = time.monotonic()
        try:
            await self.ws.send(msg.SerializeToString())
        except websockets.ConnectionClosed as exc:
            raise Disconnected(str(exc)) from exc
        run = Run()
        deadline = t0 + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the run did not finish within {timeout_s:.0f} s")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except websockets.ConnectionClosed as exc:
                raise Disconnected(str(exc)) from exc
            fm = ForwardMsg()
            fm.ParseFromString(raw)
            kind = fm.WhichOneof("type")
            if kind == "delta":
                self._delta(fm, run)
                if run.toasts and run.toast_s is None:
                    run.toast_s = time.monotonic() - t0
            elif kind == "navigation":
                for p in fm.navigation.app_pages:
                    self.pages[p.url_pathname] = p.page_script_hash
                self.page_hash = fm.navigation.page_script_hash
            elif kind == "new_session":
                if fm.new_session.page_script_hash:
                    self.page_hash = fm.new_session.page_script_hash
            elif kind == "page_info_changed":
                self.query = fm.page_info_changed.query_string
            elif kind == "script_finished":
                if fm.script_finished in FINISHED:
                    run.status = fm.script_finished
                    run.seconds = time.monotonic() - t0
                    return run

    def _delta(self, fm: ForwardMsg, run: Run) -> None:
        d = fm.delta
        which = d.WhichOneof("type")
        if which == "new_element":
            el = d.new_element
            kind = el.WhichOneof("type") or ""
            e = Element(kind, getattr(el, kind), d.fragment_id)
            run.elements.append(e)
            if kind == "toast":
                run.toasts.append(e.text)


def component_state(component_id: str, state: dict[str, Any]) -> WidgetState:
    """A Components v2 element's state (what its ``setStateValue`` calls add up to)."""
    return widget(component_id, json_value=json.dumps(state))


def component_trigger(component_id: str, event: str, value: Any) -> WidgetState:
    """A Components v2 element's trigger (``setTriggerValue(event, value)``): one payload in its
    trigger aggregator widget."""
    from streamlit.runtime.state.session_state import STREAMLIT_INTERNAL_KEY_PREFIX

    return widget(f"{STREAMLIT_INTERNAL_KEY_PREFIX}_{component_id}__events",
                  json_trigger_value=json.dumps([{"event": event, "value": value}]))
