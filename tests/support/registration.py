"""Helpers shared by tests/{e2e,http}/test_registration.py."""

from __future__ import annotations

import requests

from .harness import CLAUDE_CALLBACK
from .oauth import Browser, exchange, get_code, register


def post_register(server, body, **kw):
    return requests.post(server.url("/register"), json=body, timeout=10, **kw)


# -- the limits of an open registration, per network (an IPv6 client by its /64) ---------
# The tests speak for clients through a trusted proxy (loopback): X-Forwarded-For.

BODY = {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}


def register_from(server, address: str) -> requests.Response:
    return post_register(server, BODY, headers={"X-Forwarded-For": address})


def use(server, client: dict, browser: Browser) -> None:
    """Complete an authorization with the client (a code redeemed)."""
    code, verifier, _ = get_code(server, client, browser=browser)
    assert exchange(server, client, code, verifier).status_code == 200


def invalid_client_at_token(server, client_id: str) -> bool:
    answer = requests.post(
        server.url("/token"),
        data={"grant_type": "authorization_code", "code": "x", "code_verifier": "y" * 43, "client_id": client_id},
        timeout=10,
    )
    return answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def check_the_per_address_cap(server) -> None:
    """OAUTH_MAX_CLIENTS_PER_ADDRESS=3: a /64 holds three clients that never completed
    an authorization; a fourth is 429; another /64 still registers; once one of the
    three completes an authorization, it no longer counts."""
    first = [register_from(server, f"2001:db8:5:6::{n}") for n in (1, 2, 3)]
    assert [answer.status_code for answer in first] == [201] * 3
    refused = register_from(server, "2001:db8:5:6::4")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"] == "temporarily_unavailable" and refused.json()["error_description"]
    assert register_from(server, "2001:db8:5:7::1").status_code == 201
    assert register_from(server, "198.51.100.1").status_code == 201
    use(server, first[0].json(), Browser(server))
    assert register_from(server, "2001:db8:5:6::5").status_code == 201
    assert register_from(server, "2001:db8:5:6::6").status_code == 429


def check_eviction_at_the_cap(server) -> None:
    """OAUTH_MAX_CLIENTS=3: at the cap a registration evicts the client registered
    first among those never used (its id is then unknown at /token), never a used
    one; with every client used, it is 429."""
    browser = Browser(server)
    used = register(server)
    use(server, used, browser)
    oldest_unused, newer_unused = register(server), register(server)
    evicting = post_register(server, BODY)
    assert evicting.status_code == 201
    assert invalid_client_at_token(server, oldest_unused["client_id"])
    assert not invalid_client_at_token(server, used["client_id"])
    assert not invalid_client_at_token(server, newer_unused["client_id"])
    for client in (newer_unused, evicting.json()):
        use(server, client, browser)
    refused = post_register(server, BODY)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"] == "temporarily_unavailable"
    for client in (used, newer_unused, evicting.json()):
        assert not invalid_client_at_token(server, client["client_id"])
