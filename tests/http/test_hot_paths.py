"""The hot paths: the verified-token cache never outlives what makes a token valid,
and the WSGI layer in front of Flask answers exactly as the Flask views do."""

from __future__ import annotations

import requests
from support.hot_paths import comparable
from support.oauth import tokens_for


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
