"""The README's ForwardAuth examples (examples/nginx.conf, examples/Caddyfile), run for
real in front of the SDK-built MCP server: the challenge, the whole OAuth flow, the
identity headers and no token passthrough, SSE, and (nginx) the SDK's OAuth client end
to end. Skipped where nginx or caddy is not installed (Debian: `apt-get install nginx
caddy`)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from conftest import ROOT, Server, free_port, tokens_for, wait_for_port
from test_gateway import MemoryStorage, PersonAtTheBrowser, call_tools


def nginx_config(tmp: Path, listen: int, upstream: int, oauth: int) -> list[str]:
    site = (ROOT / "examples" / "nginx.conf").read_text()
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{listen};").replace("mcp.example.com", "_")
    site = site.replace("127.0.0.1:3000", f"127.0.0.1:{upstream}").replace("127.0.0.1:8000", f"127.0.0.1:{oauth}")
    (tmp / "nginx.conf").write_text(
        f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n{site}\n}}"
    )
    return ["nginx", "-c", str(tmp / "nginx.conf")]


def caddy_config(tmp: Path, listen: int, upstream: int, oauth: int) -> list[str]:
    site = (ROOT / "examples" / "Caddyfile").read_text()
    site = site.replace("mcp.example.com {", f"{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{listen} {{")
    site = site.replace("127.0.0.1:3000", f"127.0.0.1:{upstream}").replace("127.0.0.1:8000", f"127.0.0.1:{oauth}")
    (tmp / "Caddyfile").write_text(site)
    return ["caddy", "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"]


@pytest.mark.parametrize(("binary", "configure"), [("nginx", nginx_config), ("caddy", caddy_config)])
def test_forward_auth_example(tmp_path, upstream, binary, configure):
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")
    listen, oauth_port = free_port(), free_port()
    upstream_port = int(urlsplit(upstream).port)
    issuer = f"http://127.0.0.1:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer)
    assert server.cli("add-user", "alice", "--password-stdin", input="correct horse battery\n").returncode == 0
    server.start()
    proxy = subprocess.Popen(
        configure(tmp_path, listen, upstream_port, oauth_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(listen, proxy)
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
            # The official SDK client end to end. (Through Caddy 2.6 it was seen to wait
            # forever for a tools/call answer about once in 15 runs under CPU load, so
            # that combination is not run here; see the README.)
            total, who = asyncio.run(call_tools(server, MemoryStorage(), PersonAtTheBrowser(server)))
            assert total == 42
            assert who["subject"] == "alice" and who["authorization"] is None
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.stop()
