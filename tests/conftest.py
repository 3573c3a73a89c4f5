"""Fixtures. The helpers they use live in tests/support/ (harness: servers and the CLI;
oauth: the client and the browser), which test modules import directly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import PASSWORD, Server, ThreadServer, free_port, helper_process, seed_users, wait_for_port


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def factory(
        users: dict[str, str] | None = None, data_dir: Path | None = None, in_thread: bool = False, **env: str
    ) -> Server:
        """A server process (or, `in_thread`, the app on waitress in this process)."""
        data = data_dir or tmp_path / f"data{len(servers)}"
        server = (ThreadServer if in_thread else Server)(data, tmp_path, **env)
        seed_users(data, users if users is not None else {"alice": PASSWORD}, env.get("OAUTH_STORE"))
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server) -> Server:
    """The app on real waitress in this process: most tests need HTTP, not a process."""
    return make_server(in_thread=True)


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
def documents(tmp_path_factory):
    """The https server of client metadata documents (tests/support/docserver.py, a
    test CA): (base URL, CA file, request log)."""
    from support.tls import make_ca

    tmp = tmp_path_factory.mktemp("docs")
    ca = make_ca(tmp / "ca", "localhost", "127.0.0.1")
    port = free_port()
    log = tmp / "requests.log"
    log.write_text("")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parent / "support" / "docserver.py"),
            str(port),
            str(ca.cert_file),
            str(ca.key_file),
            str(log),
        ]
    )
    try:
        wait_for_port(port, proc)
        yield f"https://localhost:{port}", str(ca.ca_file), log
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """An MCP server built with the official SDK (tests/mcp_upstream.py)."""
    for port in helper_process("mcp_upstream.py", tmp_path_factory.mktemp("up")):
        yield f"http://127.0.0.1:{port}/mcp"


# -- the in-process tier (as in Flask's tutorial): the app, its test client and CLI runner --


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app from `create_app`, on a temporary data folder with the user alice;
    for protocol, validation and CLI-argument tests, where no process boundary is
    the point."""
    from app import create_app
    from app.config import Config

    monkeypatch.chdir(tmp_path)  # no .env from the repo
    data = tmp_path / "data"
    seed_users(data, {"alice": PASSWORD})
    app = create_app(Config.from_env({"OAUTH_DATA_DIR": str(data)}, env_file=None))
    yield app
    app.extensions["oauth"].store.stop_upkeep()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# -- PostgreSQL (tests/support/postgres.py) ---------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL cluster per test process (xdist worker)."""
    from support.postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres) -> str:
    """The URL of a fresh, empty database for this test."""
    return postgres.new_database()


# -- stand-ins and servers that tests of several tiers use -----------------------------


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """An OpenID provider stand-in (tests/oidc_idp.py): its base URL."""
    for port in helper_process("oidc_idp.py", tmp_path_factory.mktemp("idp")):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def github(tmp_path_factory):
    """A GitHub stand-in (tests/github_standin.py): its base URL."""
    for port in helper_process("github_standin.py", tmp_path_factory.mktemp("github")):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def cimd_server(make_server, documents, monkeypatch):
    """The app in this process, fetching client metadata documents from `documents`."""
    _, ca_file, _ = documents
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # read by the fetcher, in this process
    return make_server(in_thread=True, OAUTH_CIMD_ALLOW_PRIVATE="1")
