"""mcp-remote (pinned in tests/mcp_remote with Node 22 from npm), the stdio bridge that
Claude Desktop and other clients run for a remote MCP server, through gateway mode:
discovery, registration, the person's login and consent at the URL it prints, its
callback, then tool calls over stdio. Then the server restarts, the access token
expires, and mcp-remote reconnects with what it stored: a refresh, no new
registration, no second login. Skipped where
npm is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from support.harness import end, free_port
from support.npm import npm_ci
from support.oauth import Browser

BRIDGE_DIR = Path(__file__).parents[1] / "mcp_remote"
NODE = BRIDGE_DIR / "node_modules" / ".bin" / "node"
PROXY = BRIDGE_DIR / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
pytestmark = pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")


@pytest.fixture(scope="module")
def mcp_remote() -> Path:
    npm_ci(BRIDGE_DIR, PROXY)
    return PROXY


class Bridge:
    """One mcp-remote process: what it says on stderr, JSON-RPC on its stdin and stdout."""

    def __init__(self, url: str, callback_port: int, home: Path):
        env = {**os.environ, "HOME": str(home), "MCP_REMOTE_CONFIG_DIR": str(home / ".mcp-auth")}
        self.proc = subprocess.Popen(
            [str(NODE), str(PROXY), url, str(callback_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.said: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.said.append(line)

    def authorization_url(self, issuer: str, seconds: float = 30) -> str | None:
        """The URL it asks the person to visit, or None once it connected without one."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            for line in list(self.said):
                if line.startswith(issuer + "/authorize?"):
                    return line.strip()
                if "Proxy established" in line:
                    return None
            assert self.proc.poll() is None, "".join(self.said)
            time.sleep(0.05)
        raise AssertionError("mcp-remote neither asked for a login nor connected:\n" + "".join(self.said))

    def call(self, message_id: int, method: str, params: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"jsonrpc": "2.0", "id": message_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("id") == message_id:
                return message
        raise AssertionError("mcp-remote ended:\n" + "".join(self.said))

    def notify(self, method: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}) + "\n")
        self.proc.stdin.flush()

    def add(self, a: int, b: int) -> str:
        """initialize, then the upstream's `add` tool; its text."""
        info = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        assert "result" in self.call(1, "initialize", info), "".join(self.said)
        self.notify("notifications/initialized")
        answer = self.call(2, "tools/call", {"name": "add", "arguments": {"a": a, "b": b}})
        assert "result" in answer, (answer, "".join(self.said))
        return answer["result"]["content"][0]["text"]

    def stop(self) -> None:
        end(self.proc)


def clients_of(server) -> list[dict]:
    listed = server.cli("list-clients", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_mcp_remote_signs_in_calls_tools_and_reconnects_after_a_restart(make_server, upstream, mcp_remote, tmp_path):
    # Access tokens live 3 s, so the reconnection after the restart must also refresh.
    server = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_ACCESS_TOKEN_TTL="3")
    home, callback_port = tmp_path / "home", free_port()
    home.mkdir()
    bridge = Bridge(server.url("/mcp"), callback_port, home)
    try:
        url = bridge.authorization_url(server.issuer)
        assert url, "".join(bridge.said)
        params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert params["code_challenge_method"] == "S256" and params["resource"] == server.url("/mcp")
        final = Browser(server).authorize(params)  # the person logs in and approves
        assert final.status_code == 302, final.text[:500]
        assert final.headers["Location"].startswith(f"http://localhost:{callback_port}/oauth/callback?")
        assert requests.get(final.headers["Location"], timeout=30).status_code == 200  # its callback page
        assert bridge.add(40, 2) == "42"
    finally:
        bridge.stop()
    registered = clients_of(server)
    assert len(registered) == 1

    exchanged = server.output.count("POST /token 200")  # the code's, and refreshes near the expiry
    server.restart()
    time.sleep(3)  # the access token it holds has expired
    again = Bridge(server.url("/mcp"), callback_port, home)
    try:
        assert again.authorization_url(server.issuer) is None, "asked the person to log in again"
        assert again.add(2, 3) == "5"
    finally:
        again.stop()
    assert [c["client_id"] for c in clients_of(server)] == [c["client_id"] for c in registered]  # no new one
    assert server.output.count("POST /token 200") > exchanged  # refreshed with what it stored before the restart
    assert "POST /token 4" not in server.output and "POST /register" not in server.output.split("Serving")[-1]
