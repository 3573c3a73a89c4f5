"""The hot paths: the verified-token cache never outlives what makes a token valid,
and the WSGI layer in front of Flask answers exactly as the Flask views do."""

from __future__ import annotations

import json
import time

import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from support.jwt import jwt_parts
from support.oauth import refresh, tokens_for, verify

from app.cache import TTLCache
from app.hotpath import MAX_FORM

VOLATILE = {"date", "server", "x-request-id"}


def comparable(response: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE}


def test_a_cached_token_is_refused_at_once_when_revoked_or_deleted(server):
    """Each token passes twice (the second time from the cache), then its grant or
    client goes, by /revoke or by the CLI process: the next check refuses it."""
    client, tokens = tokens_for(server)
    assert [verify(server, tokens["access_token"]).status_code for _ in range(2)] == [200, 200]
    revoked = requests.post(
        server.url("/revoke"), data={"token": tokens["refresh_token"], "client_id": client["client_id"]}
    )
    assert revoked.status_code == 200
    assert verify(server, tokens["access_token"]).status_code == 401

    client, tokens = tokens_for(server)
    assert [verify(server, tokens["access_token"]).status_code for _ in range(2)] == [200, 200]
    assert server.cli("delete-client", "--yes", client["client_id"]).returncode == 0
    refused = verify(server, tokens["access_token"])
    assert refused.status_code == 401 and "no longer registered" in refused.json()["error_description"]

    client, tokens = tokens_for(server)
    assert [verify(server, tokens["access_token"]).status_code for _ in range(2)] == [200, 200]
    assert server.cli("delete-all-tokens", "--yes").returncode == 0
    assert verify(server, tokens["access_token"]).status_code == 401


def test_a_cached_token_is_refused_at_its_exp(make_server):
    server = make_server(OAUTH_ACCESS_TOKEN_TTL="2")
    _, tokens = tokens_for(server)
    assert verify(server, tokens["access_token"]).status_code == 200  # now cached
    exp = jwt_parts(tokens["access_token"])[1]["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.2)
    expired = verify(server, tokens["access_token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error_description"]


def test_key_rotation_keeps_cached_and_uncached_old_tokens_valid(server):
    client, cached = tokens_for(server)
    _, uncached = tokens_for(server)
    before = requests.get(server.url("/jwks.json"), timeout=5).json()
    assert len(before["keys"]) == 1
    assert verify(server, cached["access_token"]).status_code == 200
    assert server.cli("rotate-keys").returncode == 0
    after = requests.get(server.url("/jwks.json"), timeout=5).json()
    assert len(after["keys"]) == 2  # the hot path rebuilt the JWKS when the keys changed
    assert verify(server, cached["access_token"]).status_code == 200
    assert verify(server, uncached["access_token"]).status_code == 200
    new = refresh(server, client, cached["refresh_token"]).json()
    assert verify(server, new["access_token"]).status_code == 200


def test_the_hot_path_answers_as_flask_does(server):
    """GET of the documents and a passing /verify are answered in front of Flask;
    HEAD (and POST for /verify) still go through Flask. Same status, same headers."""
    _, tokens = tokens_for(server)
    for path in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/jwks.json",
    ):
        hot = requests.get(server.base + path, timeout=5)
        flask = requests.head(server.base + path, timeout=5)
        assert hot.status_code == flask.status_code == 200, path
        assert comparable(hot) == comparable(flask), path
        assert hot.json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    hot = requests.get(server.url("/verify"), headers=bearer, timeout=5)
    flask = requests.post(server.url("/verify"), headers=bearer, timeout=5)
    assert hot.status_code == flask.status_code == 200
    assert comparable(hot) == comparable(flask)
    assert hot.headers["X-Auth-Subject"] == "alice" and hot.headers["Cache-Control"] == "no-store"
    # Whatever does not pass is Flask's to answer, in full.
    refused = requests.get(server.url("/verify"), headers={"Authorization": "Bearer x.y.z"}, timeout=5)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    assert requests.get(server.url("/verify?scope=%22"), headers=bearer, timeout=5).status_code == 400


def test_introspection_on_the_hot_path_answers_as_flask_does(server):
    """A 200 from /introspect comes from the hot path; a form too long for it goes
    to Flask, which runs the same Authlib endpoint: same answer, same headers. A
    failure (wrong secret) is Flask's to answer, in OAuth's terms."""
    _, tokens = tokens_for(server)
    made = server.cli("add-resource-server", "rs", "--json")
    assert made.returncode == 0, made.stderr
    rs = json.loads(made.stdout)
    auth = (rs["client_id"], rs["client_secret"])
    for token in (tokens["access_token"], tokens["refresh_token"], "junk"):
        hot = requests.post(server.url("/introspect"), data={"token": token}, auth=auth, timeout=5)
        padded = {"token": token, "padding": "x" * (MAX_FORM + 1)}
        flask = requests.post(server.url("/introspect"), data=padded, auth=auth, timeout=5)
        assert hot.status_code == flask.status_code == 200
        assert hot.json() == flask.json()
        assert hot.json()["active"] is (token != "junk")
        drop = {"content-length"}
        assert {k: v for k, v in comparable(hot).items() if k not in drop} == {
            k: v for k, v in comparable(flask).items() if k not in drop
        }
    wrong = requests.post(server.url("/introspect"), data={"token": "x"}, auth=(rs["client_id"], "nope"), timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in wrong.headers


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


def test_ttl_cache_is_bounded_keeps_what_is_used_and_expires():
    cache: TTLCache[str, int] = TTLCache(max_items=3)
    now = time.time()
    for i in range(3):
        cache.put(f"k{i}", i, now + 60)
    assert cache.get("k0") == 0  # k0 used: k1 is now the least recently used
    cache.put("k3", 3, now + 60)
    assert len(cache) == 3 and cache.get("k1") is None and cache.get("k0") == 0
    cache.put("short", 9, now + 0.05)
    assert cache.get("short") == 9
    assert cache.get("short", now=now + 0.06) is None
    for i in range(10_000):
        cache.put(f"flood{i}", i, now + 60)
    assert len(cache) == 3


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
