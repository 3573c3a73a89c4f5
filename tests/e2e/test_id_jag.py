"""Enterprise-managed authorization (the MCP extension, ID-JAG over RFC 7523's
jwt-bearer grant): a stand-in enterprise IdP (our own signer; its discovery document and
JWKS served for real over https by tests/support/docserver.py) issues ID-JAGs that
/token accepts once, on one instance or two sharing a PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OKPKey, RSAKey
from support.harness import free_port
from support.jwt import jwt_parts
from support.oauth import register, verify

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class IdP:
    """An enterprise identity provider: an issuer URL with discovery and a JWKS."""

    def __init__(self, documents, name: str, key):
        base, _, log = documents
        self.issuer = f"{base}/raw/{name}"
        self.key = key
        folder = Path(log).parent / "docs" / "raw" / name
        (folder / ".well-known").mkdir(parents=True, exist_ok=True)
        discovery = {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json"}
        (folder / ".well-known" / "openid-configuration").write_text(json.dumps(discovery))
        (folder / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))

    def id_jag(self, server_issuer: str, client_id: str, resource: str, typ="oauth-id-jag+jwt", key=None, **over):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "u-1001",
            "aud": server_issuer,
            "client_id": client_id,
            "resource": resource,
            "scope": "read write admin",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "email": "alice@corp.example",
        }
        claims.update(over)
        key = key or self.key
        alg = "EdDSA" if isinstance(key, OKPKey) else "RS256"
        header = {"typ": typ, "alg": alg, "kid": key.kid}
        return jwt.encode(header, {k: v for k, v in claims.items() if v is not None}, key, algorithms=[alg])


@pytest.fixture(scope="module")
def idps(documents):
    trusted = IdP(documents, "corp", RSAKey.generate_key(2048, parameters={"kid": "corp-1"}))
    untrusted = IdP(documents, "evil", OKPKey.generate_key("Ed25519", parameters={"kid": "evil-1"}))
    return trusted, untrusted


def _env(documents, trusted: IdP, **extra) -> dict:
    _, ca_file, _ = documents
    return {
        "OAUTH_CIMD_ALLOW_PRIVATE": "1",
        "SSL_CERT_FILE": ca_file,
        "OAUTH_TRUSTED_IDPS": trusted.issuer,
        "OAUTH_SCOPES": "mcp read write",
        **extra,
    }


def grant(server, client_id: str, assertion: str, **extra) -> requests.Response:
    data = {"grant_type": JWT_BEARER, "assertion": assertion, "client_id": client_id, **extra}
    return requests.post(server.url("/token"), data=data, timeout=10)


def test_an_id_jag_is_accepted_once_with_scopes_intersected_and_no_refresh_token(make_server, documents, idps):
    trusted, untrusted = idps
    server = make_server(**_env(documents, trusted))
    metadata = requests.get(server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == ["urn:ietf:params:oauth:grant-profile:id-jag"]
    client_id = register(server)["client_id"]
    resource = server.url("/mcp")

    def refused(assertion: str, why: str, error: str = "invalid_grant", **extra) -> None:
        response = grant(server, client_id, assertion, **extra)
        assert response.status_code == 400, (why, response.text)
        assert response.json()["error"] == error, (why, response.text)

    refused(untrusted.id_jag(server.issuer, client_id, resource), "an issuer not in OAUTH_TRUSTED_IDPS")
    refused(trusted.id_jag(server.issuer, client_id, resource, iss=untrusted.issuer), "signed by another IdP")
    refused(trusted.id_jag(server.issuer, client_id, resource, key=untrusted.key), "not the trusted IdP's key")
    refused(trusted.id_jag("https://other.example", client_id, resource), "aud another server")
    refused(trusted.id_jag(server.issuer, "another-client", resource), "client_id not the authenticated client")
    refused(trusted.id_jag(server.issuer, client_id, resource, exp=int(time.time()) - 120), "expired")
    refused(trusted.id_jag(server.issuer, client_id, resource, iat=None), "no iat")
    refused(trusted.id_jag(server.issuer, client_id, resource, typ="JWT"), "a plain JWT, not an ID-JAG")
    refused(
        trusted.id_jag(server.issuer, client_id, "https://elsewhere.example/mcp"), "not our resource", "invalid_target"
    )
    refused(trusted.id_jag(server.issuer, client_id, resource, scope="admin"), "no scope in common", "invalid_scope")

    assertion = trusted.id_jag(server.issuer, client_id, resource)
    response = grant(server, client_id, assertion, scope="mcp read write")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    assert body["scope"] == "read write"  # asked ∩ asserted ∩ offered
    _, claims = jwt_parts(body["access_token"])
    assert claims["sub"] == f"{trusted.issuer}#u-1001" and claims["client_id"] == client_id
    assert verify(server, body["access_token"]).status_code == 200
    replay = grant(server, client_id, assertion, scope="mcp read write")
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    assert "already used" in replay.json()["error_description"]
    assert "id_jag.accepted" in server.output and "credential=id_jag" in server.output


def test_an_id_jag_from_before_a_restart_is_refused_on_the_file_store(make_server, documents, idps):
    """The file store's replay set lives in the process: an assertion issued before
    the process started may have been used before the restart."""
    trusted, _ = idps
    server = make_server(**_env(documents, trusted))
    client_id = register(server)["client_id"]
    assertion = trusted.id_jag(server.issuer, client_id, server.url("/mcp"))
    assert grant(server, client_id, assertion).status_code == 200
    time.sleep(1.1)  # iat has a resolution of one second
    server.restart()
    replay = grant(server, client_id, assertion)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    assert "before this server started" in replay.json()["error_description"]


def test_an_id_jag_replayed_through_another_instance_on_postgresql_is_refused(
    make_server, documents, idps, postgres_url
):
    trusted, _ = idps
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    first = make_server(**_env(documents, trusted, PORT=str(port), OAUTH_STORE=postgres_url))
    second = make_server(users={}, **_env(documents, trusted, OAUTH_ISSUER=issuer, OAUTH_STORE=postgres_url))
    client_id = register(first)["client_id"]
    assertion = trusted.id_jag(issuer, client_id, f"{issuer}/mcp")
    accepted = grant(first, client_id, assertion)
    assert accepted.status_code == 200, accepted.text
    assert verify(second, accepted.json()["access_token"]).status_code == 200
    replay = grant(second, client_id, assertion)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    assert "already used" in replay.json()["error_description"]
    # and after a restart, by the database's replay set (not by the file store's rule)
    first.restart()
    again = grant(first, client_id, assertion)
    assert again.status_code == 400 and "already used" in again.json()["error_description"], again.text
