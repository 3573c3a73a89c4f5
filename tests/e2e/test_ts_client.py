"""The official MCP TypeScript SDK client (tests/ts_client, pinned in its package.json
and package-lock.json) through gateway mode: discovery, registration, login and
consent, tool calls. Skipped where node and npm are not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.harness import PASSWORD
from support.npm import npm_ci

CLIENT_DIR = Path(__file__).parents[1] / "ts_client"
pytestmark = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="node/npm not installed")


@pytest.fixture(scope="module")
def ts_client() -> Path:
    npm_ci(CLIENT_DIR, CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk")
    return CLIENT_DIR / "client.mjs"


def test_typescript_sdk_client_through_gateway(make_server, upstream, ts_client):
    server = make_server(OAUTH_UPSTREAM_URL=upstream)
    result = subprocess.run(
        ["node", str(ts_client), server.url("/mcp"), "alice", PASSWORD], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["add"] == "42"
    assert outcome["who"]["subject"] == "alice" and outcome["who"]["authorization"] is None
    assert outcome["who"]["client_id"] == outcome["registered"]
