"""The hot paths: the verified-token cache never outlives what makes a token valid,
and the WSGI layer in front of Flask answers exactly as the Flask views do."""

from __future__ import annotations

import json
import time

import requests
from support.hot_paths import comparable
from support.jwt import jwt_parts
from support.oauth import refresh, tokens_for, verify

from app.hotpath import MAX_FORM


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
    # The first start's signing key is folded into its JSON file a moment after start,
    # which starts the keys' view (and the verified-token cache) anew: let that pass
    # first, so that the token below is answered from the cache when it expires.
    journal = server.data_dir / "signing_keys.json.journal"
    deadline = time.monotonic() + 10
    while len(journal.read_bytes().splitlines()) > 1:
        assert time.monotonic() < deadline, "the signing key never reached its JSON file"
        time.sleep(0.1)
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
