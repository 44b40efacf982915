"""The browser side of the session cookie (see :mod:`spine_web.session_routes`).

:func:`hand_over` posts a one-time ticket to the server's session route, which answers with the
session token as an HttpOnly cookie; :func:`clear` asks it to delete the cookie. The ticket travels
in a request body, never in the address. Returns what the browser reported: "ok", "refused NNN" or
"failed", or None while the request is under way.
"""

from __future__ import annotations

import streamlit as st

_JS = """
export default function (component) {
  const { data, setStateValue } = component;
  if (!data || !data.path || component.parentElement.__spineSent === data.nonce) return;
  component.parentElement.__spineSent = data.nonce;
  fetch(new URL(data.path, document.baseURI), {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ticket: data.ticket || "" }),
  }).then((r) => setStateValue("result", r.ok ? "ok" : "refused " + r.status),
          () => setStateValue("result", "failed"));
}
"""

_component = st.components.v2.component("spinereview_session_cookie", js=_JS)


def _post(path: str, ticket: str, key: str) -> str | None:
    result = _component(key=key, data={"path": path, "ticket": ticket, "nonce": ticket or path},
                        height=0, on_result_change=lambda: None)
    value = getattr(result, "result", None)
    return str(value) if value is not None else None


def hand_over(ticket: str, key: str = "session_cookie_set") -> str | None:
    """Have the browser exchange ``ticket`` for the HttpOnly session cookie."""
    return _post("spine-session", ticket, key)


def clear(key: str = "session_cookie_clear") -> str | None:
    """Have the browser delete the session cookie (its token is revoked by the server too)."""
    return _post("spine-session/clear", "", key)
