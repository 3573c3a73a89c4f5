"""The clients of 2026: Client ID Metadata Documents (fetched for real from an https
server with a test CA), native apps' private-use redirect schemes, and client ids an
operator can type."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.cimd import document_params, named_by, walk
from support.oauth import (
    exchange,
    pkce_pair,
    refresh,
    register,
    verify,
)

from app.security import new_id


@pytest.fixture
def cimd_server(make_server, documents):
    _, ca_file, _ = documents
    return make_server(OAUTH_CIMD_ALLOW_PRIVATE="1", SSL_CERT_FILE=ca_file)


def test_metadata_says_documents_are_supported(server, make_server):
    metadata = requests.get(server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert metadata["client_id_metadata_document_supported"] is True
    off = make_server(OAUTH_CIMD="0")
    assert (
        requests.get(off.url("/.well-known/oauth-authorization-server"), timeout=10).json()[
            "client_id_metadata_document_supported"
        ]
        is False
    )


def test_whole_flow_with_a_metadata_document_then_refresh(cimd_server, documents):
    base, _, _ = documents
    client_id = f"{base}/good/app.json"
    verifier, challenge = pkce_pair()
    final, consent = walk(cimd_server, document_params(client_id, "https://app.example/cb", challenge))
    assert named_by("localhost") in consent and "Doc Client" in consent
    location = urlsplit(final.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://app.example/cb"
    code = parse_qs(location.query)["code"][0]
    client = {"client_id": client_id, "redirect_uris": ["https://app.example/cb"]}
    tokens = exchange(cimd_server, client, code, verifier)
    assert tokens.status_code == 200, tokens.text
    assert verify(cimd_server, tokens.json()["access_token"]).status_code == 200
    renewed = refresh(cimd_server, client, tokens.json()["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    stored = json.loads(cimd_server.cli("list-clients", "--json").stdout)
    assert [c["client_id"] for c in stored] == [client_id]
    # The CLI deletes it like any client, and its tokens die at once.
    assert cimd_server.cli("delete-client", "--yes", client_id).returncode == 0
    assert verify(cimd_server, renewed.json()["access_token"]).status_code == 401


def test_a_redirect_uri_the_document_does_not_list_is_refused(cimd_server, documents):
    base, _, _ = documents
    _, challenge = pkce_pair()
    params = document_params(f"{base}/good/app.json", "https://evil.example/cb", challenge)
    response = requests.get(cimd_server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Location" not in response.headers


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/other/doc.json", "another client_id"),
        ("/missing/doc.json", "HTTP 404"),
        ("/big/doc.json", "64 KiB"),
        ("/slow/doc.json", "5 seconds"),
        ("/notjson/doc.json", "not JSON"),
        ("/deep/doc.json", "nests deeper than 32 levels"),
        ("/nul/doc.json", "NUL character"),
        ("/redirect/doc.json", "HTTP 302"),
        ("/secret/doc.json", "client secret"),
    ],
)
def test_a_document_that_cannot_be_used_is_shown_not_redirected(cimd_server, documents, path, reason):
    base, _, _ = documents
    _, challenge = pkce_pair()
    params = document_params(base + path, "https://app.example/cb", challenge)
    response = requests.get(cimd_server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=20)
    assert response.status_code == 400 and "Location" not in response.headers
    assert reason in response.text, response.text[:1000]


def test_private_addresses_are_refused_without_a_connection(make_server, documents):
    base, ca_file, log = documents
    server = make_server(SSL_CERT_FILE=ca_file)  # OAUTH_CIMD_ALLOW_PRIVATE unset: 0
    port = urlsplit(base).port
    before = log.read_text()
    _, challenge = pkce_pair()
    for host in ("localhost", "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "127.0.0.2", "0.0.0.0"):
        params = document_params(f"https://{host}:{port}/good/ssrf.json", "https://app.example/cb", challenge)
        response = requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
        assert response.status_code == 400, host
        assert "does not fetch from" in response.text, response.text[:800]
    assert log.read_text() == before  # not one request reached the document server


def test_documents_off_means_unknown_client(make_server):
    server = make_server(OAUTH_CIMD="0")
    _, challenge = pkce_pair()
    params = document_params(
        "https://claude.ai/oauth/mcp-oauth-client-metadata", "https://claude.ai/api/mcp/auth_callback", challenge
    )
    response = requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Location" not in response.headers


def test_native_schemes_are_configurable(make_server):
    """OAUTH_NATIVE_SCHEMES replaces the list, and never admits a scheme that runs
    or reads something where it is opened, even when an operator lists it."""
    server = make_server(OAUTH_NATIVE_SCHEMES="myapp,javascript,data,file")
    assert requests.post(server.url("/register"), json={"redirect_uris": ["myapp://cb"]}, timeout=10).status_code == 201
    for uri in ("cursor://x/cb", "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd"):
        refused = requests.post(server.url("/register"), json={"redirect_uris": [uri]}, timeout=10)
        assert refused.status_code == 400, uri
        assert refused.json()["error"] == "invalid_redirect_uri"


def test_the_cli_takes_double_dash_before_an_id(server):
    client = register(server)
    result = server.cli("delete-client", "--yes", "--", client["client_id"])
    assert result.returncode == 0, result.stderr
    assert json.loads(server.cli("list-clients", "--json").stdout) == []


def test_instances_sharing_postgresql_share_fetched_documents(make_server, documents, postgres_url):
    """With OAUTH_STORE=postgresql://… a document one instance fetched serves the
    others for as long as its Cache-Control allows: one fetch, not one per instance."""
    base, ca_file, log = documents
    client_id = f"{base}/good/shared-{postgres_url.rsplit('/', 1)[1]}.json"
    env = {"OAUTH_CIMD_ALLOW_PRIVATE": "1", "SSL_CERT_FILE": ca_file, "OAUTH_STORE": postgres_url}
    first = make_server(**env)
    second = make_server(users={}, **env)
    _, challenge = pkce_pair()
    for server in (first, second, first, second):
        started = requests.get(
            server.url("/authorize?" + urlencode(document_params(client_id, "https://app.example/cb", challenge))),
            allow_redirects=False,
            timeout=10,
        )
        assert started.status_code == 302 and "/login" in started.headers["Location"], started.text[:200]
    path = urlsplit(client_id).path
    assert log.read_text().splitlines().count(path) == 1


def _authorize(server, client_id: str) -> requests.Response:
    _, challenge = pkce_pair()
    params = document_params(client_id, "https://app.example/cb", challenge)
    return requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=20)


def test_one_slow_host_takes_two_fetch_slots_and_a_busy_refusal_is_not_remembered(cimd_server, documents):
    """Two documents on a host that does not answer (held) take that host's two
    slots: a third document there is refused at once as busy, with a page that says to
    try again and without a connection; a document on another host still fetches;
    and once the slow ones are done, the third fetches (the refusal was not cached as
    its failure)."""
    base, _, log = documents
    port = urlsplit(base).port
    gate = f"gate-{new_id(6)}"
    held = [f"https://localhost:{port}/hold/{gate}/{n}.json" for n in (1, 2)]
    answers: list[int] = []
    threads = [threading.Thread(target=lambda u=url: answers.append(_authorize(cimd_server, u).status_code))
               for url in held]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while sum(f"/hold/{gate}/" in line for line in log.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, "the held fetches never reached the document server"
            time.sleep(0.02)
        third = f"https://localhost:{port}/good/third-{gate}.json"
        busy = _authorize(cimd_server, third)
        assert busy.status_code == 400 and "Location" not in busy.headers
        assert "try again" in busy.text, busy.text[:800]
        assert f"/good/third-{gate}.json" not in log.read_text()  # refused before connecting
        elsewhere = _authorize(cimd_server, f"https://127.0.0.1:{port}/good/elsewhere-{gate}.json")
        assert elsewhere.status_code == 302 and "/login" in elsewhere.headers["Location"], elsewhere.text[:500]
    finally:
        (log.parent / gate).touch()
        for thread in threads:
            thread.join(20)
    assert answers == [302, 302]
    again = _authorize(cimd_server, third)
    assert again.status_code == 302 and "/login" in again.headers["Location"], again.text[:800]
