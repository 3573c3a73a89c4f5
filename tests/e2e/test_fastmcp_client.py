"""FastMCP's client (tests/fastmcp_client.py, run from .venv-mcp2, which `make test`
builds) through gateway mode, with its own OAuth helper, browser step and callback
server, and its tokens on disk: signed in once, it reconnects after a server restart
and an expired access token with a refresh, without registering or opening the
browser again."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from support.harness import PASSWORD, ROOT

PYTHON = ROOT / ".venv-mcp2" / "bin" / "python"
pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason="no .venv-mcp2 (`make test` builds it)")


def run_client(server, storage, *client_metadata_url: str) -> dict:
    script = str(ROOT / "tests" / "fastmcp_client.py")
    result = subprocess.run(
        [str(PYTHON), script, server.url("/mcp"), str(storage), "alice", PASSWORD, *client_metadata_url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fastmcp_client_signs_in_once_and_reconnects_after_a_restart(make_server, upstream, tmp_path):
    server = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_ACCESS_TOKEN_TTL="3")
    first = run_client(server, tmp_path)
    assert first["add"] == "42" and first["browser_opened"]
    assert first["who"]["subject"] == "alice" and first["who"]["authorization"] is None
    client_id = first["who"]["client_id"]

    server.restart()
    time.sleep(3)  # the access token it kept has expired
    again = run_client(server, tmp_path)
    assert again["add"] == "42" and not again["browser_opened"]
    assert again["who"]["client_id"] == client_id  # the same registration
    since_restart = server.output.split("Serving")[-1]
    assert "POST /token 200" in since_restart and "POST /register" not in since_restart


def test_fastmcp_client_named_by_a_client_id_metadata_document(make_server, upstream, documents, tmp_path):
    """FastMCP with `client_metadata_url` (MCP 2025-11-25): no registration; our server
    fetches the document over https, and the grant and its tokens name the URL."""
    base, ca_file, log = documents
    document = f"{base}/loopback/fastmcp-{tmp_path.name}.json"
    server = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_CIMD_ALLOW_PRIVATE="1", SSL_CERT_FILE=ca_file)
    outcome = run_client(server, tmp_path, document)
    assert outcome["add"] == "42" and outcome["browser_opened"]
    assert outcome["who"]["client_id"] == document and outcome["who"]["subject"] == "alice"
    assert f"/loopback/fastmcp-{tmp_path.name}.json" in log.read_text()  # fetched from its host
    assert "POST /register" not in server.output
