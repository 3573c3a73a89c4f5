"""Discovery documents (RFC 8414, RFC 9728), JWKS, an issuer with a path, key rotation."""

from __future__ import annotations

import requests
from support.jwt import jwt_parts
from support.oauth import register, tokens_for


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


def test_unknown_paths_get_json_errors(server):
    response = requests.get(server.url("/nope"), timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    register(server)
