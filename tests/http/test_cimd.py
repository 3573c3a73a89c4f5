"""The clients of 2026: Client ID Metadata Documents (fetched for real from an https
server with a test CA), native apps' private-use redirect schemes, and client ids an
operator can type."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.cimd import document_params, named_by, walk
from support.oauth import (
    exchange,
    pkce_pair,
    register,
)


def test_a_shipped_document_stands_in_when_the_live_one_cannot_be_fetched(server):
    """Claude's document ships with the server; here (no outbound network, or a CDN
    that refuses) the live fetch fails and the shipped copy is used."""
    client = {"client_id": "https://claude.ai/oauth/mcp-oauth-client-metadata", "redirect_uris": []}
    client["redirect_uris"] = ["https://claude.ai/api/mcp/auth_callback"]
    verifier, challenge = pkce_pair()
    final, consent = walk(server, document_params(client["client_id"], client["redirect_uris"][0], challenge))
    assert "Claude" in consent and named_by("claude.ai") in consent
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
    final, consent = walk(server, document_params(client_id, redirect_uri, challenge))
    assert "Codex" in consent and named_by("chatgpt.com") in consent
    location = urlsplit(final.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "127.0.0.1:49731", "/callback")
    query = parse_qs(location.query)
    assert query["iss"] == [server.issuer]
    assert exchange(server, client, query["code"][0], verifier).status_code == 200
    # a callback the document does not list (Codex's per-server path) is refused on a page
    for other in ("http://127.0.0.1:49731/callback/XuuuHAzzHOni", "http://localhost:49731/callback"):
        url = server.url("/authorize?" + urlencode(document_params(client_id, other, challenge)))
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert response.status_code == 400 and "Location" not in response.headers, other


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
    final, consent = walk(server, document_params(client["client_id"], redirect_uri, challenge))
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
