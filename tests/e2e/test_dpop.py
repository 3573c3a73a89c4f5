"""DPoP (RFC 9449), end to end: oauth4webapi (tests/dpop_client, pinned) as the client
through /token, refresh, the gateway and /verify behind the README's nginx example; and
a client written here with joserfc for what a good client never sends: proofs replayed,
for another URL, method or token, too old, with a private key, a bound token sent as
Bearer, a refresh with another key. Each is refused with the right answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from joserfc.jwk import ECKey, OKPKey
from support.dpop import at_gateway, refused_with
from support.harness import PASSWORD, Server, free_port, seed_users
from support.jwt import jwt_parts
from support.npm import npm_ci
from support.oauth import Browser, get_code, register
from support.proxies import tls_proxy
from support.tls import TEST_HOST

CLIENT_DIR = Path(__file__).parents[1] / "dpop_client"
needs_node = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="node/npm not installed")


# -- a client that speaks it: oauth4webapi ------------------------------------------------


@pytest.fixture(scope="module")
def dpop_client() -> Path:
    npm_ci(CLIENT_DIR, CLIENT_DIR / "node_modules" / "oauth4webapi")
    return CLIENT_DIR / "client.mjs"


def run_client(script: Path, server: Server, urls: list[str], alg: str, **env: str) -> dict:
    """Log in and consent as a person (the browser), then hand the callback to
    oauth4webapi, which does the rest with DPoP."""
    client = register(server)
    browser = Browser(server)
    code, verifier, params = get_code(server, client, browser)
    callback = client["redirect_uris"][0] + "?" + urlencode(params)
    del code
    arguments = {
        "issuer": server.issuer,
        "client_id": client["client_id"],
        "callback": callback,
        "state": params["state"],
        "verifier": verifier,
        "redirect_uri": client["redirect_uris"][0],
        "urls": urls,
        "alg": alg,
    }
    result = subprocess.run(
        ["node", str(script), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[:1500]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_client_outcome(outcome: dict) -> None:
    assert outcome["metadata_algs"] == ["ES256", "RS256", "EdDSA", "Ed25519"]
    jwk = {k: v for k, v in outcome["jwk"].items() if k in ("kty", "crv", "x", "y", "n", "e")}
    jkt = ECKey.import_key(jwk).thumbprint() if jwk["kty"] == "EC" else OKPKey.import_key(jwk).thumbprint()
    for step in ("exchanged", "refreshed"):
        assert outcome[step]["token_type"].lower() == "dpop"
        assert jwt_parts(outcome[step]["access_token"])[1]["cnf"] == {"jkt": jkt}
    for answers in (outcome["first"], outcome["second"]):
        for answer in answers:
            assert answer["status"] == 200, answer
            assert answer["body"]["headers"]["x-auth-subject"] == "alice"
            assert "authorization" not in answer["body"]["headers"]


@needs_node
def test_oauth4webapi_through_the_gateway(make_server, upstream, dpop_client):
    server = make_server(in_thread=True, OAUTH_UPSTREAM_URL=upstream)
    outcome = run_client(dpop_client, server, [server.url("/mcp/echo")], "EdDSA")
    check_client_outcome(outcome)
    # what it got is useless as a plain bearer token
    refused_with(at_gateway(server, outcome["refreshed"]["access_token"], None, scheme="Bearer"), "invalid_token")


@needs_node
def test_oauth4webapi_through_verify_behind_nginx(tmp_path, upstream, test_ca, dpop_client):
    """The README's nginx ForwardAuth example as written: nginx asks /verify with the
    original request's URL, and the proof is checked against that public URL."""
    listen, oauth_port = free_port(), free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer)
    seed_users(server.data_dir, {"alice": PASSWORD})
    server.start()
    try:
        upstream_port = int(urlsplit(upstream).port or 0)
        with tls_proxy("nginx", "nginx.conf", tmp_path, listen, {3000: upstream_port, 8000: oauth_port}, test_ca):
            server.base = issuer
            env = {"NODE_EXTRA_CA_CERTS": str(test_ca.ca_file), "MCP_OAUTH_TEST_HOST": TEST_HOST}
            outcome = run_client(dpop_client, server, [issuer + "/mcp/echo"], "ES256", **env)
            check_client_outcome(outcome)
            token = outcome["refreshed"]["access_token"]
            as_bearer = requests.post(
                issuer + "/mcp/echo", data=b"{}", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            refused_with(as_bearer, "invalid_token", body=False)
    finally:
        server.stop()
