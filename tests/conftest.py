"""Test harness: the real server (`python wsgi.py`, waitress) on a free loopback port
with a temporary data folder, real HTTP with `requests`, and the CLI as a separate
`flask oauth …` process."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"
CHATGPT_CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_", "GOOGLE_", "AZURE_"))}
    env.update({"OAUTH_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Server:
    """One `python wsgi.py` process; restartable on the same port and data folder."""

    def __init__(self, data_dir: Path, workdir: Path, **env: str):
        self.data_dir = data_dir
        self.workdir = workdir
        self.port = int(env.pop("PORT", free_port()))
        self.issuer = env.pop("OAUTH_ISSUER", f"http://127.0.0.1:{self.port}")
        self.env = base_env(data_dir, PORT=str(self.port), OAUTH_ISSUER=self.issuer, **env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"server-{self.port}.log"
        self.starts = 0

    def start(self) -> Server:
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "wsgi.py")],
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output}")
            try:
                if requests.get(self.base + self.path_prefix + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.output}")

    @property
    def path_prefix(self) -> str:
        return urlsplit(self.issuer).path.rstrip("/")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        self.proc = None

    def restart(self) -> Server:
        self.stop()
        return self.start()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, path: str) -> str:
        """An endpoint URL (endpoints live under the issuer's path)."""
        return self.issuer + path

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return run_cli(self.data_dir, *args, input=input, env=self.env)


def run_cli(
    data_dir: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    environment = dict(env) if env else base_env(data_dir)
    environment["OAUTH_DATA_DIR"] = str(data_dir)
    environment.pop("FLASK_APP", None)
    return subprocess.run(
        [sys.executable, "-m", "flask", "oauth", *args],
        cwd=cwd,
        env=environment,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def failed_start(workdir: Path, data_dir: Path, **env: str) -> str:
    """Start `python wsgi.py` expecting it to refuse: assert exit status 2 with exactly
    one line on stderr and no traceback, and return that line."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "wsgi.py")],
        cwd=workdir,
        env=base_env(data_dir, **{"PORT": "1", **env}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def seed_users(data_dir: Path, users: dict[str, str]) -> None:
    """Create local users in a data folder through the real store, in this process
    (what `flask oauth add-user` does, without starting a process per test; the CLI
    itself is tested in test_cli.py)."""
    from app.repositories import UserRepository
    from app.storage import PersistentStore

    repository = UserRepository(PersistentStore(data_dir))
    for name, password in users.items():
        assert repository.set_password(name, password, create=True)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def factory(users: dict[str, str] | None = None, data_dir: Path | None = None, **env: str) -> Server:
        data = data_dir or tmp_path / f"data{len(servers)}"
        server = Server(data, tmp_path, **env)
        seed_users(data, users if users is not None else {"alice": PASSWORD})
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


# -- OAuth client helpers ------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(server: Server, **metadata) -> dict:
    body = {"client_name": "Test client", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}
    body.update(metadata)
    response = requests.post(server.url("/register"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return html.unescape(match.group(1))


def request_id_of(url_or_page: str) -> str:
    match = re.search(r"request_id=([\w-]+)|name=\"request_id\" value=\"([\w-]+)\"", url_or_page)
    assert match, url_or_page
    return match.group(1) or match.group(2)


class Browser:
    """A person's browser: a cookie jar that follows our pages but not the final
    redirect to the client."""

    def __init__(self, server: Server, username: str = "alice", password: str = PASSWORD):
        self.server = server
        self.session = requests.Session()
        self.username = username
        self.password = password
        #: other servers whose redirects the browser follows (a test identity provider)
        self.also_follow: list[str] = []
        #: every URL visited, in order
        self.visited: list[str] = []

    def get(self, url: str, **kw) -> requests.Response:
        self.visited.append(url)
        return self.session.get(url, allow_redirects=False, timeout=10, **kw)

    def post(self, url: str, **kw) -> requests.Response:
        return self.session.post(url, allow_redirects=False, timeout=10, **kw)

    def absolute(self, location: str) -> str:
        return location if location.startswith("http") else self.server.base + location

    def authorize(self, params: dict, decision: str = "approve") -> requests.Response:
        """Walk /authorize → login → consent; return the response that leaves our
        server (the redirect to the client), or the first non-redirect page."""
        response = self.get(self.server.url("/authorize?" + urlencode(params, doseq=True)))
        for _ in range(10):
            if response.status_code != 302:
                return response
            location = self.absolute(response.headers["Location"])
            if any(location.startswith(other) for other in self.also_follow):
                response = self.get(location)
                continue
            if not location.startswith(self.server.issuer):
                return response
            page = self.get(location)
            if "/login" in location and page.status_code == 200:
                response = self.post(
                    self.server.url("/login"),
                    data={
                        "csrf_token": csrf_of(page.text),
                        "request_id": request_id_of(location),
                        "username": self.username,
                        "password": self.password,
                    },
                )
            elif "/consent" in location and page.status_code == 200:
                response = self.post(
                    self.server.url("/consent"),
                    data={
                        "csrf_token": csrf_of(page.text),
                        "request_id": request_id_of(location),
                        "decision": decision,
                    },
                )
            else:
                response = page
        return response


def auth_params(client: dict, challenge: str, **extra) -> dict:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text[:500])
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def get_code(server: Server, client: dict, browser: Browser | None = None, **extra) -> tuple[str, str, dict]:
    """(code, verifier, redirect params) after a full login and approval."""
    verifier, challenge = pkce_pair()
    params = auth_params(client, challenge, **extra)
    response = (browser or Browser(server)).authorize(params)
    result = redirect_params(response)
    assert "code" in result, result
    assert result["state"] == params["state"]
    return result["code"], verifier, result


def exchange(server: Server, client: dict, code: str, verifier: str, **extra) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": client["redirect_uris"][0],
        "client_id": client["client_id"],
    }
    data.update(extra)
    return requests.post(server.url("/token"), data={k: v for k, v in data.items() if v is not None}, timeout=10)


def refresh(server: Server, client: dict, refresh_token: str, **extra) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}
    data.update(extra)
    return requests.post(server.url("/token"), data=data, timeout=10)


def tokens_for(server: Server, client: dict | None = None, **extra) -> tuple[dict, dict]:
    """Register (unless given), authorize and exchange: (client, token response)."""
    client = client or register(server)
    code, verifier, _ = get_code(server, client, **extra)
    response = exchange(server, client, code, verifier)
    assert response.status_code == 200, response.text
    return client, response.json()


def verify(server: Server, access_token: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return requests.get(server.url("/verify"), headers=headers, params=params, timeout=10)


# -- helper processes ------------------------------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"helper process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def helper_process(script: str, workdir: Path) -> Iterator[int]:
    """Run tests/<script> PORT until the generator is closed; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / script), str(port)],
        env=base_env(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def test_ca(tmp_path, monkeypatch):
    """A test CA that requests and httpx in this process trust, with the test's
    non-loopback host name resolving to 127.0.0.1 (tests/support/tls.py)."""
    from support.tls import TEST_HOST, make_ca, resolving

    ca = make_ca(tmp_path / "ca", TEST_HOST)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    with resolving(TEST_HOST):
        yield ca


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """An MCP server built with the official SDK (tests/mcp_upstream.py)."""
    for port in helper_process("mcp_upstream.py", tmp_path_factory.mktemp("up")):
        yield f"http://127.0.0.1:{port}/mcp"
