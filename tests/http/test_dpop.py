"""DPoP (RFC 9449), end to end: oauth4webapi (tests/dpop_client, pinned) as the client
through /token, refresh, the gateway and /verify behind the README's nginx example; and
a client written here with joserfc for what a good client never sends: proofs replayed,
for another URL, method or token, too old, with a private key, a bound token sent as
Bearer, a refresh with another key. Each is refused with the right answer."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey
from support.dpop import at_gateway, refused_with
from support.harness import Server
from support.jwt import jwt_parts
from support.oauth import get_code, register, tokens_for


class DPoPKey:
    """A client's DPoP key pair and the proofs it makes (RFC 9449 §4.2)."""

    def __init__(self, alg: str = "ES256"):
        self.alg = alg
        if alg == "ES256":
            self.key = ECKey.generate_key("P-256")
        elif alg == "RS256":
            self.key = RSAKey.generate_key(2048)
        else:
            self.key = OKPKey.generate_key("Ed25519")
        self.jkt = self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        token: str | None = None,
        *,
        iat: float | None = None,
        header: dict | None = None,
        **claims: object,
    ) -> str:
        payload: dict[str, object] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if iat is None else iat),
        }
        if token is not None:
            payload["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        payload.update(claims)
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False), **(header or {})}
        return jws.serialize_compact(protected, json.dumps(payload).encode(), self.key, algorithms=[self.alg])


def dpop_tokens(server: Server, key: DPoPKey, client: dict | None = None) -> tuple[dict, dict]:
    """A public client's tokens, got with a DPoP proof of `key` at /token."""
    client = client or register(server)
    code, verifier, _ = get_code(server, client)
    headers = {"DPoP": key.proof("POST", server.url("/token"))}
    response = _exchange(server, client, code, verifier, headers)
    assert response.status_code == 200, response.text
    return client, response.json()


def _exchange(server: Server, client: dict, code: str, verifier: str, headers: dict) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": client["redirect_uris"][0],
        "client_id": client["client_id"],
    }
    return requests.post(server.url("/token"), data=data, headers=headers, timeout=10)


def _refresh(server: Server, client: dict, refresh_token: str, headers: dict) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}
    return requests.post(server.url("/token"), data=data, headers=headers, timeout=10)


@pytest.fixture
def gateway(make_server, upstream) -> Server:
    return make_server(in_thread=True, OAUTH_UPSTREAM_URL=upstream)


# -- /token -------------------------------------------------------------------------------


def test_metadata_names_the_proof_algorithms(server):
    metadata = requests.get(server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "EdDSA", "Ed25519"]
    resource = requests.get(server.url("/.well-known/oauth-protected-resource"), timeout=10).json()
    assert resource["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "EdDSA", "Ed25519"]


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_token_request_with_a_proof_gets_a_token_bound_to_its_key(server, alg):
    key = DPoPKey(alg)
    _, tokens = dpop_tokens(server, key)
    assert tokens["token_type"] == "DPoP"
    _, claims = jwt_parts(tokens["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}


def test_a_token_request_with_a_bad_proof_is_invalid_dpop_proof_and_the_code_still_works(server):
    key = DPoPKey()
    client = register(server)
    code, verifier, _ = get_code(server, client)
    bad = [
        key.proof("POST", server.url("/register")),  # another URL
        key.proof("GET", server.url("/token")),  # another method
        key.proof("POST", server.url("/token"), iat=time.time() - 301),  # too old
        key.proof("POST", server.url("/token"), header={"typ": "JWT"}),
        key.proof("POST", server.url("/token"), header={"jwk": key.key.as_dict(private=True)}),
        "not.a.proof",
    ]
    for proof in bad:
        response = _exchange(server, client, code, verifier, {"DPoP": proof})
        assert response.status_code == 400, (proof, response.text)
        assert response.json()["error"] == "invalid_dpop_proof", response.text
    proof = key.proof("POST", server.url("/token"))
    response = _exchange(server, client, code, verifier, {"DPoP": proof})
    assert response.status_code == 200 and response.json()["token_type"] == "DPoP"
    # the same proof again (at the refresh: a new request) is a replay
    replayed = _refresh(server, client, response.json()["refresh_token"], {"DPoP": proof})
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_dpop_proof", replayed.text
    assert "already used" in replayed.json()["error_description"]


def test_an_unbound_token_keeps_working_as_bearer_and_is_not_dpop(gateway):
    _, tokens = tokens_for(gateway)
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in jwt_parts(tokens["access_token"])[1]
    assert at_gateway(gateway, tokens["access_token"], None, scheme="Bearer").status_code == 200
    key = DPoPKey()
    token = tokens["access_token"]
    refused_with(at_gateway(gateway, token, key.proof("POST", gateway.url("/mcp/echo"), token)), "invalid_token")


def test_a_public_clients_refresh_token_is_bound_to_the_key(server):
    key, other = DPoPKey(), DPoPKey()
    client, tokens = dpop_tokens(server, key)
    refresh_token = tokens["refresh_token"]
    for headers in ({}, {"DPoP": other.proof("POST", server.url("/token"))}):
        response = _refresh(server, client, refresh_token, headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
    response = _refresh(server, client, refresh_token, {"DPoP": key.proof("POST", server.url("/token"))})
    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert refreshed["token_type"] == "DPoP"
    assert jwt_parts(refreshed["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    # the rotated token is bound to the same key
    response = _refresh(server, client, refreshed["refresh_token"], {"DPoP": other.proof("POST", server.url("/token"))})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_a_public_clients_grant_got_without_a_proof_is_bound_at_its_first_refresh_with_one(server):
    client, tokens = tokens_for(server)
    key, other = DPoPKey(), DPoPKey()
    response = _refresh(server, client, tokens["refresh_token"], {"DPoP": key.proof("POST", server.url("/token"))})
    assert response.status_code == 200 and response.json()["token_type"] == "DPoP"
    later = _refresh(server, client, response.json()["refresh_token"], {})
    assert later.status_code == 400 and later.json()["error"] == "invalid_grant"
    del other


def test_cors_allows_the_dpop_header_at_token_and_the_gateway(gateway):
    for path in ("/token", "/mcp"):
        response = requests.options(
            gateway.url(path),
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, dpop",
            },
            timeout=10,
        )
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert "dpop" in allowed, (path, allowed)
        assert "WWW-Authenticate" in response.headers.get("Access-Control-Expose-Headers", "")


# -- the gateway and /verify --------------------------------------------------------------


def test_the_gateway_takes_a_bound_token_only_with_a_fresh_proof_for_this_request(gateway):
    key = DPoPKey()
    _, tokens = dpop_tokens(gateway, key)
    token = tokens["access_token"]
    url = gateway.url("/mcp/echo")

    good = key.proof("POST", url, token)
    passed = at_gateway(gateway, token, good)
    assert passed.status_code == 200, passed.text
    echoed = passed.json()["headers"]
    assert echoed["x-auth-subject"] == "alice"
    assert "authorization" not in echoed and "dpop" not in echoed

    # a proof with a query in its htu, or the URL spelled differently, is for this URL (§4.3)
    assert at_gateway(gateway, token, key.proof("POST", url.upper().replace("/MCP/ECHO", "/mcp/echo"), token)).ok
    assert at_gateway(gateway, token, key.proof("POST", url + "?x=1", token), path="/mcp/echo?x=2").ok

    refusals = {
        "replayed": good,
        "another URL": key.proof("POST", gateway.url("/mcp/other"), token),
        "another method": key.proof("GET", url, token),
        "another token": key.proof("POST", url, token + "x"),
        "no ath": key.proof("POST", url),
        "too old": key.proof("POST", url, token, iat=time.time() - 301),
        "from the future": key.proof("POST", url, token, iat=time.time() + 400),
        "another key": DPoPKey().proof("POST", url, token),
        "private key in the header": key.proof("POST", url, token, header={"jwk": key.key.as_dict(private=True)}),
        "typ": key.proof("POST", url, token, header={"typ": "JWT"}),
        "two proofs": key.proof("POST", url, token) + ", " + key.proof("POST", url, token),
        "none": key.proof("POST", url, token).rsplit(".", 1)[0] + ".",
    }
    for why, proof in refusals.items():
        response = at_gateway(gateway, token, proof)
        assert response.status_code == 401, why
        refused_with(response, "invalid_dpop_proof")
    refused_with(at_gateway(gateway, token, None), "invalid_dpop_proof")
    # a bound token sent as Bearer, even with a good proof beside it
    refused_with(at_gateway(gateway, token, key.proof("POST", url, token), scheme="Bearer"), "invalid_token")


def test_a_bound_token_verified_before_is_still_refused_as_bearer(gateway):
    """The verified-token cache keeps claims, not the outcome of a proof: the binding
    is checked on every request, the fast front's and the view's (HEAD goes to Flask)."""
    key = DPoPKey()
    _, tokens = dpop_tokens(gateway, key)
    token = tokens["access_token"]
    for _ in range(2):
        assert at_gateway(gateway, token, key.proof("POST", gateway.url("/mcp/echo"), token)).status_code == 200
        refused_with(at_gateway(gateway, token, None, scheme="Bearer"), "invalid_token")
    forwarded = {"X-Forwarded-Host": "mcp.example", "X-Forwarded-Proto": "https", "X-Forwarded-Uri": "/mcp"}
    for method in ("GET", "HEAD"):
        response = requests.request(
            method, gateway.url("/verify"), headers={"Authorization": f"Bearer {token}", **forwarded}, timeout=10
        )
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("DPoP ")


def test_verify_checks_the_proof_against_the_forwarded_url_and_method(gateway):
    key = DPoPKey()
    _, tokens = dpop_tokens(gateway, key)
    token = tokens["access_token"]
    public = "https://mcp.example/mcp"
    forwarded = {
        "X-Forwarded-Host": "mcp.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Uri": "/mcp?session=1",
        "X-Forwarded-Method": "POST",
    }

    def verify(proof: str | None, **extra: str) -> requests.Response:
        headers = {"Authorization": f"DPoP {token}", **forwarded, **extra}
        if proof is not None:
            headers["DPoP"] = proof
        return requests.get(gateway.url("/verify"), headers=headers, timeout=10)

    passed = verify(key.proof("POST", public, token))
    assert passed.status_code == 200, passed.text
    assert passed.headers["X-Auth-Subject"] == "alice"
    refused_with(verify(key.proof("POST", gateway.url("/verify"), token)), "invalid_dpop_proof")
    refused_with(verify(key.proof("GET", public, token)), "invalid_dpop_proof")
    refused_with(verify(key.proof("POST", "https://other.example/mcp", token)), "invalid_dpop_proof")
    # without a trusted proxy's forwarded URL, no proof can be checked
    refused_with(
        requests.get(
            gateway.url("/verify"),
            headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", gateway.url("/verify"), token)},
            timeout=10,
        ),
        "invalid_dpop_proof",
    )
