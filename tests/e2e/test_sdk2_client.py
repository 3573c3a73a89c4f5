"""The official MCP Python SDK 2.x client (tests/sdk2_client.py, run from .venv-mcp2,
which `make test` builds) through gateway mode: discovery, registration, login and
consent, RFC 9207 `iss` checked by the client, tool calls."""

from __future__ import annotations

import json
import subprocess

import pytest
from support.harness import PASSWORD, ROOT

PYTHON = ROOT / ".venv-mcp2" / "bin" / "python"
pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason="no .venv-mcp2 (`make test` builds it)")


def test_python_sdk_2x_client_through_gateway(make_server, upstream):
    server = make_server(OAUTH_UPSTREAM_URL=upstream)
    result = subprocess.run(
        [str(PYTHON), str(ROOT / "tests" / "sdk2_client.py"), server.url("/mcp"), "alice", PASSWORD],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["add"] == "42"
    assert outcome["iss"] == server.issuer
    assert outcome["who"]["subject"] == "alice" and outcome["who"]["authorization"] is None
    assert outcome["who"]["client_id"] == outcome["registered"]
