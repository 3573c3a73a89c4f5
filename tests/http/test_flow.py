"""The whole flow over HTTP: discover, register, log in, consent, tokens, refresh,
and carrying on after a restart without registering again."""

from __future__ import annotations

import requests
from support.harness import CHATGPT_CALLBACK
from support.jwt import jwt_parts
from support.oauth import Browser, exchange, get_code, refresh, register, tokens_for, verify


def test_discover_register_authorize_token_refresh(server):
    metadata = requests.get(server.base + "/.well-known/oauth-authorization-server", timeout=5).json()
    assert metadata["issuer"] == server.issuer
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert metadata["authorization_response_iss_parameter_supported"] is True

    client = register(server, client_name="Claude")
    assert "client_secret" not in client
    code, verifier, params = get_code(server, client)
    assert params["iss"] == server.issuer

    response = exchange(server, client, code, verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "mcp"
    assert len(tokens["refresh_token"]) >= 43  # 256 bits, base64url

    header, claims = jwt_parts(tokens["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]
    assert {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"} <= set(claims)
    assert claims["sub"] == "alice"
    assert claims["aud"] == server.issuer + "/mcp"
    assert claims["client_id"] == client["client_id"]

    ok = verify(server, tokens["access_token"])
    assert ok.status_code == 200
    assert ok.headers["X-Auth-Subject"] == "alice"
    assert ok.headers["X-Auth-Client-Id"] == client["client_id"]
    assert ok.headers["X-Auth-Scope"] == "mcp"

    refreshed = refresh(server, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert jwt_parts(new["access_token"])[1]["aud"] == server.issuer + "/mcp"


def test_restart_keeps_clients_and_refresh_tokens(server):
    client, tokens = tokens_for(server, register(server, redirect_uris=[CHATGPT_CALLBACK]))
    server.restart()
    # The access token issued before the restart is still good (signed JWT, grant kept).
    assert verify(server, tokens["access_token"]).status_code == 200
    refreshed = refresh(server, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert verify(server, refreshed.json()["access_token"]).status_code == 200
    # And the registration itself survived: a new authorization works.
    code, verifier, _ = get_code(server, client)
    assert exchange(server, client, code, verifier).status_code == 200


def test_consent_is_remembered_and_login_session_kept(server):
    client = register(server)
    browser = Browser(server)
    get_code(server, client, browser=browser)
    code, verifier, _ = get_code(server, client, browser=browser)  # no forms the second time
    assert exchange(server, client, code, verifier).status_code == 200
