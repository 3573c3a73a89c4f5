"""The official MCP conformance suite's authorization-server scenarios
(`@modelcontextprotocol/conformance`, pinned in tests/conformance with Node 22 from npm)
against the real server: the metadata endpoint, and the authorization code grant with
the test playing the person at the browser. Skipped where npm is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from support.harness import free_port
from support.npm import npm_ci
from support.oauth import Browser, register

SUITE_DIR = Path(__file__).parents[1] / "conformance"
pytestmark = pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")


@pytest.fixture(scope="module")
def conformance() -> list[str]:
    node = SUITE_DIR / "node_modules" / ".bin" / "node"
    npm_ci(SUITE_DIR, node)
    return [str(node), str(SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js")]


def test_authorization_server_scenarios(server, conformance):
    """Every authorization-server scenario in one run (the code grant reads what the
    metadata scenario found)."""
    port = free_port()
    client = register(server, redirect_uris=["http://127.0.0.1/callback"])
    proc = subprocess.Popen(
        [
            *conformance, "authorization", "--url", server.issuer,
            "--client-id", client["client_id"], "--port", str(port), "--resource", server.url("/mcp"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    output: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith(server.url("/authorize?")):
                found.set()
        found.set()  # the suite ended without asking for a login

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        found.wait(60)
        url = next((line.strip() for line in output if line.startswith(server.url("/authorize?"))), None)
        assert url, "".join(output)
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        final = Browser(server).authorize(params)  # the person logs in and approves
        assert final.status_code == 302, final.text[:500]
        requests.get(final.headers["Location"], timeout=30)  # the browser lands on the suite's callback
        assert proc.wait(120) == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(5)
    total = re.search(r"Total: (\d+) passed, (\d+) failed", "".join(output))
    assert total and int(total.group(1)) >= 3 and total.group(2) == "0", "".join(output)
