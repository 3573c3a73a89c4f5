"""Discovery documents (RFC 8414, RFC 9728), JWKS, an issuer with a path, key rotation."""

from __future__ import annotations

import requests
from support.harness import free_port
from support.jwt import jwt_parts
from support.oauth import refresh, tokens_for, verify


def test_issuer_with_path(make_server):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}/auth"
    server = make_server(PORT=str(port), OAUTH_ISSUER=issuer)
    root = f"http://127.0.0.1:{port}"
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/auth"):
        metadata = requests.get(root + path, timeout=5).json()
        assert metadata["issuer"] == issuer
        assert metadata["token_endpoint"] == issuer + "/token"
    resource = requests.get(root + "/.well-known/oauth-protected-resource/auth/mcp", timeout=5).json()
    assert resource["resource"] == issuer + "/mcp"
    client, tokens = tokens_for(server)
    assert verify(server, tokens["access_token"]).status_code == 200
    assert jwt_parts(tokens["access_token"])[1]["iss"] == issuer


def test_rotate_keys_keeps_old_tokens_valid(server):
    client, tokens = tokens_for(server)
    result = server.cli("rotate-keys")
    assert result.returncode == 0, result.stderr
    assert verify(server, tokens["access_token"]).status_code == 200
    new = refresh(server, client, tokens["refresh_token"]).json()
    assert jwt_parts(new["access_token"])[0]["kid"] != jwt_parts(tokens["access_token"])[0]["kid"]
    kids = {k["kid"] for k in requests.get(server.url("/jwks.json"), timeout=5).json()["keys"]}
    assert len(kids) == 2
