"""The hot paths: the verified-token cache never outlives what makes a token valid,
and the WSGI layer in front of Flask answers exactly as the Flask views do."""

from __future__ import annotations

import time

from joserfc import jwt
from joserfc.jwk import RSAKey


def test_a_flood_of_garbage_tokens_never_enters_the_cache(app):
    """Only tokens whose signature and claims check are kept: junk, tampered tokens
    and well-formed JWTs signed by another key are refused and leave no trace."""
    verifier = app.extensions["oauth"].verifier
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    now = int(time.time())
    client = app.test_client()
    for i in range(1500):
        if i % 3 == 0:
            token = f"junk{i}.x.y"
        elif i % 3 == 1:
            token = f"{i}"
        else:
            claims = {"iss": app.extensions["oauth"].config.issuer, "sub": "alice", "exp": now + 600, "jti": str(i)}
            token = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "stranger"}, claims, stranger)
        response = client.get("/verify", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    assert len(verifier.verified) == 0


class CountingVerifier:
    """The app's own verifier, counting the tokens it is asked to verify."""

    def __init__(self, verifier):
        self.verifier = verifier
        self.calls = 0

    def verify(self, token, resource):
        self.calls += 1
        return self.verifier.verify(token, resource)


def test_a_refused_verify_is_judged_once(app):
    """One answer per request: a forged token at /verify is checked in front of Flask
    and answered by the view from that judgement, not verified a second time."""
    services = app.extensions["oauth"]
    counting = services.verifier = CountingVerifier(services.verifier)
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    refused = app.test_client().get("/verify", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401 and refused.json["error"] == "invalid_token"
    assert "Bearer error=" in refused.headers["WWW-Authenticate"]
    assert counting.calls == 1
