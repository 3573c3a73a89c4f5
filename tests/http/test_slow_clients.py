"""Slow clients (CONTRACT "Holding up on the open internet (round 2)", app/serving.py):
a request's headers within 10 s, its body at a minimal pace, at most
OAUTH_CONNECTIONS_PER_ADDRESS connections per client address, body sizes bounded per
path before the body is read; directly and through the README's nginx example.

Raw sockets against `python wsgi.py`. The trickles take the real 10 s: they all start
with the module's server, in threads, and are judged by the last tests of the module,
while the others run."""

from __future__ import annotations

from support.harness import free_port
from support.slow_clients import DEAD_UPSTREAM, KIB, ask, head_of


def test_the_limits_follow_an_issuer_with_a_path(make_server):
    port = free_port()
    server = make_server(
        in_thread=True, PORT=str(port), OAUTH_ISSUER=f"http://127.0.0.1:{port}/auth", OAUTH_UPSTREAM_URL=DEAD_UPSTREAM
    )
    assert ask(server.port, head_of("POST", "/auth/register", 16 * KIB + 1)).status == 413
    assert ask(server.port, head_of("POST", "/mcp", 64 * KIB + 1)).status == 413  # the gateway is /auth/mcp
    body = b"x" * (1024 * KIB)
    assert ask(server.port, head_of("POST", "/auth/mcp", len(body), "Connection: close") + body).status == 401
