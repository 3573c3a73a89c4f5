"""The README's ForwardAuth examples (examples/nginx.conf, examples/Caddyfile,
examples/traefik-dynamic.yml), run for
real, terminating TLS for a non-loopback name with a test CA, in front of the
SDK-built MCP server: the challenge, the whole OAuth flow, the
identity headers and no token passthrough, SSE, and (nginx) the SDK's OAuth client end
to end. Skipped where nginx or caddy is not installed (Debian: `apt-get install nginx
caddy`)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
import requests
from support.harness import PASSWORD, Server, free_port, seed_users
from support.mcp import MemoryStorage, PersonAtTheBrowser, call_tools
from support.oauth import tokens_for
from support.proxies import tls_proxy
from support.tls import TEST_HOST


@pytest.mark.parametrize(
    ("binary", "example"), [("nginx", "nginx.conf"), ("caddy", "Caddyfile"), ("traefik", "traefik-dynamic.yml")]
)
def test_forward_auth_example(tmp_path, upstream, test_ca, binary, example):
    listen, oauth_port = free_port(), free_port()
    upstream_port = int(urlsplit(upstream).port)
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer)
    seed_users(server.data_dir, {"alice": PASSWORD})
    server.start()
    try:
        with tls_proxy(binary, example, tmp_path, listen, {3000: upstream_port, 8000: oauth_port}, test_ca):
            server.base = issuer  # the person's browser, too, only sees the proxy
            refused = requests.post(issuer + "/mcp", json={}, timeout=5)
            assert refused.status_code == 401
            challenge = refused.headers["WWW-Authenticate"]
            assert f'resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp"' in challenge

            # Discovery, registration, login, consent and token, all through the proxy.
            _, tokens = tokens_for(server)
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}
            echoed = requests.post(issuer + "/mcp/echo", data=b"{}", headers=auth, timeout=5).json()["headers"]
            assert echoed["x-auth-subject"] == "alice" and echoed["x-auth-scope"] == "mcp"
            assert "authorization" not in echoed  # no token passthrough
            with requests.get(issuer + "/mcp/ticks?count=3&interval=0.2", headers=auth, stream=True, timeout=10) as sse:
                assert sse.status_code == 200
                assert [line for line in sse.iter_lines() if line.startswith(b"data:")] == [
                    b"data: tick 0",
                    b"data: tick 1",
                    b"data: tick 2",
                ]

            if binary == "nginx":
                # The official SDK client end to end. (Through Caddy 2.6 and Traefik 3.7
                # in ForwardAuth it was seen to wait forever for a tools/call answer now
                # and then under CPU load, so those combinations are not run here; see
                # the README. Through nginx and Caddy in front of gateway mode it runs, in
                # test_tls.py.)
                total, who = asyncio.run(call_tools(server, MemoryStorage(), PersonAtTheBrowser(server)))
                assert total == 42
                assert who["subject"] == "alice" and who["authorization"] is None
    finally:
        server.stop()
