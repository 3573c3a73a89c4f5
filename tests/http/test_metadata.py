"""Discovery documents (RFC 8414, RFC 9728), JWKS, an issuer with a path, key rotation."""

from __future__ import annotations

import requests
from support.harness import free_port
from support.jwt import jwt_parts
from support.oauth import refresh, register, tokens_for, verify


def test_metadata_endpoints_derive_from_issuer(server):
    metadata = requests.get(server.base + "/.well-known/oauth-authorization-server", timeout=5).json()
    for key, path in (
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("registration_endpoint", "/register"),
        ("revocation_endpoint", "/revoke"),
        ("introspection_endpoint", "/introspect"),
        ("jwks_uri", "/jwks.json"),
    ):
        assert metadata[key] == server.issuer + path
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]


def test_protected_resource_metadata_matches_resource_byte_for_byte(server):
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        document = requests.get(server.base + path, timeout=5).json()
        assert document["resource"] == server.issuer + "/mcp"
        assert document["authorization_servers"] == [server.issuer]


def test_jwks_publishes_the_signing_key(server):
    _, tokens = tokens_for(server)
    keys = requests.get(server.url("/jwks.json"), timeout=5).json()["keys"]
    kid = jwt_parts(tokens["access_token"])[0]["kid"]
    assert kid in {k["kid"] for k in keys}
    assert all("d" not in k and "p" not in k for k in keys)  # public parts only


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


def test_unknown_paths_get_json_errors(server):
    response = requests.get(server.url("/nope"), timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    register(server)
