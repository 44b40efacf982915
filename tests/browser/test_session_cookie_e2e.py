"""The sign-in session in Chromium: an HttpOnly, SameSite=Strict cookie (never the URL) keeps a
reader signed in across a reload; a copied address opens the sign-in form in another browser;
signing out revokes the session."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_page, session_cookie, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_the_session_lives_in_an_httponly_cookie_and_a_copied_url_signs_nobody_in(
    app_url: str, contexts: Any,
) -> None:
    reader = contexts()
    sign_in(reader, app_url, "reader1")
    cookie = session_cookie(reader)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert reader.evaluate("() => document.cookie").find("spine_session") == -1  # not for scripts
    open_page(reader, "Annotate")
    url = reader.url
    assert "s" not in parse_qs(urlparse(url).query) and cookie["value"] not in url

    # a reload keeps the reader signed in, on the same page
    reader.reload()
    expect(reader.get_by_role("button", name="Sign out")).to_be_visible()
    expect(reader.get_by_text("Reader 1 · Reader")).to_be_visible()

    # the address pasted into another browser opens the sign-in form
    other = contexts()
    other.goto(url)
    expect(other.get_by_label("User name", exact=True)).to_be_visible()
    assert other.get_by_role("button", name="Sign out").count() == 0
    # so does an old-style address carrying a token (older versions put it there)
    other.goto(f"{app_url}/annotate?s={cookie['value']}")
    expect(other.get_by_label("User name", exact=True)).to_be_visible()

    # signing out revokes the session: the old cookie signs nobody in any more
    reader.get_by_role("button", name="Sign out").click()
    expect(reader.get_by_label("User name", exact=True)).to_be_visible()
    settle(reader, 1.0)
    third = contexts()
    third.context.add_cookies([{"name": "spine_session", "value": cookie["value"],
                                "domain": cookie["domain"], "path": "/", "httpOnly": True,
                                "sameSite": "Strict"}])
    third.goto(f"{app_url}/annotate")
    expect(third.get_by_label("User name", exact=True)).to_be_visible()
    reader.reload()
    expect(reader.get_by_label("User name", exact=True)).to_be_visible()
