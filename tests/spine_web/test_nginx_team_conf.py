"""deploy/nginx-team.conf forwards the Host header with its port.

The session route (spine_web.session_routes) accepts the sign-in ticket only when the browser's
Origin names the Host it sees. nginx's ``$host`` drops the port, so behind nginx on any port but 80
(serve-team.sh's default is 8080) every cookie hand-over was refused 403: readers were signed in
for the page but not by cookie, and signed out by a reload or a replica's death (found by
benchmarks/bench_team_load.py). ``$http_host`` keeps the port.
"""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx-team.conf"


def test_the_host_header_keeps_the_port() -> None:
    lines = [line.split("#")[0].split() for line in CONF.read_text().splitlines()]
    hosts = [words for words in lines if words[:2] == ["proxy_set_header", "Host"]]
    assert hosts, "the proxy sets the Host header"
    assert all(words[2] == "$http_host;" for words in hosts), hosts


def test_box_saves_go_to_the_route_servers_not_the_replicas() -> None:
    """The workstation's box saves are proxied to ``upstream spine_routes`` (filled from
    ``@ROUTES@`` with the ``python -m spine_web`` servers), everything else to the replicas."""
    text = CONF.read_text()
    upstream = text.split("upstream spine_routes {", 1)[1].split("}", 1)[0]
    assert "@ROUTES@" in upstream
    location = text.split("location = /spine-box-events {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://spine_routes;" in location
    # a location that sets a header inherits none: the Host (Origin check) must be set again
    if "proxy_set_header" in location:
        assert "proxy_set_header Host $http_host;" in location
    default = text.split("location / {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://spine_app;" in default
