"""`private_key_jwt` (RFC 7523 §2.2) for metadata-document clients: a document that
offers it and publishes keys makes a client that signs at /token, through the whole
flow and refresh; ChatGPT's and Claude's document shapes are accepted. Documents and
key sets are served for real over https (tests/support/docserver.py); the client
signs its assertions with joserfc."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from support.cimd import document_params, walk
from support.oauth import exchange, pkce_pair, refresh, verify

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT = "https://app.example/cb"


@pytest.fixture
def cimd_server(make_server, documents):
    _, ca_file, _ = documents
    return make_server(OAUTH_CIMD_ALLOW_PRIVATE="1", SSL_CERT_FILE=ca_file)


def _publish(documents, document: dict, keys: list | None = None) -> str:
    """Serve `document` at /file/NAME (and `keys` as its jwks_uri): its client id."""
    base, _, log = documents
    folder = Path(log).parent / "docs"
    name = uuid.uuid4().hex
    if keys is not None:
        (folder / "raw").mkdir(parents=True, exist_ok=True)
        key_set = {"keys": [k.as_dict(private=False) for k in keys]}
        (folder / "raw" / f"{name}-jwks.json").write_text(json.dumps(key_set))
        document = {**document, "jwks_uri": f"{base}/raw/{name}-jwks.json"}
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(document))
    return f"{base}/file/{name}.json"


def _chatgpt_shaped(documents, key) -> str:
    """As ChatGPT publishes it: `none` and `private_key_jwt` offered, keys at a jwks_uri."""
    return _publish(
        documents,
        {
            "client_name": "ChatGPT-shaped",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        },
        [key],
    )


def assertion(key, client_id: str, aud: str, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    alg = "ES256" if isinstance(key, ECKey) else "RS256"
    return jwt.encode({"alg": alg, "kid": key.kid}, {k: v for k, v in claims.items() if v is not None}, key)


def signed(value: str) -> dict:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": value}


def _code(server, client_id: str) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    final, _ = walk(server, document_params(client_id, REDIRECT, challenge))
    return parse_qs(urlsplit(final.headers["Location"]).query)["code"][0], verifier


def _refused(response: requests.Response, why: str) -> None:
    assert response.status_code == 401, (why, response.status_code, response.text)
    assert response.json()["error"] == "invalid_client", why


def test_a_client_with_its_own_key_through_the_whole_flow_and_refresh(cimd_server, documents):
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    client_id = _chatgpt_shaped(documents, key)
    client = {"client_id": client_id, "redirect_uris": [REDIRECT]}
    token_url = cimd_server.url("/token")
    code, verifier = _code(cimd_server, client_id)

    # Each refusal is client authentication's: the code stays unused for the last try.
    _refused(exchange(cimd_server, client, code, verifier), "no assertion: the document offers a key")
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    wrong_key = assertion(other, client_id, token_url)
    _refused(exchange(cimd_server, client, code, verifier, **signed(wrong_key)), "wrong key")
    expired = assertion(key, client_id, token_url, iat=int(time.time()) - 600, exp=int(time.time()) - 300)
    _refused(exchange(cimd_server, client, code, verifier, **signed(expired)), "expired")
    ahead = assertion(key, client_id, token_url, exp=int(time.time()) + 3600)
    _refused(exchange(cimd_server, client, code, verifier, **signed(ahead)), "exp an hour ahead")
    elsewhere = assertion(key, client_id, "https://other.example/token")
    _refused(exchange(cimd_server, client, code, verifier, **signed(elsewhere)), "aud another server")
    no_jti = assertion(key, client_id, token_url, jti=None)
    _refused(exchange(cimd_server, client, code, verifier, **signed(no_jti)), "no jti")
    hs = jwt.encode(
        {"alg": "HS256"},
        {"iss": client_id, "sub": client_id, "aud": token_url, "exp": int(time.time()) + 60, "jti": "x"},
        OctKey.import_key(b"k" * 32),
    )
    _refused(exchange(cimd_server, client, code, verifier, **signed(hs)), "an algorithm not on the list")

    first = assertion(key, client_id, token_url)
    tokens = exchange(cimd_server, client, code, verifier, **signed(first))
    assert tokens.status_code == 200, tokens.text
    assert verify(cimd_server, tokens.json()["access_token"]).status_code == 200

    refresh_token = tokens.json()["refresh_token"]
    # A stolen refresh token is useless without the key, and an assertion is used once.
    _refused(refresh(cimd_server, client, refresh_token), "refresh without an assertion")
    _refused(refresh(cimd_server, client, refresh_token, **signed(first)), "the exchange's assertion replayed")
    renewed = refresh(cimd_server, client, refresh_token, **signed(assertion(key, client_id, cimd_server.issuer)))
    assert renewed.status_code == 200, renewed.text  # aud = the issuer is as good as the token endpoint
    assert verify(cimd_server, renewed.json()["access_token"]).status_code == 200


def test_chatgpt_and_claude_shaped_documents_are_accepted(cimd_server, documents):
    # Claude's: public, and a grant type we do not offer beside its own (ignored).
    claude = _publish(
        documents,
        {
            "client_name": "Claude-shaped",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    code, verifier = _code(cimd_server, claude)
    public = exchange(cimd_server, {"client_id": claude, "redirect_uris": [REDIRECT]}, code, verifier)
    assert public.status_code == 200, public.text
    # ChatGPT's, with an EC key given inline (`jwks`) instead of a jwks_uri.
    key = ECKey.generate_key("P-256", parameters={"kid": "e1"})
    chatgpt = _publish(
        documents,
        {
            "client_name": "ChatGPT-shaped",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "jwks": {"keys": [key.as_dict(private=False)]},
        },
    )
    code, verifier = _code(cimd_server, chatgpt)
    client = {"client_id": chatgpt, "redirect_uris": [REDIRECT]}
    tokens = exchange(cimd_server, client, code, verifier, **signed(assertion(key, chatgpt, cimd_server.url("/token"))))
    assert tokens.status_code == 200, tokens.text
