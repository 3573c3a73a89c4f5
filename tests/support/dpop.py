"""Helpers shared by tests/{e2e,http}/test_dpop.py."""

from __future__ import annotations

import requests

from .harness import Server


def at_gateway(server: Server, token: str, proof: str | None, scheme: str = "DPoP", path: str = "/mcp/echo"):
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return requests.post(server.url(path), data=b"{}", headers=headers, timeout=10)


def refused_with(response: requests.Response, error: str, body: bool = True) -> None:
    """A 401 with an RFC 9449 §7.1 `DPoP` challenge naming `error` (and our JSON body,
    unless a proxy answers with its own page, as nginx's auth_request does)."""
    assert response.status_code == 401, (response.status_code, response.text)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP "), challenge
    assert f'error="{error}"' in challenge, challenge
    assert 'algs="ES256 RS256 EdDSA Ed25519"' in challenge
    if body:
        assert response.json()["error"] == error
