"""The README's ForwardAuth examples (examples/nginx.conf, examples/Caddyfile), run for
real in front of the SDK-built MCP server, with the SDK's OAuth client going through
them. Skipped where nginx or caddy is not installed (Debian: `apt-get install nginx
caddy`)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import ROOT, Server, free_port, wait_for_port
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
    upstream_port = int(upstream.rsplit(":", 1)[1].split("/")[0])
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
        assert (
            f'resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp"'
            in refused.headers["WWW-Authenticate"]
        )
        total, who = asyncio.run(call_tools(server, MemoryStorage(), PersonAtTheBrowser(server)))
        assert total == 42
        assert who["subject"] == "alice" and who["authorization"] is None
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.stop()
