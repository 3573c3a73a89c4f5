"""/authorize: PKCE, redirect URI matching, errors shown or redirected, RFC 9207 iss,
RFC 8707 resource, scopes, consent, CSRF, login session."""

from __future__ import annotations

from urllib.parse import urlencode

from support.harness import CHATGPT_CALLBACK, free_port
from support.oauth import (
    Browser,
    auth_params,
    exchange,
    get_code,
    pkce_pair,
    refresh,
    register,
)


def test_empty_scope_and_offline_access_mean_all_scopes(make_server):
    server = make_server(OAUTH_SCOPES="mcp tools")
    client = register(server, redirect_uris=[CHATGPT_CALLBACK])
    for scope in ("", None, "offline_access"):
        code, verifier, _ = get_code(server, client, scope=scope)
        tokens = exchange(server, client, code, verifier).json()
        assert tokens["scope"] == "mcp tools", scope


def test_resource_binds_audience_and_defaults_to_first(make_server):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server = make_server(PORT=str(port), OAUTH_RESOURCES=f"{issuer}/mcp,{issuer}/other")
    client = register(server)
    from support.jwt import jwt_parts

    code, verifier, _ = get_code(server, client, resource=f"{issuer}/other")
    tokens = exchange(server, client, code, verifier).json()
    assert jwt_parts(tokens["access_token"])[1]["aud"] == f"{issuer}/other"
    # kept across refreshes
    refreshed = refresh(server, client, tokens["refresh_token"]).json()
    assert jwt_parts(refreshed["access_token"])[1]["aud"] == f"{issuer}/other"
    code, verifier, _ = get_code(server, client)
    assert jwt_parts(exchange(server, client, code, verifier).json()["access_token"])[1]["aud"] == f"{issuer}/mcp"


def test_a_returning_person_is_asked_for_a_wider_scope(make_server):
    """The remembered approval covers the scopes approved, not more."""
    server = make_server(OAUTH_SCOPES="mcp admin")
    client = register(server)
    browser = Browser(server)
    get_code(server, client, browser=browser, scope="mcp")
    _, challenge = pkce_pair()
    wider = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge, scope="mcp admin"))))
    assert "/consent" in wider.headers["Location"]
    page = browser.get(browser.absolute(wider.headers["Location"]))
    assert page.status_code == 200 and 'value="approve"' in page.text


def test_password_change_or_deletion_ends_login_sessions(server):
    client = register(server)
    browser = Browser(server)
    get_code(server, client, browser=browser)
    _, challenge = pkce_pair()
    url = server.url("/authorize?" + urlencode(auth_params(client, challenge)))
    assert "code=" in browser.get(url).headers["Location"]  # still logged in
    assert server.cli("set-password", "alice", "--password-stdin", input="a brand new one\n").returncode == 0
    assert "/login" in browser.get(url).headers["Location"]
