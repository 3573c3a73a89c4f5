"""The clients of 2026: Client ID Metadata Documents (fetched for real from an https
server with a test CA), native apps' private-use redirect schemes, and client ids an
operator can type."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.oauth import (
    Browser,
    csrf_of,
    exchange,
    pkce_pair,
    refresh,
    register,
    request_id_of,
    shown_of,
    verify,
)

from app.cimd import address_allowed
from app.display import host_html
from app.repositories import new_client_id
from app.security import new_id

HERE = Path(__file__).parent


@pytest.fixture
def cimd_server(make_server, documents):
    _, ca_file, _ = documents
    return make_server(OAUTH_CIMD_ALLOW_PRIVATE="1", SSL_CERT_FILE=ca_file)


def _walk(server, params: dict, decision: str = "approve") -> tuple[requests.Response, str]:
    """/authorize → login → consent page → decision; (the final response, the
    consent page's HTML)."""
    browser = Browser(server)
    response = browser.get(server.url("/authorize?" + urlencode(params)))
    assert response.status_code == 302, response.text[:500]
    login_url = browser.absolute(response.headers["Location"])
    page = browser.get(login_url)
    response = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(login_url),
            "username": "alice",
            "password": "correct horse battery",
        },
    )
    consent_url = browser.absolute(response.headers["Location"])
    consent = browser.get(consent_url)
    assert consent.status_code == 200, consent.text[:500]
    final = browser.post(
        server.url("/consent"),
        data={"csrf_token": csrf_of(consent.text), "request_id": request_id_of(consent_url),
              "shown": shown_of(consent.text), "decision": decision},
    )
    return final, consent.text


def _named_by(host: str) -> str:
    """How the consent page says that a document on `host` vouches for the name."""
    return f'named by its document on <strong class="document-host">{host_html(host)}</strong>'


def _params(client_id: str, redirect_uri: str, challenge: str) -> dict:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s1",
    }


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
    final, consent = _walk(cimd_server, _params(client_id, "https://app.example/cb", challenge))
    assert _named_by("localhost") in consent and "Doc Client" in consent
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
    params = _params(f"{base}/good/app.json", "https://evil.example/cb", challenge)
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
    params = _params(base + path, "https://app.example/cb", challenge)
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
        params = _params(f"https://{host}:{port}/good/ssrf.json", "https://app.example/cb", challenge)
        response = requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
        assert response.status_code == 400, host
        assert "does not fetch from" in response.text, response.text[:800]
    assert log.read_text() == before  # not one request reached the document server


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
     "fe80::1", "fc00::1", "::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:a00:1::1", "ff02::1",
     # site-local (RFC 3879), which some Pythons' is_global admits
     "fec0::1", "feff::ffff", "fec0::a9fe:a9fe",
     # an IPv4 address wrapped in IPv6: compatible, translated, NAT64 (RFC 6052), 6to4, Teredo
     "::a9fe:a9fe", "::ffff:0:a00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
     "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe",
     # local-use NAT64 (RFC 8215), documentation (RFC 3849, RFC 9637), discard (RFC 6666)
     "64:ff9b:1::808:808", "2001:db8::1", "3fff::1", "100::1"],
)  # fmt: skip
def test_the_address_guard_refuses_non_public_addresses(address):
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


def test_the_address_guard_admits_public_addresses():
    """Public ones, also when IPv6 wraps a public IPv4 address (a NAT64 network's
    DNS64 answers with 64:ff9b::/96 for an IPv4-only host)."""
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1",
                    "64:ff9b::808:808"):  # fmt: skip
        assert address_allowed(ipaddress.ip_address(address), allow_private=False), address
    assert address_allowed(ipaddress.ip_address("10.0.0.1"), allow_private=True)
    assert not address_allowed(ipaddress.ip_address("224.0.0.1"), allow_private=True)


def test_a_shipped_document_stands_in_when_the_live_one_cannot_be_fetched(server):
    """Claude's document ships with the server; here (no outbound network, or a CDN
    that refuses) the live fetch fails and the shipped copy is used."""
    client = {"client_id": "https://claude.ai/oauth/mcp-oauth-client-metadata", "redirect_uris": []}
    client["redirect_uris"] = ["https://claude.ai/api/mcp/auth_callback"]
    verifier, challenge = pkce_pair()
    final, consent = _walk(server, _params(client["client_id"], client["redirect_uris"][0], challenge))
    assert "Claude" in consent and _named_by("claude.ai") in consent
    code = parse_qs(urlsplit(final.headers["Location"]).query)["code"][0]
    assert exchange(server, client, code, verifier).status_code == 200


def test_codex_works_with_its_shipped_document_and_documented_redirect_uri(server):
    """Codex's stable document ships (chatgpt.com refuses some data-centre fetches,
    and here there is no outbound network at all): its documented callback,
    `http://127.0.0.1/callback` on the port Codex listens on, gets a code, with `iss`
    (Codex uses this document only with issuer-bound responses, RFC 9207)."""
    client_id = "https://chatgpt.com/oauth/codex/client.json"
    redirect_uri = "http://127.0.0.1:49731/callback"
    client = {"client_id": client_id, "redirect_uris": [redirect_uri]}
    verifier, challenge = pkce_pair()
    final, consent = _walk(server, _params(client_id, redirect_uri, challenge))
    assert "Codex" in consent and _named_by("chatgpt.com") in consent
    location = urlsplit(final.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "127.0.0.1:49731", "/callback")
    query = parse_qs(location.query)
    assert query["iss"] == [server.issuer]
    assert exchange(server, client, query["code"][0], verifier).status_code == 200
    # a callback the document does not list (Codex's per-server path) is refused on a page
    for other in ("http://127.0.0.1:49731/callback/XuuuHAzzHOni", "http://localhost:49731/callback"):
        url = server.url("/authorize?" + urlencode(_params(client_id, other, challenge)))
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert response.status_code == 400 and "Location" not in response.headers, other


def test_documents_off_means_unknown_client(make_server):
    server = make_server(OAUTH_CIMD="0")
    _, challenge = pkce_pair()
    params = _params(
        "https://claude.ai/oauth/mcp-oauth-client-metadata", "https://claude.ai/api/mcp/auth_callback", challenge
    )
    response = requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Location" not in response.headers


# -- native apps (RFC 8252 §7.1) ------------------------------------------------------


def test_cursor_registers_its_three_kinds_of_redirect_uri_and_keeps_the_good_ones(server):
    uris = [
        "cursor://anysphere.cursor-retrieval/oauth/user-abc/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
        "javascript:alert(1)",
    ]
    response = requests.post(
        server.url("/register"),
        json={"client_name": "Cursor", "redirect_uris": uris, "token_endpoint_auth_method": "none"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["redirect_uris"] == uris[:3]


@pytest.mark.parametrize(
    "redirect_uri",
    ["cursor://anysphere.cursor-retrieval/oauth/user-abc/callback", "com.example.app:/oauth2redirect"],
)
def test_native_app_redirect_through_the_whole_flow(server, redirect_uri):
    client = register(server, redirect_uris=[redirect_uri])
    verifier, challenge = pkce_pair()
    final, consent = _walk(server, _params(client["client_id"], redirect_uri, challenge))
    scheme = redirect_uri.split(":", 1)[0]
    assert f"opens <strong>{scheme}://</strong> links" in consent
    assert final.status_code == 302 and final.headers["Location"].startswith(redirect_uri + "?")
    code = parse_qs(urlsplit(final.headers["Location"]).query)["code"][0]
    assert exchange(server, client, code, verifier).status_code == 200


@pytest.mark.parametrize(
    "uri",
    ["javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd", "blob:https://a.example/x",
     "myapp://callback", "vbscript:x", "cursor://x/cb#frag"],
)  # fmt: skip
def test_unsafe_or_unlisted_schemes_are_refused(server, uri):
    response = requests.post(server.url("/register"), json={"redirect_uris": [uri]}, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri"


def test_native_schemes_are_configurable(make_server):
    """OAUTH_NATIVE_SCHEMES replaces the list, and never admits a scheme that runs
    or reads something where it is opened, even when an operator lists it."""
    server = make_server(OAUTH_NATIVE_SCHEMES="myapp,javascript,data,file")
    assert requests.post(server.url("/register"), json={"redirect_uris": ["myapp://cb"]}, timeout=10).status_code == 201
    for uri in ("cursor://x/cb", "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd"):
        refused = requests.post(server.url("/register"), json={"redirect_uris": [uri]}, timeout=10)
        assert refused.status_code == 400, uri
        assert refused.json()["error"] == "invalid_redirect_uri"


# -- client ids an operator can type -------------------------------------------------------


def test_client_and_grant_ids_never_begin_with_a_dash():
    assert not any(new_client_id().startswith("-") for _ in range(5000))
    assert not any(new_id(18).startswith("-") for _ in range(5000))


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
            server.url("/authorize?" + urlencode(_params(client_id, "https://app.example/cb", challenge))),
            allow_redirects=False,
            timeout=10,
        )
        assert started.status_code == 302 and "/login" in started.headers["Location"], started.text[:200]
    path = urlsplit(client_id).path
    assert log.read_text().splitlines().count(path) == 1


def _authorize(server, client_id: str) -> requests.Response:
    _, challenge = pkce_pair()
    params = _params(client_id, "https://app.example/cb", challenge)
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
